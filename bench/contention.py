"""Training beside other work on the same cores: before (compute.adapt_threads=false: every
thread kept whatever happens, as graphrec did) and after (the governor of recsys/threads.py), side
by side in one run.

Workloads: the default retrain (`graphrec retrain`, its train phase's seconds from the MLflow run)
and a Gowalla LightGCN epoch with the headline recipe (the median epoch of `--epochs`, in a
process of its own). Neighbours: none (alone), a busy loop at nice 0 and at nice 10, and a
second default retrain (two retrains started together, each measured; for the Gowalla epoch, a
retrain kept running beside it). Each figure is a fresh process; the ratio is shared / alone.

    ./dev.sh python -m bench.contention                 # both workloads, about 40 minutes on 2 cores
    ./dev.sh python -m bench.contention --only retrain  # the default retrain alone (about 15 minutes)

Writes bench/results/contention.json (rows: workload, neighbour, seconds_alone, seconds_shared,
ratio, before_or_after; worst_ratio_after / _before over the rows with a neighbour;
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


def _train_seconds(store: Path) -> float:
    """The train phase's seconds of the newest run in `store` (the flow logs phase_train_seconds)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("graphrec")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return float(run.data.metrics["phase_train_seconds"])


def _retrains(work: Path, adapt: str, count: int) -> list[float]:
    """`count` default retrains started together, each in a store of its own; their train seconds."""
    stores = [Path(tempfile.mkdtemp(dir=work)) for _ in range(count)]
    procs = [_start(_retrain_argv(s, adapt)) for s in stores]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RuntimeError(f"a retrain failed: exit codes {codes} (stores {stores})")
    return [_train_seconds(s) for s in stores]


EPOCH_WORKER = """
import json, statistics, sys
from recsys.threads import configure
from recsys.config import load_config
cfg = load_config(None, sys.argv[2:])
configure(cfg.compute.threads, adapt=cfg.compute.adapt_threads)
from recsys.data.loaders import load_data
from recsys.fit import train
from recsys.prepare import prepare
prepared = prepare(load_data(cfg.data), cfg)
print("READY", flush=True)
trained = train(prepared, cfg)
print("SECONDS " + json.dumps([h["epoch_seconds"] for h in trained.result.history]), flush=True)
"""


def _gowalla_epoch(adapt: str, epochs: int, neighbour: str, work: Path) -> float:
    """The median epoch seconds of LightGCN's headline recipe on Gowalla, beside `neighbour`
    (started once the data is prepared, so that it shares the epochs only)."""
    sets = ["data.source=gowalla", f"data.path={SHARED_DATA / 'gowalla'}", f"train.epochs={epochs}",
            "train.eval_every=1000", "train.refit=false", "train.progress=false", f"compute.adapt_threads={adapt}"]
    proc = subprocess.Popen([sys.executable, "-c", EPOCH_WORKER, "--", *sets], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    others: list[subprocess.Popen] = []
    seconds = None
    for line in proc.stdout:
        if line.startswith("READY"):
            others = _neighbours(neighbour, adapt, work)
        elif line.startswith("SECONDS "):
            seconds = json.loads(line.split(" ", 1)[1])
    proc.wait()
    for other in others:
        _stop(other)
    if proc.returncode or not seconds:
        raise RuntimeError(f"the Gowalla epoch worker failed (exit {proc.returncode})")
    return statistics.median(seconds)


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


def _retrain_beside(neighbour: str, adapt: str, work: Path) -> float:
    if neighbour == "alone":
        return _retrains(work, adapt, 1)[0]
    if neighbour == "second retrain":
        return max(_retrains(work, adapt, 2))  # each of the two; the slower one counts
    others = _neighbours(neighbour, adapt, work)
    try:
        return _retrains(work, adapt, 1)[0]
    finally:
        for other in others:
            _stop(other)


def run(workloads: list[str], epochs: int, work: Path) -> dict:
    rows = []
    for workload in workloads:
        for mode, adapt in MODES.items():
            seconds = {}
            for neighbour in NEIGHBOURS:
                if workload == "retrain":
                    seconds[neighbour] = _retrain_beside(neighbour, adapt, work)
                else:
                    seconds[neighbour] = _gowalla_epoch(adapt, epochs, neighbour, work)
                print(f"{workload} {mode} {neighbour}: {seconds[neighbour]:.2f} s", flush=True)
            for neighbour in NEIGHBOURS[1:]:
                rows.append({"workload": workload, "neighbour": neighbour, "seconds_alone": round(seconds["alone"], 2),
                             "seconds_shared": round(seconds[neighbour], 2),
                             "ratio": round(seconds[neighbour] / seconds["alone"], 2), "before_or_after": mode})
    alone = {(r["workload"], r["before_or_after"]): r["seconds_alone"] for r in rows}
    return {"rows": rows,
            "worst_ratio_after": max(r["ratio"] for r in rows if r["before_or_after"] == "after"),
            "worst_ratio_before": max(r["ratio"] for r in rows if r["before_or_after"] == "before"),
            "alone_change_ratio": max(round(alone[(w, "after")] / alone[(w, "before")], 3) for w in workloads)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["retrain", "gowalla_epoch"], help="one workload (default: both)")
    parser.add_argument("--epochs", type=int, default=3, help="Gowalla epochs per figure (the median counts)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a temporary one)")
    args = parser.parse_args(argv)
    workloads = [args.only] if args.only else ["retrain", "gowalla_epoch"]
    work = args.work or Path(tempfile.mkdtemp(prefix="graphrec-contention-"))
    figures = run(workloads, args.epochs, work)
    table = [(r["workload"], r["neighbour"], r["before_or_after"], r["seconds_alone"], r["seconds_shared"], r["ratio"])
             for r in figures["rows"]]
    notes = (f"Goals (2 cores): beside one CPU-bound process or a second retrain, each figure at most 2.5x its alone "
             f"figure; alone within 5% of before. Worst ratio after {figures['worst_ratio_after']}, before "
             f"{figures['worst_ratio_before']}; alone after / before {figures['alone_change_ratio']}. 'before' is "
             "compute.adapt_threads=false (the thread count fixed, as every graphrec process had it).")
    write_results("contention", {**figures, "gowalla_epochs": args.epochs}, table,
                  "Training beside other work on the same cores", notes,
                  header=("workload", "neighbour", "mode", "alone s", "shared s", "shared / alone"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
