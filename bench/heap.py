"""Training with the memory a step frees kept for the next step, against malloc's own behaviour
(recsys/heap.py, compute.reuse_memory), side by side.

For each size of the synthetic network (bench/synthetic.py's files, generated once per size under
--work), LightGCN at its recipe (the `auto` settings: 64 steps an epoch, 8 model-mined negatives
per positive, the parameter average) trains --epochs epochs, validation after the last one only,
in two processes of its own, one after the other: compute.reuse_memory on, then off. Per process:
each epoch's seconds, the loop's user and kernel CPU seconds and minor page faults, the RSS before
the loop and the process's peak. Per size, on / off: the last epoch's seconds (the first one also
grows the heap), the kernel seconds and the peak RSS; and per mode, how the epoch's and the kernel's
seconds grow against the training pairs between sizes.

    ./dev.sh python -m bench.heap                                  # 100k, 300k and 1M members
    ./dev.sh python -m bench.heap --members 100000 --epochs 2

Writes bench/results/heap.json (rows, ratios, growth; date, machine, threads) and heap.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from bench.common import command, growth_ratio, write_results
from bench.runner import worker_result
from bench.synthetic import network_files

SIZES = (100_000, 300_000, 1_000_000)
MODES = {"on": True, "off": False}


def worker(members: int, epochs: int, files: dict, reuse: bool) -> dict:
    """One process's training (this one's): its figures."""
    from recsys.heap import configure

    configure(reuse)
    import torch

    from recsys.config import DataConfig, EvalConfig, TrainConfig
    from recsys.data.loaders import load_data, with_split
    from recsys.graph.build import pairs_graph
    from recsys.models.lightgcn import LightGCN
    from recsys.train import fit

    cfg = DataConfig(source="files", **files)
    data = with_split(load_data(cfg), cfg).indexed()
    graph = pairs_graph(data, social_edges=True)
    torch.manual_seed(0)
    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    result = fit(model, graph, data, TrainConfig(epochs=epochs, eval_every=epochs, progress=False),
                 EvalConfig(ks=[20]))
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"members": members, "train_pairs": int(len(data.train)), "reuse_memory": reuse,
            "epoch_seconds": [round(h["epoch_seconds"], 1) for h in result.history],
            "loop_seconds": round(time.perf_counter() - t0, 1),
            "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "kernel_seconds": round(after.ru_stime - before.ru_stime, 1),
            "minor_faults": after.ru_minflt - before.ru_minflt,
            "rss_before_loop_mb": round(before.ru_maxrss / 1024), "peak_rss_mb": round(after.ru_maxrss / 1024),
            "threads": result.recipe.get("threads"), "threads_lowest": result.recipe.get("threads_lowest"),
            "valid_recall@20": round(result.history[-1].get("valid_recall@20", float("nan")), 5)}


def measure(args) -> dict:
    rows, ratios = [], []
    for members in args.members:
        files, _ = network_files(members, args.work)
        pair = {}
        for mode in MODES:
            print(f"[{members:,} members, reuse_memory {mode}] training {args.epochs} epochs ...", flush=True)
            out = worker_result("bench.heap", ["--members", str(members), "--epochs", str(args.epochs),
                                               "--files", json.dumps(files), "--reuse", mode], args.threads,
                                timeout=args.timeout)
            if out is None:
                raise RuntimeError(f"the {members:,}-member run with reuse_memory {mode} failed")
            print(f"  {out}", flush=True)
            rows.append(out)
            pair[mode] = out
        on, off = pair["on"], pair["off"]
        ratios.append({"members": members,
                       "epoch_seconds_ratio": round(on["epoch_seconds"][-1] / off["epoch_seconds"][-1], 3),
                       "kernel_seconds_ratio": round(on["kernel_seconds"] / max(off["kernel_seconds"], 0.1), 3),
                       "peak_rss_ratio": round(on["peak_rss_mb"] / off["peak_rss_mb"], 3),
                       "off_kernel_share": round(off["kernel_seconds"] / (off["kernel_seconds"] + off["user_seconds"]),
                                                 3)})
    return {"rows": rows, "ratios": ratios, "epochs": args.epochs,
            "growth": _growth(rows), "command": command("heap", args.argv)}


def _growth(rows: list[dict]) -> list[dict]:
    """Between consecutive sizes, each mode's cost ratio against the training pairs' (growth_ratio: 1.0
    grows linearly): the last epoch's seconds, and the loop's kernel seconds."""
    out = []
    for mode in (True, False):
        runs = [r for r in rows if r["reuse_memory"] == mode]
        for a, b in zip(runs, runs[1:]):
            out.append({"reuse_memory": mode, "from": a["members"], "to": b["members"], **{
                f"{key}_growth": growth_ratio(a[key][-1] if key == "epoch_seconds" else a[key],
                                              b[key][-1] if key == "epoch_seconds" else b[key],
                                              a["train_pairs"], b["train_pairs"])
                for key in ("epoch_seconds", "kernel_seconds")}})
    return out


def report(figures: dict) -> None:
    table = []
    by = {(r["members"], r["reuse_memory"]): r for r in figures["rows"]}
    for ratio in figures["ratios"]:
        on, off = by[(ratio["members"], True)], by[(ratio["members"], False)]
        table.append((f"{ratio['members']:,}", f"{on['train_pairs']:,}",
                      f"{off['epoch_seconds'][-1]} / {on['epoch_seconds'][-1]} ({ratio['epoch_seconds_ratio']})",
                      f"{off['kernel_seconds']} / {on['kernel_seconds']} ({ratio['kernel_seconds_ratio']})",
                      f"{off['user_seconds']} / {on['user_seconds']}",
                      f"{off['minor_faults']:,} / {on['minor_faults']:,}",
                      f"{off['peak_rss_mb']:,} / {on['peak_rss_mb']:,} ({ratio['peak_rss_ratio']})",
                      f"{off['valid_recall@20']} / {on['valid_recall@20']}"))
    notes = ("Each size: LightGCN at its recipe, " f"{figures['epochs']} epochs" " in a process of its own with "
             "compute.reuse_memory off, then on (recsys/heap.py); figures off / on (on / off). Epoch: the last "
             "one's seconds. Kernel and user: CPU seconds of the training loop. Peak RSS: the process's. The "
             "validation figure (after the last epoch) shows the two runs trained alike.\n\nGrowth against the "
             "training pairs (1.0: linear), epoch / kernel seconds: "
             + "; ".join(f"{g['from']:,} -> {g['to']:,} {'on' if g['reuse_memory'] else 'off'} "
                         f"{g['epoch_seconds_growth']} / {g['kernel_seconds_growth']}" for g in figures["growth"])
             + "\n\nCommand: `"
             + figures["command"] + "`")
    write_results("heap", figures, table, "Keeping freed memory for the next training step",
                  notes, header=("members", "train pairs", "epoch s off / on", "kernel s off / on",
                                 "user s off / on", "minor faults off / on", "peak RSS MB off / on",
                                 "valid R@20 off / on"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=list(SIZES), help="sizes of the network")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (validation after the last)")
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-warm-start",
                   help="where the networks' files are generated once and kept (bench/synthetic.py)")
    p.add_argument("--threads", type=int, default=2, help="threads of each training process")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds a training process may run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    p.add_argument("--reuse", choices=list(MODES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = argv
    if args.worker:
        print("RESULT " + json.dumps(worker(args.members[0], args.epochs, json.loads(args.files),
                                            MODES[args.reuse])), flush=True)
        return 0
    report(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
