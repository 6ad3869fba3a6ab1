"""LightGCN on Gowalla with the paper's settings, for a given epoch budget.

Paper protocol: train on train.txt, rank all 40,981 items for every test user with their training
items masked, Recall@20 / NDCG@20 on test.txt; dim 64, K = 3 layers, lr 0.001, batch 2048,
L2 1e-4, one uniform negative per positive, the whole graph re-propagated for every batch.
The paper reports Recall@20 0.1830 / NDCG@20 0.1554 after about 1000 epochs; this records where
graphrec's loop stands after the budget given here.

    ./dev.sh python bench/lightgcn_gowalla.py --epochs 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import SHARED_DATA, peak_rss_mb, write_results  # noqa: E402
from recsys.config import EvalConfig, TrainConfig  # noqa: E402
from recsys.data.loaders import load_gowalla  # noqa: E402
from recsys.graph.build import build_graph  # noqa: E402
from recsys.metrics import evaluate  # noqa: E402
from recsys.models.lightgcn import LightGCN  # noqa: E402
from recsys.train import fit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="epoch budget (default 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--data", type=Path, default=SHARED_DATA / "gowalla")
    p.add_argument("--chunk-size", type=int, default=1024, help="users ranked at once in evaluation")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    data = load_gowalla(args.data).indexed()
    graph = build_graph(data)
    graph.norm_adj()
    load_seconds = time.perf_counter() - t0
    print(f"gowalla: {data.n_users} users, {data.n_items} items, {len(data.train)} train, {len(data.test)} test "
          f"(loaded in {load_seconds:.1f} s)")

    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3)
    cfg = TrainConfig(epochs=args.epochs, batch_size=2048, lr=0.001, l2=1e-4, seed=2020, threads=args.threads)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]))

    t1 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        users, items = model.embed(graph)
    metrics = evaluate(users, items, data.test, data.train, [20], chunk_size=args.chunk_size)
    eval_seconds = time.perf_counter() - t1

    epoch_seconds = sum(h["epoch_seconds"] for h in result.history) / len(result.history)
    figures = {
        "epochs": args.epochs,
        "epoch_seconds": round(epoch_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "recall@20": round(metrics["recall@20"], 5),
        "ndcg@20": round(metrics["ndcg@20"], 5),
        "torch_threads": args.threads,
        "final_loss": round(result.history[-1]["loss"], 5),
        "loss_by_epoch": [round(h["loss"], 5) for h in result.history],
        "paper_recall@20": 0.1830,
        "paper_ndcg@20": 0.1554,
        "settings": {"dim": 64, "layers": 3, "lr": 0.001, "batch_size": 2048, "l2": 1e-4, "negatives": "uniform, 1"},
    }
    rows = [("epochs", str(args.epochs)), ("seconds per epoch", f"{epoch_seconds:.1f}"),
            ("full evaluation (s)", f"{eval_seconds:.1f}"), ("peak RSS (MB)", f"{figures['peak_rss_mb']:.0f}"),
            ("recall@20", f"{metrics['recall@20']:.4f} (paper, ~1000 epochs: 0.1830)"),
            ("ndcg@20", f"{metrics['ndcg@20']:.4f} (paper, ~1000 epochs: 0.1554)"),
            ("final BPR loss", f"{figures['final_loss']:.4f}")]
    write_results("lightgcn_gowalla", figures, rows, "LightGCN on Gowalla, paper settings",
                  notes="Test split used once, after the budget; no validation-based epoch selection.")


if __name__ == "__main__":
    main()
