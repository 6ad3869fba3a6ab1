"""GNN alone vs graph-as-text vs GNN-as-prefix, on warm and cold members of the synthetic network.

The network's default (2,000 members, 800 jobs) with 10% of members held out of training
entirely (cold: profile and friendships, no interactions in training). GraphSAGE over the
members' and jobs' features (with MiniLM text features) is the GNN; graph-as-text encodes each
member's written-out neighbourhood with the frozen MiniLM (no training); the prefix model reads the
GraphSAGE embedding as soft tokens before the member's profile (only the projection trains).
Recall@20 / NDCG@20 on the test split, for warm and cold members apart.

    ./dev.sh python bench/llm.py [--epochs 20] [--prefix-epochs 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb, write_results  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="GraphSAGE epochs")
    p.add_argument("--prefix-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--users", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from recsys.config import load_config
    from recsys.data.loaders import load_data
    from recsys.models import build_model
    from recsys.models.llm import train_llm
    from recsys.prepare import prepare
    from recsys.train import evaluate_model, fit

    cache = Path(__file__).resolve().parents[1] / ".graphrec"
    cfg = load_config(None, [f"data.synthetic.n_users={args.users}", "data.split.cold_user_fraction=0.1",
                             "model.family=sage", f"train.epochs={args.epochs}", "train.progress=false",
                             f"model.llm.epochs={args.prefix_epochs}", f"stores.root={cache}", "eval.ks=[20]"])
    prepared = prepare(load_data(cfg.data), cfg)
    indexed, graph = prepared.indexed, prepared.graph
    masks = {"warm": ~prepared.cold_users, "cold": prepared.cold_users}

    def score(model) -> dict:
        return {name: evaluate_model(model, graph, indexed, "test", cfg.eval, user_mask=mask)
                for name, mask in masks.items()}

    results = {}
    t0 = time.perf_counter()
    sage = build_model(cfg.model, graph, seed=0)
    fit(sage, graph, indexed, cfg.train, cfg.eval)
    results["gnn (GraphSAGE)"] = {"seconds": time.perf_counter() - t0, **score(sage)}
    for mode in ("text", "prefix"):
        t0 = time.perf_counter()
        opts = cfg.model.llm.model_copy(update={"mode": mode})
        model, history = train_llm(prepared, opts, sage, cfg.stores.text_cache(), seed=0, log=print)
        name = "graph as text (frozen MiniLM)" if mode == "text" else "GNN as prefix (frozen MiniLM)"
        results[name] = {"seconds": time.perf_counter() - t0, **score(model),
                         "final_loss": history[-1]["loss"] if history else None}
        print(name, results[name], flush=True)

    cold_test_users = indexed.test[prepared.cold_users[indexed.test[:, 0]], 0]
    figures = {"data": {"members": indexed.n_users, "jobs": indexed.n_items,
                        "cold_members": int(prepared.cold_users.sum()),
                        "cold_with_test_targets": len(np.unique(cold_test_users))},
               "methods": {k: {"warm_recall@20": round(v["warm"]["recall@20"], 4),
                               "warm_ndcg@20": round(v["warm"]["ndcg@20"], 4),
                               "cold_recall@20": round(v["cold"]["recall@20"], 4),
                               "cold_ndcg@20": round(v["cold"]["ndcg@20"], 4),
                               "seconds": round(v["seconds"], 1)} for k, v in results.items()},
               "settings": {"sage_epochs": args.epochs, "prefix_epochs": args.prefix_epochs,
                            "prefix_tokens": cfg.model.llm.prefix_tokens},
               "peak_rss_mb": round(peak_rss_mb())}
    rows = [(k, f"{m['warm_recall@20']:.4f}", f"{m['warm_ndcg@20']:.4f}", f"{m['cold_recall@20']:.4f}",
             f"{m['cold_ndcg@20']:.4f}", f"{m['seconds']:.0f}") for k, m in figures["methods"].items()]
    write_results("llm", figures, rows, "GNN vs graph-as-text vs GNN-as-prefix (synthetic network, test split)",
                  "Cold: members held out of training entirely (10%). Seconds: training (prefix: projection only; "
                  "text: encoding only).",
                  header=("method", "warm recall@20", "warm NDCG@20", "cold recall@20", "cold NDCG@20", "seconds"))


if __name__ == "__main__":
    main()
