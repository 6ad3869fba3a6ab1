"""Harness: child processes. A benchmark case in a fresh process, so that its peak RSS is its own (a
case is a JSON spec; the child prints one JSON line of figures, which the parent collects); a
claim's arms; a worker's RESULT line; and a child in a process group of its own, every wait bounded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from recsys.seeding import seed_everything

REPO = Path(__file__).resolve().parents[1]


def run_case(module: str, spec: dict, timeout: float = 3600) -> dict:
    """`python -m <module> --case '<json>'` in a child; returns its figures (or the error)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, "--case", json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": (proc.stderr or proc.stdout)[-2000:], "wall_seconds": time.perf_counter() - t0}
    return {**spec, **json.loads(lines[-1]), "wall_seconds": round(time.perf_counter() - t0, 1)}


def settle(rows: list[dict], verdict: Callable[[list[dict]], tuple[bool, str]]) -> tuple[bool, str]:
    """A claim's verdict: never held when an arm failed (its row has an "error"); otherwise the
    claim's own rule, which may then assume every arm's figures are there."""
    bad = [r["arm"] for r in rows if "error" in r]
    return (False, f"arm(s) {', '.join(bad)} failed") if bad else verdict(rows)


def run_arms(module: str, specs: list[dict], verdict: Callable[[list[dict]], tuple[bool, str]]) -> list[dict]:
    """A claim's arms, each in its own process (see bench/claims.py): prints every row, the verdict and
    the wall time; returns the rows (spec + figures, or spec + error)."""
    t0, rows = time.perf_counter(), []
    for spec in specs:
        row = run_case(module, spec)
        shown = {k: v for k, v in row.items() if k != "error"}
        if "error" in row:
            shown["error"] = row["error"][-400:]
        print(shown, flush=True)
        rows.append(row)
    held, text = settle(rows, verdict)
    print(f"verdict: {'held' if held else 'did not hold'}: {text}")
    print(f"wall seconds: {time.perf_counter() - t0:.1f}")
    return rows


def child_main(case: Callable[[dict], dict]) -> None:
    """In the child: run the case named by --case and print its figures as one JSON line."""
    spec = json.loads(sys.argv[sys.argv.index("--case") + 1])
    torch.set_num_threads(int(spec.get("threads", 2)))
    seed_everything(0)
    print(json.dumps(case(spec)))


def entry(case: Callable[[dict], dict], main: Callable[[], object]) -> None:
    """A bench module run as a script: its case in a child (`--case SPEC`, see run_case), else its main."""
    child_main(case) if "--case" in sys.argv else main()


def markdown_table(rows: list[dict], columns: list[str]) -> list[tuple[str, str]]:
    """(label, value) rows for bench.common.write_results: one row per case, values joined."""
    out = []
    for r in rows:
        label = " / ".join(str(r.get(c)) for c in columns[:2])
        if "error" in r:
            out.append((label, "failed: " + r["error"].strip().splitlines()[-1][:120]))
        else:
            out.append((label, ", ".join(f"{c} {_fmt(r.get(c))}" for c in columns[2:])))
    return out


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and abs(v) < 10 else (f"{v:.1f}" if isinstance(v, float) else str(v))


def worker_result(module: str, args: list[str], threads: int, **run) -> dict | None:
    """`python -m <module> --worker ARGS --threads N` in a child (OMP_NUM_THREADS=N): the JSON of the
    line it prints after "RESULT ", or None if it failed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", module, "--worker", *args, "--threads", str(threads)], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, text=True, **run)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    return None if proc.returncode != 0 or line is None else json.loads(line[len("RESULT "):])


def run_bounded(argv: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int | None, float]:
    """Run argv (a session of its own, output to `log`); (return code or None on timeout, seconds).
    Past `timeout` the whole process group is sent SIGTERM, then SIGKILL 60 s later. Ctrl-C here
    ends the group too."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            end_group(proc)
            code = None
        except BaseException:
            end_group(proc)
            raise
    return code, time.perf_counter() - t0


def interrupted(signum, frame) -> None:
    """A signal handler that unwinds as Ctrl-C does (through run_bounded, which ends its child's group)."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def end_group(proc: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 60) -> None:
    """`first` to the child's process group, then SIGKILL if it is still there after `grace` seconds."""
    for sig, wait in ((first, grace), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def failure(code: int | None, timeout: float, log: Path) -> str:
    """Why a run_bounded child failed, and the tail of its log."""
    if code is None:
        why = f"ran past --timeout {timeout:.0f} s and was stopped"
    elif code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        why = f"exited with code {code}"
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
    return f"{why}; log {log}\n{tail}"
