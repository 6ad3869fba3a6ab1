"""Harness: child processes, so that a measured run's peak RSS is its own: a worker's RESULT line, and a
child in a process group of its own, every wait bounded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def retrain_in_child(module: str, store: Path, overrides: list[str], log: Path, timeout: float, what: str) -> dict:
    """The retraining flow once in `python -m <module> --child SPEC` (a session of its own, bounded by
    `timeout`), on a store at `store` with `overrides`: the JSON its `child_main` wrote (retrain_here)."""
    spec = store.parent / f"{store.name}.spec.json"
    out = store.parent / f"{store.name}.out.json"
    out.unlink(missing_ok=True)
    spec.write_text(json.dumps({"store": str(store), "out": str(out), "overrides": [f"stores.root={store}",
                                                                                   *overrides]}))
    code, _ = run_bounded([sys.executable, "-m", module, "--child", str(spec)], log, timeout)
    if code != 0 or not out.is_file():
        raise RuntimeError(f"{what}: " + failure(code, timeout, log))
    return json.loads(out.read_text())


def retrain_here(spec_path: Path):
    """In the child: the retraining flow once, as `graphrec retrain` runs it, on a Prefect API of its
    own; (its result, its configuration, where its figures go). MLflow then reads the run's store."""
    from deploy.tracking import configure
    from flows.cli import prepare_prefect
    from flows.cli_read import uses_threads
    from flows.prefect_api import prefect_api
    from flows.retrain import retrain_flow
    from recsys.config import load_config

    spec = json.loads(spec_path.read_text())
    cfg = load_config(None, spec["overrides"])
    uses_threads(cfg)  # compute.threads, adapt_threads and reuse_memory, as the command sets them
    start = time.perf_counter()
    with prefect_api(prepare_prefect(Path(spec["store"]))):
        out = retrain_flow(cfg, return_state=True).result()
    out = {**out, "flow_seconds": time.perf_counter() - start}  # end to end, the Prefect API's start included
    configure(cfg.stores)
    return out, cfg, Path(spec["out"])
