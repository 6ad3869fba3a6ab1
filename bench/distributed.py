"""Training on Ray workers against training in the flow's process (issue 45), through the real retraining
flow on the synthetic network (bench/synthetic.py), one process per run: for LightGCN and GraphSAGE,
1 worker x 2 threads (compute.trainer=local, this process's own loop) against 2 workers x 1 thread
(compute.trainer=ray), on the same data, settings and seeds. Figures per run, from its MLflow run:
seconds per epoch (the mean over the epochs after the first), the bytes each worker sent per step and
the seconds it spent in collectives per epoch (recsys/dist.py counts them), test recall@20.

The projection: an epoch on M machines like this one (2 cores each), at 1M and 10M members, for 10,
25 and 100 Gbit/s between them = the measured one-worker epoch scaled by the log's size (linear:
bench/results/retrain_scale.md) and divided by M, plus the bytes a worker sends per epoch at that
size (recsys/dist.py's count, growing with the log for LightGCN and GCN, with the weights for
GraphSAGE) over the bandwidth. It assumes the split is even and that nothing else competes for the
network; the 2-worker measurement here says what the engine itself costs.

    python -m bench.distributed [--members 100000] [--epochs 8] [--families lightgcn sage gcn]
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
from pathlib import Path

from bench.common import command, log_bench_run, write_results
from bench.runner import retrain_here, retrain_in_child
from bench.synthetic import network_files

MODES = {"1x2": ["compute.trainer=local", "compute.threads=2"],
         "2x1": ["compute.trainer=ray", "compute.ray.workers=2", "compute.ray.cpus_per_worker=1"]}
# the 2x1 run again, one worker SIGKILLed after an epoch's checkpoint: `restart_recovered` (LightGCN)
KILLED = ("2x1-killed", [*MODES["2x1"], "compute.ray.max_failures=1"])
RECOVERED_WITHIN = 0.001  # test recall@20 of the killed run against the uninterrupted 2x1 run's
SETTINGS = {**MODES, KILLED[0]: KILLED[1]}
SETS = ["train.refit=false", "train.progress=false", "graph.social_edges=true", "features.text=false",
        "validation.min_interactions_per_user=1"]
SIZES = (1_000_000, 10_000_000)
MACHINES = (2, 4, 8)
GBITS = (10, 25, 100)
# what a worker's bytes per step grow with (recsys/dist.py): LightGCN's, split by columns, with the log (the
# batch's partial scores: a batch holds 1/64 of the log; the tables joined after an epoch: a row per member);
# GraphSAGE's DDP sum moves its weights, whatever the members; GCN's gathers move n x d per layer and step
BYTES_GROW_WITH_LOG = {"lightgcn": True, "sage": False, "gcn": True}


def child_main(spec_path: Path) -> None:
    """The retraining flow once; the run's per-epoch figures to the spec's "out"."""
    from mlflow.tracking import MlflowClient

    from bench.common import peak_rss_mb

    out, _, figures = retrain_here(spec_path)
    client = MlflowClient()
    history = {key: [m.value for m in sorted(client.get_metric_history(out["run_id"], key), key=lambda m: m.step)]
               for key in ("epoch_seconds", "collective_seconds", "bytes_sent", "steps")}
    params = client.get_run(out["run_id"]).data.params
    figures.write_text(json.dumps({
        "history": history, "recall@20": out["metrics"]["test"]["recall@20"], "peak_rss_mb": round(peak_rss_mb()),
        "nodes": sum(int(params[f"data.{k}"]) for k in ("users", "items")),
        "restarts": int(params.get("ray_restarts", 0))}))


def kill_a_worker_after_a_checkpoint(store: Path, done: threading.Event) -> None:
    """SIGKILL one Ray Train worker of this process's descendants once Ray Train has kept a second
    epoch's checkpoint (the first one deleted: a restart then reads a registered one), as
    tests/test_ray.py does."""
    import psutil

    first: set[str] = set()
    while not done.wait(2):
        now = {p.name for p in store.glob("ray-train-*/graphrec/checkpoint_*")}
        if not first:
            first = now
        elif not first <= now:
            workers = [p for p in psutil.Process().children(recursive=True)
                       if p.name().startswith("ray::RayTrainW")]
            if workers:
                max(workers, key=lambda p: p.pid).send_signal(signal.SIGKILL)
                return


def run_one(family: str, mode: str, files: dict, args) -> dict:
    folder = args.work / f"{family}-{mode}"
    shutil.rmtree(folder / "store", ignore_errors=True)  # no champion from an earlier run: both start from scratch
    folder.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    if mode.endswith("killed"):
        threading.Thread(target=kill_a_worker_after_a_checkpoint, args=(folder / "store", done), daemon=True).start()
    try:
        got = retrain_in_child("bench.distributed", folder / "store", [
            f"model.family={family}", f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}",
            "data.source=files", *(f"data.{k}={v}" for k, v in files.items()), *SETS, *SETTINGS[mode]],
            args.work / "logs" / f"{family}-{mode}.log", args.timeout, f"{family} {mode}")
    finally:
        done.set()
    if mode.endswith("killed"):
        return {"family": family, "members": args.members, "restarts": got["restarts"],
                "recall@20": round(got["recall@20"], 4)}
    h = got["history"]
    later = h["epoch_seconds"][1:] or h["epoch_seconds"]
    steps = sum(h["steps"]) or None
    return {"family": family, "members": args.members, "workers": int(mode[0]), "threads_per_worker": int(mode[2]),
            "epoch_seconds": round(sum(later) / len(later), 2),
            "bytes_per_step": round(sum(h["bytes_sent"]) / steps) if steps else 0,
            "collective_seconds": round(sum(h["collective_seconds"]) / len(h["epoch_seconds"]), 2)
            if h["collective_seconds"] else 0.0,
            "recall@20": round(got["recall@20"], 4), "peak_rss_mb": got["peak_rss_mb"], "nodes": got["nodes"],
            "steps_per_epoch": round(steps / len(h["epoch_seconds"])) if steps else None}


def projection(rows: list[dict]) -> list[dict]:
    """Projected epochs on M machines (see the module's text), per family, size and bandwidth."""
    out = []
    for family in sorted({r["family"] for r in rows}):
        one = next(r for r in rows if r["family"] == family and r["workers"] == 1)
        two = next(r for r in rows if r["family"] == family and r["workers"] == 2)
        steps = two["steps_per_epoch"] or 64
        for members in SIZES:
            scale = members / one["members"]
            for machines in MACHINES:
                # a worker's bytes per step, from the 2-worker measurement: x (M - 1) / M for a gather of the
                # whole, 2 (M - 1) / M for a sum, against 1/2 and 1 at M = 2
                grow = scale if BYTES_GROW_WITH_LOG[family] else 1.0
                per_step = two["bytes_per_step"] * grow * ((machines - 1) / machines) / (1 / 2)
                for gbit in GBITS:
                    seconds = one["epoch_seconds"] * scale / machines + steps * per_step / (gbit * 1e9 / 8)
                    out.append({"family": family, "machines": machines, "members": members, "gbit_per_s": gbit,
                                "epoch_seconds": round(seconds, 1),
                                "network_share": round(steps * per_step / (gbit * 1e9 / 8) / seconds, 3)})
    return out


def add_killed(files: dict, args) -> int:
    """bench/results/<name>.json with `killed_run` and `restart_recovered` from a killed run made now."""
    from bench.common import RESULTS

    path = RESULTS / f"{args.name}.json"
    figures = json.loads(path.read_text())
    whole = next(r for r in figures["rows"] if r["family"] == "lightgcn" and r["workers"] == 2)
    killed = run_one("lightgcn", KILLED[0], files, args)
    figures.update(killed_run={**killed, "against": "the rows' 2x1 run", "command": command("distributed", None)},
                   restart_recovered=bool(killed["restarts"] == 1
                                          and abs(killed["recall@20"] - whole["recall@20"]) <= RECOVERED_WITHIN))
    path.write_text(json.dumps(figures, indent=2) + "\n")
    with open(path.with_suffix(".md"), "a") as f:
        f.write(f"\nLightGCN 2 x 1 with a worker SIGKILLed after an epoch's checkpoint (run later, --only-killed): "
                f"{killed['restarts']} restart, test R@20 {killed['recall@20']} against {whole['recall@20']} "
                f"(restart_recovered: {figures['restart_recovered']}, within {RECOVERED_WITHIN}).\n")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=8, help="per run; the mean leaves out the first")
    p.add_argument("--families", nargs="+", default=["lightgcn", "sage"], choices=sorted(BYTES_GROW_WITH_LOG))
    p.add_argument("--work", type=Path, default=Path("/tmp/graphrec-distributed"))
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds a run may take")
    p.add_argument("--name", default="distributed")
    p.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True,
                   help="also run LightGCN's 2x1 with a worker killed after a checkpoint (restart_recovered)")
    p.add_argument("--only-killed", action="store_true",
                   help="run only the killed LightGCN run and add it to the committed results")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    files, counts = network_files(args.members, args.work)
    if args.only_killed:  # the killed run alone, against the committed results' uninterrupted 2x1 row
        return add_killed(files, args)
    rows = [run_one(family, mode, files, args) for family in args.families for mode in MODES]
    killed = run_one("lightgcn", KILLED[0], files, args) if args.kill and "lightgcn" in args.families else None
    whole = next((r for r in rows if r["family"] == "lightgcn" and r["workers"] == 2), None)
    overhead = max(two["epoch_seconds"] / one["epoch_seconds"] for one in rows for two in rows
                   if one["family"] == two["family"] and one["workers"] == 1 and two["workers"] == 2)
    figures = {"rows": rows, "overhead_2_workers": round(overhead, 3), "projection": projection(rows),
               "killed_run": killed, "restart_recovered": None if killed is None or whole is None else bool(
                   killed["restarts"] == 1 and abs(killed["recall@20"] - whole["recall@20"]) <= RECOVERED_WITHIN),
               "network": counts, "command": command("distributed", argv)}
    table = [(r["family"], f"{r['members']:,}", f"{r['workers']} x {r['threads_per_worker']}", r["epoch_seconds"],
              f"{r['bytes_per_step']:,}", r["collective_seconds"], r["recall@20"], r["peak_rss_mb"]) for r in rows]
    notes = (f"Worst 2-worker / 1-worker epoch: {figures['overhead_2_workers']} (goal: <= 1.3 here, 2 cores).\n\n"
             + ("" if killed is None else
                f"LightGCN 2 x 1 with a worker SIGKILLed after an epoch's checkpoint: {killed['restarts']} restart, "
                f"test R@20 {killed['recall@20']} (restart_recovered: {figures['restart_recovered']}, within "
                f"{RECOVERED_WITHIN} of the uninterrupted run's).\n\n")
             + "Projected epoch seconds on M machines of 2 cores (the module's text says how):\n\n"
             "| family | members | machines | 10 Gbit/s | 25 Gbit/s | 100 Gbit/s |\n|---|---:|---:|---:|---:|---:|\n"
             + "\n".join(f"| {f} | {m:,} | {k} | " + " | ".join(
                 str(next(x["epoch_seconds"] for x in figures["projection"] if x["family"] == f and x["members"] == m
                          and x["machines"] == k and x["gbit_per_s"] == g)) for g in GBITS) + " |"
                 for f in sorted({r["family"] for r in rows}) for m in SIZES for k in MACHINES))
    path = write_results(args.name, figures, table, "Training on Ray workers against one process", notes,
                         header=("family", "members", "workers x threads", "s/epoch", "bytes/step (a worker)",
                                 "collective s/epoch", "test R@20", "peak RSS MB"))
    log_bench_run(args.name, {"members": args.members, "epochs": args.epochs}, [], {path: "results"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
