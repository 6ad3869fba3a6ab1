"""The batch refresh at scale: synthetic network with 100k and 1M members, 200k jobs.

A GraphSAGE champion is trained once on the first 20k members of the network (features without
text: university, company, title; one epoch) and registered. Then, for each size, a fresh process
runs the refresh as the refresh flow does it: load the files, validate them with Great
Expectations, build today's graph with the champion's encoders, embed every member and job
layer by layer in chunks, write the partitioned snapshot, build the faiss index (HNSW above 50k
jobs) and measure its recall@10 against exact search. Peak RSS is that process's own. Then
`recommend` is timed for 1,000 random members on the opened snapshot (index loaded once).

    ./dev.sh python -m bench.refresh                       # 100k and 1M members
    ./dev.sh python -m bench.refresh --sizes 100000        # one size
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import peak_rss_mb, write_results
from bench.runner import worker_result
from bench.synthetic import NETWORK, network_files

TRAIN_USERS = 20_000


def settings(store: Path, files: dict, threads: int) -> list[str]:
    return [f"stores.root={store}", "data.source=files", *(f"data.{k}={v}" for k, v in files.items()),
            "features.text=false", "model.family=sage", "model.dim=64", "model.sage.fanouts=[10, 5]",
            "model.sage.chunk_size=65536", "train.epochs=1", "train.progress=false", "train.batch_size=4096",
            "data.split.kind=random", f"compute.threads={threads}", f"refresh.threads={threads}"]


def train_champion(store: Path, full: dict, folder: Path, threads: int) -> None:
    """Register a SAGE champion trained on the first TRAIN_USERS members of the network."""
    import pandas as pd

    from flows.cli import prepare_prefect
    from flows.retrain import retrain_flow
    from recsys.config import load_config

    users = pd.read_parquet(full["users"])
    keep = set(users["user_id"].iloc[:TRAIN_USERS])
    folder.mkdir(parents=True, exist_ok=True)
    subset = {}
    for name, path in full.items():
        frame = pd.read_parquet(path)
        if name in ("users", "interactions"):
            frame = frame[frame["user_id"].isin(keep)]
        elif name == "social":
            frame = frame[frame["src"].isin(keep) & frame["dst"].isin(keep)]
        subset[name] = str(folder / Path(path).name)
        frame.to_parquet(subset[name], index=False)
    prepare_prefect(store)
    t0 = time.perf_counter()
    out = retrain_flow(load_config(None, settings(store, subset, threads)))
    print(f"  champion v{out['version']} trained on {TRAIN_USERS} members in {time.perf_counter() - t0:.0f} s",
          flush=True)


def worker(store: Path, files: dict, threads: int, queries: int) -> dict:
    """One refresh, timed by phase, in this (fresh) process."""
    import shutil

    import torch

    from deploy.champion import refresh_snapshot
    from deploy.snapshot import Snapshot, read_manifest
    from deploy.tracking import configure
    from recsys.config import load_config
    from recsys.data.loaders import load_data, with_split
    from recsys.serving import reembed
    from validation.data import raise_if_failed, validate_data

    torch.set_num_threads(threads)
    target = store / f"bench-snapshots-{os.getpid()}"  # a fresh root: the refresh always writes
    shutil.rmtree(target, ignore_errors=True)
    cfg = load_config(None, settings(store, files, threads) + [f"stores.snapshots={target}"])
    configure(cfg.stores)
    phases = {}
    t0 = time.perf_counter()
    data = load_data(cfg.data)
    phases["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    raise_if_failed(validate_data(data, cfg.validation))
    phases["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    data = with_split(data, cfg.data)
    indexed = data.indexed()
    phases["index"] = time.perf_counter() - t
    timing = {}

    def timed_reembed(bundle):
        t = time.perf_counter()
        out = reembed(bundle, data, cfg)
        timing["embed"] = time.perf_counter() - t
        return out

    t = time.perf_counter()
    folder, written, _ = refresh_snapshot(cfg.stores.registered_model, cfg.stores.resolved_snapshots(), indexed,
                                          data.fingerprint(), cfg.refresh, timed_reembed)
    total_refresh = time.perf_counter() - t
    manifest = read_manifest(folder.parent, folder.name)
    phases["embed"] = timing["embed"]
    phases["write_and_index"] = total_refresh - timing["embed"]
    refresh_seconds = time.perf_counter() - t0
    rss = peak_rss_mb()

    snap = Snapshot.open(folder.parent, threads=threads)
    rng = np.random.default_rng(1)
    users = snap.user_ids[rng.choice(len(snap.user_ids), size=queries, replace=False)]
    snap.recommend(users[0], k=10)  # index and ids loaded once, before timing
    latencies = []
    for u in users:
        q = time.perf_counter()
        snap.recommend(u, k=10)
        latencies.append((time.perf_counter() - q) * 1000)
    n_users = manifest["counts"]["users"]
    shutil.rmtree(target, ignore_errors=True)
    return {
        "users": n_users, "items": manifest["counts"]["items"], "interactions": int(len(data.interactions)),
        "refresh_seconds": round(refresh_seconds, 1),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "users_per_second": round(n_users / refresh_seconds, 1),
        "peak_rss_mb": round(rss, 0),
        "snapshot_mb": round(manifest["bytes"] / 2**20, 1),
        "ann_kind": manifest["ann"]["kind"],
        "ann_build_seconds": manifest["ann"]["build_seconds"],
        "ann_recall@10": manifest["ann"].get("recall@10"),
        "query_p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "query_p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "vectors": manifest["vectors"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="members per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", type=int, default=1000, help="recommend calls timed per size")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--worker", nargs=2, metavar=("STORE", "FILES_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(Path(args.worker[0]), json.loads(args.worker[1]), args.threads,
                                            args.queries)))
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="graphrec-refresh-"))
    store = work / "store"
    per_size = {}
    for k, n in enumerate(sorted(args.sizes)):
        print(f"size {n}:", flush=True)
        files, _ = network_files(n, work)
        if k == 0 and not (store / "snapshots").is_dir():
            train_champion(store, files, work / "train", args.threads)
        per_size[str(n)] = worker_result("bench.refresh", [str(store), json.dumps(files), "--queries",
                                                           str(args.queries)], args.threads)
        if per_size[str(n)] is None:
            raise SystemExit(f"refresh of {n} members failed (see above)")
        print(f"  {per_size[str(n)]}", flush=True)

    sizes = list(per_size)
    figures = {"network": {**NETWORK, "champion_trained_on": TRAIN_USERS}, "sizes": per_size}
    if len(sizes) > 1:
        a, b = per_size[sizes[0]], per_size[sizes[-1]]
        figures["seconds_ratio"] = round(b["refresh_seconds"] / a["refresh_seconds"], 2)
        figures["size_ratio"] = round(b["users"] / a["users"], 2)
    rows = []
    for n, r in per_size.items():
        ph = r["phase_seconds"]
        rows.append((f"{int(n):,}", f"{r['refresh_seconds']:.0f}", f"{r['users_per_second']:,.0f}",
                     f"{r['peak_rss_mb']:,.0f}", f"{r['snapshot_mb']:,.0f}",
                     f"{ph['load']:.0f} / {ph['validate']:.0f} / {ph['index']:.0f} / {ph['embed']:.0f} / "
                     f"{ph['write_and_index']:.0f}",
                     f"{r['ann_kind']} {r['ann_build_seconds']:.0f} s", f"{r['ann_recall@10']:.3f}",
                     f"{r['query_p50_ms']:.2f} / {r['query_p99_ms']:.2f}"))
    notes = ("A GraphSAGE champion trained on 20k members embeds everyone (inductive). Phases: load / GX "
             "validation / split+index / layer-wise embedding / snapshot write + faiss build + recall check. "
             "Goal: 1M members in <= 600 s and <= 8 GiB on 2 cores.")
    if "seconds_ratio" in figures:
        notes += f" Time grew {figures['seconds_ratio']}x for {figures['size_ratio']}x the members."
    write_results("refresh", figures, rows, "Batch refresh at scale (synthetic network, 200k jobs)", notes,
                  header=("members", "refresh s", "members/s", "peak RSS MB", "snapshot MB",
                          "phases s (load/validate/index/embed/write+ANN)", "ANN build", "ANN recall@10",
                          "recommend p50/p99 ms"))


if __name__ == "__main__":
    main()
