"""One GPU, Gowalla: graphrec's LightGCN loop beside the reference loop's semantics (issue 20).

Self-contained for a GPU machine that has Python, torch, numpy, pandas, pyyaml, tqdm and pydantic
(carried as wheels) and this source tree: the training loop, samplers, metrics and the edge-list
graph (recsys.graph.build.pairs_graph) import without DGL, Prefect, MLflow or Great Expectations.
Every stage runs in this one process on the same device, in this order:

  reference  LightGCN-PyTorch's semantics: the normalised adjacency as a COO tensor, autograd through
             3 whole-graph products forward (so 6 per batch with the backward), BPR with one uniform
             negative, batch 2048, lr 0.001, L2 1e-4. Its Python sampler is not timed: the batches are
             drawn on the device, so its figure is the step maths alone (a lower bound on its epoch).
             Median of --ref-steps steps after 3 warm-up steps, times 396 steps an epoch.
  graphrec   recsys.train.fit at the same semantics (batch 2048, one uniform negative, no step bound,
             lr 0.001, L2 1e-4): CSR products, 4 whole-graph products per batch (BatchRows), the
             negatives drawn on the host, checked on the device. Seconds of its second epoch, the
             whole epoch (sampler included); speedup = reference / graphrec.
  ranking    every test user (29,858) against all 40,981 items, training items masked, top 20, by
             recsys.metrics.evaluate on the device: median of 5 after a warm-up, in ms.
  headline   the validated recipe (bench/results/lightgcn_gowalla.json: 8 hardest of 64 candidates,
             lr 0.002, L2 1e-3, batch 2048, parameter average 0.998), test recall@20 after every epoch
             (the average's), training seconds until it first reaches 0.1830; at most --max-epochs.
  scale      (--scale-members N, 0 skips) the retrain-at-scale network (bench/refresh.py's generator,
             N members, 200k jobs, friendships as edges, the flow's temporal split) and one epoch of
             LightGCN at retrain_scale's settings (64 steps an epoch, one uniform negative), after a
             warm-up epoch; beside the CPU epoch of the same size in bench/results/retrain_scale.json.

    python -m bench.gpu                          # Gowalla from ../shared/data/gowalla, compute.device auto
    python -m bench.gpu --data /path/to/gowalla --device cuda:0
    python -m bench.gpu --device cpu --ref-steps 3 --max-epochs 1 --scale-members 0 --name gpu_cpu_check

Setting it up on a bare device machine: bench/README.md.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import SHARED_DATA, UNIFORM_RECIPE, peak_rss_mb, previous, write_results
from bench.gowalla import reference_loss
from bench.synthetic import NETWORK

TARGET = 0.1830  # the LightGCN paper's Gowalla recall@20
BATCH = 2048
HEADLINE = {"lr": 0.002, "l2": 1e-3, "negatives": {"kind": "model", "per_positive": 8, "candidates": 64},
            "ema": 0.998}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def reference_step_seconds(graph, data, device: torch.device, steps: int, seed: int = 0) -> float:
    """Median seconds of one reference-semantics step (see the module docstring)."""
    torch.manual_seed(seed)
    adj = graph.norm_adj().matrix.to_sparse_coo().coalesce().to(device)
    users = torch.nn.Parameter(torch.randn(data.n_users, 64, device=device) * 0.1)
    items = torch.nn.Parameter(torch.randn(data.n_items, 64, device=device) * 0.1)
    optimizer = torch.optim.Adam([users, items], lr=0.001)
    pairs = torch.from_numpy(data.train[:, :2].astype(np.int64)).to(device)

    def step():
        pick = torch.randint(len(pairs), (BATCH,), device=device)
        u, p = pairs[pick, 0], pairs[pick, 1]
        n = torch.randint(data.n_items, (BATCH,), device=device)
        optimizer.zero_grad()
        reference_loss(users, items, adj, u, p, n).backward()
        optimizer.step()

    for _ in range(3):
        step()
    return statistics.median(timed(device, step) for _ in range(steps))


def train_config(epochs: int, seed: int, **settings):
    from recsys.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=BATCH, max_steps_per_epoch=None, seed=seed, progress=False,
                       **{"average": None, **settings})  # the headline's average is bench Averages' own


def graphrec_epochs(graph, data, device: torch.device, epochs: int, seed: int = 0) -> list[float]:
    """fit() at the reference semantics: seconds of each epoch."""
    from recsys.config import EvalConfig
    from recsys.models.lightgcn import LightGCN
    from recsys.train import fit

    torch.manual_seed(seed)
    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3)
    cfg = train_config(epochs, seed, lr=0.001, l2=1e-4, negatives={"kind": "uniform", "per_positive": 1})
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), device=device)
    return [h["epoch_seconds"] for h in result.history]


def ranking_ms(graph, data, device: torch.device, chunk: int, repeats: int = 5) -> tuple[float, dict]:
    """Median ms to rank every test user against all items (training items masked, top 20), and the
    metrics of that ranking (random vectors: a check that it ran, not a quality figure)."""
    from recsys.metrics import evaluate

    generator = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 64, generator=generator).to(device)
    items = torch.randn(data.n_items, 64, generator=generator).to(device)
    metrics = {}

    def rank():
        metrics.update(evaluate(users, items, data.test, data.train, [20], chunk_size=chunk))

    rank()
    return 1000 * statistics.median(timed(device, rank) for _ in range(repeats)), metrics


def headline_curve(graph, data, device: torch.device, max_epochs: int, chunk: int, seed: int) -> list[dict]:
    """The validated recipe, test recall@20 of the parameter average after every epoch, until it reaches
    TARGET or max_epochs."""
    from bench.gowalla import Averages, TestCurve
    from recsys.config import EvalConfig
    from recsys.models.lightgcn import LightGCN
    from recsys.train import StopTraining, fit

    torch.manual_seed(seed)
    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3).to(device)
    averages = Averages(model, [HEADLINE["ema"]])  # its copies on the device, where fit keeps the model

    class UntilTarget(TestCurve):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            super().on_epoch_end(epoch, logs)
            if self.points and self.points[-1]["recall@20"] >= TARGET:
                raise StopTraining

    curve = UntilTarget(model, graph.to(device), data, 1, chunk, averages, HEADLINE["ema"])
    cfg = train_config(max_epochs, seed, lr=HEADLINE["lr"], l2=HEADLINE["l2"], negatives=HEADLINE["negatives"])
    try:
        fit(model, graph, data, cfg, EvalConfig(ks=[20]), callbacks=[curve], device=device)
    finally:
        averages.close()
    return curve.points


def scale_epoch(members: int, device: torch.device, seed: int = 0) -> dict:
    """One LightGCN epoch at retrain_scale's settings on the retrain-at-scale network of `members` members."""
    from recsys.config import DataConfig, EvalConfig, TrainConfig
    from recsys.data.loaders import with_split
    from recsys.data.synthetic import generate
    from recsys.graph.build import pairs_graph
    from recsys.models.lightgcn import LightGCN
    from recsys.train import fit

    t0 = time.perf_counter()
    data = with_split(generate(n_users=members, **NETWORK), DataConfig()).indexed()
    graph = pairs_graph(data, social_edges=True)
    prepare_seconds = time.perf_counter() - t0
    torch.manual_seed(seed)
    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3)
    # the settings retrain_scale's CPU figure was measured with (64 steps an epoch, uniform negatives)
    cfg = TrainConfig(**{**UNIFORM_RECIPE, "epochs": 2}, seed=seed, progress=False)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), device=device)
    return {"members": members, "train_interactions": int(len(data.train)),
            "prepare_seconds": round(prepare_seconds, 1),
            "epoch_seconds": round(result.history[-1]["epoch_seconds"], 3), "batch_size_used": result.batch_size,
            "cpu_epoch_seconds": cpu_epoch_seconds(members)}


def cpu_epoch_seconds(members: int):
    """The fastest CPU epoch of LightGCN at this size in bench/results/retrain_scale.json (2 cores), or None."""
    rows = [r for r in previous("retrain_scale", "rows", []) if r["family"] == "lightgcn" and r["members"] == members
            and not any("max_steps" in s for s in r["settings"])]
    return min((r["epoch_seconds"] for r in rows), default=None)


def main(argv=None) -> int:
    from recsys.data.loaders import load_gowalla
    from recsys.device import describe, resolve_device
    from recsys.graph.build import pairs_graph

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED_DATA / "gowalla", help="Gowalla in LightGCN format")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (compute.device)")
    p.add_argument("--ref-steps", type=int, default=50, help="reference steps timed (median)")
    p.add_argument("--max-epochs", type=int, default=16, help="headline recipe: epochs at most (0 skips)")
    p.add_argument("--rank-chunk", type=int, default=None,
                   help="users scored at once in the ranking (default 8192 on a GPU, 1024 on the CPU)")
    p.add_argument("--scale-members", type=int, default=1_000_000, help="scale stage's members (0 skips)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--name", default="gpu", help="results file name")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    args.rank_chunk = args.rank_chunk or (8192 if device.type == "cuda" else 1024)
    print(f"device {describe(device)}, torch {torch.__version__}", flush=True)

    t0 = time.perf_counter()
    data = load_gowalla(args.data).indexed()
    graph = pairs_graph(data)
    graph.norm_adj()
    print(f"gowalla: {data.n_users} users, {data.n_items} items, {len(data.train)} pairs "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    steps_per_epoch = math.ceil(len(data.train) / BATCH)

    step = reference_step_seconds(graph, data, device, args.ref_steps, args.seed)
    reference_epoch = step * steps_per_epoch
    print(f"reference: {1000 * step:.2f} ms a step, {reference_epoch:.2f} s an epoch", flush=True)
    ours = graphrec_epochs(graph, data, device, 2, args.seed)
    print(f"graphrec: epochs of {ours} s", flush=True)
    rank_ms, rank_metrics = ranking_ms(graph, data, device, args.rank_chunk)
    print(f"ranking: {rank_ms:.1f} ms", flush=True)
    curve = headline_curve(graph, data, device, args.max_epochs, args.rank_chunk, args.seed) if args.max_epochs else []
    reached = next((pt["train_seconds"] for pt in curve if pt["recall@20"] >= TARGET), None)
    scale = scale_epoch(args.scale_members, device, args.seed) if args.scale_members else None

    figures = {
        "device_name": describe(device), "torch_version": torch.__version__,
        "reference_step_ms": round(1000 * step, 3), "reference_epoch_seconds": round(reference_epoch, 3),
        "graphrec_epoch_seconds": round(ours[-1], 3), "graphrec_epoch_seconds_each": [round(s, 3) for s in ours],
        "speedup": round(reference_epoch / ours[-1], 2), "steps_per_epoch": steps_per_epoch,
        "ranking_ms": round(rank_ms, 2), "ranking_users": int(len(np.unique(data.test[:, 0]))),
        "ranking_check_recall@20": round(rank_metrics["recall@20"], 5),
        f"seconds_to_recall_{TARGET:g}": reached, "headline_curve": curve, "headline_recipe": HEADLINE,
        "scale": scale, "peak_rss_mb": round(peak_rss_mb(), 1),
        "gpu_peak_memory_mb": (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                               if device.type == "cuda" else None),
    }
    if scale and scale["cpu_epoch_seconds"]:
        figures["scale_speedup_vs_2_cpu_cores"] = round(scale["cpu_epoch_seconds"] / scale["epoch_seconds"], 1)
    best = max(curve, key=lambda pt: pt["recall@20"]) if curve else None
    rows = [
        ("device", figures["device_name"]), ("torch", torch.__version__),
        ("reference loop, s/epoch (step maths x 396; goal: graphrec >= 1.5x faster)", f"{reference_epoch:.2f}"),
        ("graphrec loop, s/epoch at reference semantics (goal <= 2 s)", f"{ours[-1]:.2f}"),
        ("speedup (reference / graphrec)", f"{figures['speedup']:.2f}x"),
        (f"full ranking, {figures['ranking_users']:,} users x {data.n_items:,} items, top 20 (goal <= 50 ms)",
         f"{rank_ms:.1f} ms"),
        (f"headline recipe: training s until test recall@20 >= {TARGET} (goal <= 60 s)",
         "-" if reached is None else f"{reached:.1f}"),
        ("headline recipe: best test recall@20 (epoch)", "-" if best is None else f"{best['recall@20']:.4f} "
                                                                                  f"({best['epoch']})"),
    ]
    if scale:
        rows.append((f"LightGCN at {scale['members']:,} members, retrain_scale settings: s/epoch here / on 2 CPU cores "
                     "(goal >= 20x)", f"{scale['epoch_seconds']:.2f} / {scale['cpu_epoch_seconds']} -> "
                                      f"{figures.get('scale_speedup_vs_2_cpu_cores', '-')}x"))
    notes = " ".join(" ".join(__doc__.split("\n\n")[1:3]).split())
    write_results(args.name, figures, rows, "LightGCN on one GPU: graphrec's loop beside the reference loop", notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
