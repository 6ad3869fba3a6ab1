"""Training beside other work on the same cores: before (compute.adapt_threads=false: every
thread kept whatever happens, as graphrec did) and after (the governor of recsys/threads.py), side
by side in one run.

Workloads, each timed in a process of its own once its data is prepared: the default retrain's
training (recsys.fit.train on the embedded default, refit included: the flow's train phase) and a
Gowalla LightGCN epoch with the headline recipe (the median of `--epochs`). Neighbours, started
after the data is prepared: none (alone), a busy loop at nice 0 and at nice 10, and a second
graphrec retrain (the real command, run again and again). The alone figures are medians of
`--repeats`, before and after taken in turn (a 2-core machine drifts by 10-20% between runs).
A shared figure that passes `--cap` times
its alone figure is stopped there and reported as that bound (`capped`): before the governor, some
took over 15 times their alone time.

    ./dev.sh python -m bench.contention                 # both workloads, about 40 minutes on 2 cores
    ./dev.sh python -m bench.contention --only retrain  # the default retrain's training only

Writes bench/results/contention.json (rows: workload, neighbour, seconds_alone, seconds_shared,
ratio, before_or_after, capped; worst_ratio_after / _before over the rows with a neighbour;
alone_change_ratio: after's alone seconds over before's, worst workload) and contention.md.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.common import SHARED_DATA, write_results

ROOT = Path(__file__).resolve().parents[1]
NEIGHBOURS = ("alone", "busy loop", "busy loop, nice 10", "second retrain")
MODES = {"before": "false", "after": "true"}
BUSY = "while True: pass"


def _start(argv: list[str], nice: int = 0, env: dict | None = None, out=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=(lambda: os.nice(nice)) if nice else None)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _retrain_argv(store: Path, adapt: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "retrain", "--set", f"stores.root={store}",
            "--set", f"compute.adapt_threads={adapt}", "--set", "train.progress=false"]


WORKER = """
import json, statistics, sys, time
from recsys.threads import configure
from recsys.config import load_config
cfg = load_config(None, sys.argv[2:])
configure(cfg.compute.threads, adapt=cfg.compute.adapt_threads)
from recsys.data.loaders import load_data
from recsys.fit import train
from recsys.prepare import prepare
prepared = prepare(load_data(cfg.data), cfg)
print("READY", flush=True)
sys.stdin.readline()  # the neighbours are running
t0 = time.perf_counter()
trained = train(prepared, cfg)
seconds = time.perf_counter() - t0
epochs = [h["epoch_seconds"] for h in trained.result.history]
print("SECONDS " + json.dumps(statistics.median(epochs) if sys.argv[1] == "epoch" else seconds), flush=True)
"""
WORKLOADS = {  # what the worker times, and the settings it trains with
    "retrain": ("total", []),
    "gowalla_epoch": ("epoch", ["data.source=gowalla", f"data.path={SHARED_DATA / 'gowalla'}", "train.eval_every=1000",
                                "train.refit=false"]),
}


def measure(workload: str, adapt: str, neighbour: str, work: Path, epochs: int,
            bound: float | None) -> tuple[float, bool]:
    """(seconds, capped): the workload's figure beside `neighbour`, stopped at `bound` seconds."""
    kind, sets = WORKLOADS[workload]
    sets = [*sets, "train.progress=false", f"compute.adapt_threads={adapt}"] + (
        [f"train.epochs={epochs}"] if kind == "epoch" else [])
    proc = subprocess.Popen([sys.executable, "-c", WORKER, kind, *sets], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    others: list[subprocess.Popen] = []
    seconds, stopped = None, threading.Event()
    watchdog = None

    def cap() -> None:
        stopped.set()
        _stop(proc)

    try:
        for line in proc.stdout:
            if line.startswith("READY"):
                others = _neighbours(neighbour, adapt, work)
                if bound is not None:  # per epoch for the epoch workload: the run holds `epochs` of them
                    watchdog = threading.Timer(bound * (epochs if kind == "epoch" else 1), cap)
                    watchdog.start()
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif line.startswith("SECONDS "):
                seconds = json.loads(line.split(" ", 1)[1])
        proc.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for other in others:
            _stop(other)
    if seconds is None and stopped.is_set():
        return bound, True  # a lower bound
    if seconds is None:
        raise RuntimeError(f"the {workload} worker failed (exit {proc.returncode})")
    return seconds, False


def _neighbours(neighbour: str, adapt: str, work: Path) -> list[subprocess.Popen]:
    if neighbour == "busy loop":
        return [_start([sys.executable, "-c", BUSY])]
    if neighbour == "busy loop, nice 10":
        return [_start([sys.executable, "-c", BUSY], nice=10)]
    if neighbour == "second retrain":  # kept running: a retrain loop in a shell of its own
        store = Path(tempfile.mkdtemp(dir=work))
        loop = " ".join(_retrain_argv(store, adapt))
        return [_start(["sh", "-c", f"while :; do {loop} >/dev/null 2>&1; done"])]
    return []


def run(workloads: list[str], epochs: int, cap: float, repeats: int, work: Path) -> dict:
    rows, spread = [], {}
    for workload in workloads:
        alone = {mode: [] for mode in MODES}
        for _ in range(repeats):  # before and after in turn, so that drift of the machine hits both
            for mode, adapt in MODES.items():
                alone[mode].append(measure(workload, adapt, "alone", work, epochs, None)[0])
                print(f"{workload} {mode} alone: {alone[mode][-1]:.2f} s", flush=True)
        for mode, adapt in MODES.items():
            median = statistics.median(alone[mode])
            spread[f"{workload} {mode}"] = [round(min(alone[mode]), 2), round(max(alone[mode]), 2)]
            for neighbour in NEIGHBOURS[1:]:
                shared, capped = measure(workload, adapt, neighbour, work, epochs, cap * median)
                print(f"{workload} {mode} {neighbour}: {shared:.2f} s{' (capped)' if capped else ''}", flush=True)
                rows.append({"workload": workload, "neighbour": neighbour, "seconds_alone": round(median, 2),
                             "seconds_shared": round(shared, 2), "ratio": round(shared / median, 2),
                             "before_or_after": mode, "capped": capped})
    alone_of = {(r["workload"], r["before_or_after"]): r["seconds_alone"] for r in rows}
    return {"rows": rows, "alone_min_max": spread, "alone_repeats": repeats,
            "worst_ratio_after": max(r["ratio"] for r in rows if r["before_or_after"] == "after"),
            "worst_ratio_before": max(r["ratio"] for r in rows if r["before_or_after"] == "before"),
            "alone_change_ratio": max(round(alone_of[(w, "after")] / alone_of[(w, "before")], 3) for w in workloads)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["retrain", "gowalla_epoch"], help="one workload (default: both)")
    parser.add_argument("--epochs", type=int, default=3, help="Gowalla epochs per figure (the median counts)")
    parser.add_argument("--repeats", type=int, default=3, help="alone figures per mode, taken in turn (the median "
                                                                "counts)")
    parser.add_argument("--cap", type=float, default=6.0, help="a shared figure is stopped at this many times its "
                                                               "alone figure and reported as that bound")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    args = parser.parse_args(argv)
    workloads = [args.only] if args.only else ["retrain", "gowalla_epoch"]
    work = args.work or Path(tempfile.mkdtemp(prefix="graphrec-contention-"))
    figures = run(workloads, args.epochs, args.cap, args.repeats, work)
    table = [(r["workload"], r["neighbour"], r["before_or_after"], r["seconds_alone"],
              f"{'>= ' if r['capped'] else ''}{r['seconds_shared']}", f"{'>= ' if r['capped'] else ''}{r['ratio']}")
             for r in figures["rows"]]
    notes = (f"Goals (2 cores): beside one CPU-bound process or a second retrain, each figure at most 2.5x its alone "
             f"figure; alone within 5% of before. Worst ratio after {figures['worst_ratio_after']}, before "
             f"{figures['worst_ratio_before']}; alone after / before {figures['alone_change_ratio']}. 'before' is "
             "compute.adapt_threads=false (the thread count fixed, as every graphrec process had it).")
    write_results("contention", {**figures, "gowalla_epochs": args.epochs, "cap": args.cap}, table,
                  "Training beside other work on the same cores", notes,
                  header=("workload", "neighbour", "mode", "alone s", "shared s", "shared / alone"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
