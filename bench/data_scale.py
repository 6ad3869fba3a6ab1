"""The data half of the flow at scale (issue 19, item 4): load, validate, index, fingerprint, graph.

The synthetic network of bench/synthetic.py, one fresh process per size, which times phase by phase
(PHASES; bench/README.md says what each runs) what the retraining flow does before training, with the
process's CPU time per phase and its peak RSS. Between consecutive sizes the growth of a phase is
(seconds ratio) / (interactions ratio): 1.0 is linear. Goals on this machine (2 cores): at 1M members
validate <= 60 s and prepare + norm_adj <= 60 s.

    ./dev.sh python -m bench.data_scale                          # 100k, 300k and 1M members
    ./dev.sh python -m bench.data_scale --sizes 100000 1000000   # some sizes
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import growth_ratio, peak_rss_mb, write_results
from bench.runner import worker_result
from bench.synthetic import network_files

PHASES = ("load", "validate", "split", "indexed", "fingerprint", "prepare", "norm_adj")
SETTINGS = ["data.source=files", "features.text=false", "graph.social_edges=true", "model.family=sage",
            "data.split.kind=temporal"]


def worker(files: dict, threads: int) -> dict:
    """Every phase once, timed, in this (fresh) process."""
    import torch

    from recsys.config import load_config
    from recsys.data.loaders import load_files, with_split
    from recsys.prepare import prepare
    from validation.data import raise_if_failed, validate_data

    torch.set_num_threads(threads)
    cfg = load_config(None, SETTINGS + [f"data.{k}={v}" for k, v in files.items()])
    seconds = {}

    cpu = {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        seconds[name] = round(time.perf_counter() - t, 2)
        cpu[name] = round(time.process_time() - c, 2)
        print(f"  {name}: {seconds[name]} s (cpu {cpu[name]} s)", file=sys.stderr, flush=True)
        return out

    data = timed("load", lambda: load_files(files["interactions"], files["users"], files["items"], files["social"]))
    timed("validate", lambda: raise_if_failed(validate_data(data, cfg.validation, require_timestamp=True)))
    split = timed("split", lambda: with_split(data, cfg.data))
    indexed = timed("indexed", split.indexed)
    timed("fingerprint", data.fingerprint)
    del split, indexed
    prepared = timed("prepare", lambda: prepare(data, cfg))
    timed("norm_adj", prepared.graph.norm_adj)
    return {"members": len(data.users), "jobs": len(data.items), "interactions": len(data.interactions),
            "friendships": len(data.social), "train_pairs": len(prepared.indexed.train),
            "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": round(peak_rss_mb())}


def growth(rows: list[dict], key: str) -> list[dict]:
    """Per consecutive pair of sizes: each phase's seconds ratio (rows[key]: "seconds" for wall
    clock, "cpu_seconds" for the process's CPU time) over the interactions ratio."""
    out = []
    for a, b in zip(rows, rows[1:]):
        scale = b["interactions"] / a["interactions"]
        out.append({"from": a["members"], "to": b["members"], "interactions_ratio": round(scale, 2),
                    **{p: growth_ratio(a[key][p], b[key][p], a["interactions"], b["interactions"])
                       for p in PHASES}})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000], help="members per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path.home() / "graphrec-scale", help="generated networks (reused)")
    p.add_argument("--worker", metavar="FILES_JSON", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker), args.threads)), flush=True)
        return

    rows = []
    for n in sorted(args.sizes):
        print(f"{n:,} members:", flush=True)
        rows.append(worker_result("bench.data_scale", [json.dumps(network_files(n, args.work)[0])], args.threads))
        if rows[-1] is None:
            raise SystemExit(f"the run with {n} members failed")
        print(f"  {rows[-1]}", flush=True)

    wall, cpu = growth(rows, "seconds"), growth(rows, "cpu_seconds")
    table = [(f"{r['members']:,}", f"{r['interactions']:,}",
              *(f"{r['seconds'][ph]:.1f} ({r['cpu_seconds'][ph]:.1f})" for ph in PHASES), f"{r['peak_rss_mb']:,}")
             for r in rows]
    table += [(f"growth {g['from']:,} -> {g['to']:,}", f"x{g['interactions_ratio']}",
               *("" if g[ph] is None or c[ph] is None else f"{g[ph]:.2f} ({c[ph]:.2f})" for ph in PHASES), "")
              for g, c in zip(wall, cpu)]
    last = rows[-1]["seconds"]
    notes = ("Seconds per phase in a fresh process per size, wall clock (CPU time of the process in brackets: "
             "on a shared machine the wall clock includes waiting for a core). Growth rows: (seconds ratio) / "
             "(interactions ratio), 1.0 = linear. prepare = split + index + features (no text) + DGL graph with "
             "friendships; norm_adj = the normalised adjacency. Goals at 1M members: validate <= 60 s (largest size "
             f"here: {last['validate']:.0f} s), prepare + norm_adj <= 60 s "
             f"({last['prepare'] + last['norm_adj']:.0f} s).")
    write_results("data_scale", {"settings": SETTINGS, "rows": rows, "growth": wall, "growth_cpu": cpu}, table,
                  "Data phases at scale (synthetic network, 200k jobs)", notes,
                  header=("members", "interactions", *(f"{ph} s" for ph in PHASES), "peak RSS MB"))


if __name__ == "__main__":
    main()
