"""Every model family on ML-100K and Gowalla: Recall@20, NDCG@20, seconds per epoch, peak RSS.

ML-100K: every rating an interaction, per-user random 80/10/10 split (seed 0), user and movie
attributes as features, early stopping on validation NDCG@20. Gowalla: the LightGCN paper's split,
no features (GraphSAGE and PinSage then learn ID embeddings as layer 0), a fixed small epoch
budget per family (2 cores cannot run 1000 epochs of each): the figures compare speed and early
quality, not converged quality. Each case runs in its own process so its peak RSS is its own.

    ./dev.sh python -m bench.families [--datasets ml-100k gowalla] [--gowalla-epochs 3]
"""
from __future__ import annotations

import argparse
import time

from bench.common import PRE_RECIPE, mean_epoch_seconds, peak_rss_mb, prepare_and_fit, run_config, write_results
from bench.runner import entry, markdown_table, run_case

# (case, model options, whether it needs node features); a case runs the family named before any "+"
FAMILIES = [("lightgcn", {}, False), ("lightgcn+features", {"lightgcn": {"use_features": True}}, True),
            ("gcn", {}, False), ("sage", {"sage": {"aggregator": "mean", "fanouts": [20, 10]}}, False),
            ("pinsage", {}, False)]
LAYERS = {"lightgcn": 3}  # propagation steps per family (the others: 2)
WITHOUT_FEATURES = {"gowalla"}  # data sets with no node features


def case(spec: dict) -> dict:
    from recsys.train import evaluate_model

    family = spec["family"].split("+")[0]
    cfg = run_config(spec["dataset"], {"family": family, "dim": 64, "layers": LAYERS.get(family, 2), **spec["options"]},
                     {**PRE_RECIPE, "epochs": spec["epochs"], "lr": spec["lr"], "eval_every": spec["eval_every"]},
                     features={"text": True}, graph=spec.get("graph", {}))  # PRE_RECIPE: the recorded protocol
    prepared, model, result, _ = prepare_and_fit(cfg)
    t0 = time.perf_counter()
    m = evaluate_model(model, prepared.graph, prepared.indexed, "test", cfg.eval)
    return {"recall@20": round(m["recall@20"], 4), "ndcg@20": round(m["ndcg@20"], 4),
            "epoch_seconds": round(mean_epoch_seconds(result.history), 2),
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "eval_seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "gowalla"])
    p.add_argument("--ml100k-epochs", type=int, default=60)
    p.add_argument("--gowalla-epochs", type=int, default=3)
    args = p.parse_args()
    rows = []
    for dataset in args.datasets:
        for family, options, reads_features in FAMILIES:
            if reads_features and dataset in WITHOUT_FEATURES:
                continue
            gowalla = dataset == "gowalla"
            spec = {"dataset": dataset, "family": family, "options": options,
                    "epochs": args.gowalla_epochs if gowalla else args.ml100k_epochs,
                    "eval_every": 10**6 if gowalla else 2, "lr": 0.001 if gowalla else 0.005}
            result = run_case("bench.families", spec)
            print({k: v for k, v in result.items() if k not in ("options",)}, flush=True)
            rows.append(result)
    figures = {"cases": [{k: v for k, v in r.items()} for r in rows]}
    table = markdown_table(rows, ["dataset", "family", "recall@20", "ndcg@20", "epoch_seconds", "epochs_run",
                                  "peak_rss_mb"])
    write_results("families", figures, table, "Model families on ML-100K and Gowalla",
                  notes=f"Gowalla: {args.gowalla_epochs} epochs per family, lr 0.001, no validation; "
                        "ML-100K: up to {0} epochs, early stopping on validation NDCG@20.".format(args.ml100k_epochs))


if __name__ == "__main__":
    entry(case, main)
