"""Multi-task heads on the synthetic professional network: job click and friend request.

The embedded default network (2,000 members, 800 jobs), prepared as the mmoe family does it:
interactions split as configured; friendships split 80/10/10 at random, only the training ones in
the graph (social edges on), each held-out friendship paired with one random non-friend. One
LightGCN bottom is trained for retrieval (as `graphrec retrain` would), then each head is trained
on the frozen bottom embeddings plus member/job features, early-stopped on mean validation AUC;
AUC on the test rows, mean over seeds. MMoE is also trained end to end (task losses reaching the
bottom).

    ./dev.sh python -m bench.mmoe_network [--seeds 3]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import PRE_RECIPE, peak_rss_mb, write_results
from recsys.config import RunConfig, with_overrides
from recsys.data.loaders import load_data
from recsys.data.network_tasks import TASKS
from recsys.models import build_model
from recsys.multitask import fit_network_heads
from recsys.prepare import prepare
from recsys.train import fit

VARIANTS = {  # name -> model.mmoe overrides
    "mmoe": {"head": "mmoe"},
    "mmoe_end_to_end": {"head": "mmoe", "freeze_bottom": False},
    "shared_bottom": {"head": "shared_bottom"},
    "single_task": {"head": "single_task"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = with_overrides(RunConfig(), {"model.family": "mmoe", "graph.social_edges": True, "train.progress": False,
                                       "stores.root": str(Path(__file__).resolve().parents[1] / ".graphrec"),
                                       **{f"train.{k}": v for k, v in PRE_RECIPE.items()}})  # as recorded
    t0 = time.perf_counter()
    prepared = prepare(load_data(cfg.data), cfg)
    rows = {k: len(r) for k, r in prepared.tasks.rows.items()}
    labelled = {k: [int((~np.isnan(r.y[:, t])).sum()) for t in range(len(TASKS))]
                for k, r in prepared.tasks.rows.items()}
    print(f"prepared in {time.perf_counter() - t0:.0f}s; rows {rows}; labelled per task {labelled}")
    bottom = build_model(cfg.model, prepared.graph, seed=0)
    result = fit(bottom, prepared.graph, prepared.indexed, cfg.train, cfg.eval)
    print(f"bottom: best valid {cfg.train.monitor} {result.best_score:.4f} at epoch {result.best_epoch}")

    figures: dict = {"rows": rows, "labelled_rows_per_task": labelled, "seeds": args.seeds,
                     "bottom": "lightgcn", f"bottom_valid_{cfg.train.monitor}": round(result.best_score, 4)}
    table = []
    for name, overrides in VARIANTS.items():
        opts = cfg.model.mmoe.model_copy(update=overrides)
        aucs, seconds, gates, ranks = [], [], None, []
        for seed in range(args.seeds):
            t1 = time.perf_counter()
            heads = fit_network_heads(prepared.tasks, copy.deepcopy(bottom), prepared.graph, opts, seed=seed)
            seconds.append(time.perf_counter() - t1)
            aucs.append([heads.aucs["test"][t] for t in TASKS])
            ranks.append([heads.friend_ranking["recall@20"], heads.friend_ranking["ndcg@20"]])
            gates = heads.gates if gates is None else gates
        aucs = np.array(aucs)
        for t, task in enumerate(TASKS):
            figures[f"{name}_{task}_auc"] = round(float(aucs[:, t].mean()), 4)
            figures[f"{name}_{task}_auc_std"] = round(float(aucs[:, t].std()), 4)
        figures[f"{name}_seconds"] = round(float(np.mean(seconds)), 1)
        figures[f"{name}_friend_recall@20"] = round(float(np.mean([r[0] for r in ranks])), 4)
        figures[f"{name}_friend_ndcg@20"] = round(float(np.mean([r[1] for r in ranks])), 4)
        if gates is not None:
            figures[f"{name}_gate_utilisation"] = np.round(gates, 3).tolist()
        table.append((name, *(f"{aucs[:, t].mean():.4f} ± {aucs[:, t].std():.4f}" for t in range(len(TASKS))),
                      f"{figures[f'{name}_friend_recall@20']:.4f}", f"{np.mean(seconds):.0f}"))
        print(table[-1], flush=True)
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_results("mmoe_network", figures, table, "Synthetic network: test AUC per task (mean ± std over seeds)",
                  header=("head", "job click AUC", "friend request AUC", "friend recall@20 (all members ranked)",
                          "s per run"),
                  notes="Heads on a LightGCN bottom trained once for retrieval; features: member and job "
                        "attributes (categorical one-hot, text by all-MiniLM-L6-v2).")


if __name__ == "__main__":
    main()
