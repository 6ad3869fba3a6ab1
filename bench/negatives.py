"""Negative samplers compared: LightGCN on ML-100K and Gowalla, one run per sampler.

Protocol: the validation split chooses the epoch (early stopping on validation NDCG@20, evaluated
every `eval_every` epochs), then test is ranked once with that epoch's weights. ML-100K: per-user
random 80/10/10 split. Gowalla: test.txt as test, a seeded 5% of train.txt's pairs as
validation. "too hard" is model-mined with many candidates, always the top-scored one, no
false-negative guard and no curriculum: the setting the PinSage paper warns against.

    ./dev.sh python -m bench.negatives [--datasets ml-100k gowalla] [--gowalla-epochs 20]
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.common import SAMPLERS, peak_rss_mb, prepare_and_fit, previous, run_config, write_results
from bench.runner import entry, markdown_table, run_case


def with_validation(data, fraction: float = 0.05, seed: int = 0):
    """Move a seeded fraction of the training interactions to a validation split."""
    inter = data.interactions.copy()
    train = np.flatnonzero(inter["split"].to_numpy() == "train")
    rng = np.random.default_rng(seed)
    chosen = train[rng.random(len(train)) < fraction]
    inter.loc[inter.index[chosen], "split"] = "valid"
    data.interactions = inter
    return data


def case(spec: dict) -> dict:
    from recsys.data.loaders import load_data
    from recsys.train import evaluate_model

    cfg = run_config(spec["dataset"], {"family": "lightgcn", "dim": 64, "layers": 3},
                     {"average": None,  # the recorded protocol: no parameter average
                      "epochs": spec["epochs"], "lr": spec["lr"], "eval_every": spec["eval_every"],
                      "negatives": SAMPLERS[spec["sampler"]]})
    raw = load_data(cfg.data)
    prepared, model, result, wall = prepare_and_fit(cfg, with_validation(raw) if spec["dataset"] == "gowalla" else raw)
    g, x = prepared.graph, prepared.indexed
    per_epoch = [h["epoch_seconds"] for h in result.history]
    m = evaluate_model(model, g, x, "test", cfg.eval)
    return {"recall@20": round(m["recall@20"], 4), "ndcg@20": round(m["ndcg@20"], 4),
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "train_seconds_to_best_epoch": round(sum(per_epoch[: result.best_epoch]), 1),
            "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k", "gowalla"])
    p.add_argument("--ml100k-epochs", type=int, default=80)
    p.add_argument("--gowalla-epochs", type=int, default=20)
    args = p.parse_args()
    rows = [r for r in previous("negatives", "cases", []) if r["dataset"] not in args.datasets]  # the others kept
    for dataset in args.datasets:
        gowalla = dataset == "gowalla"
        for sampler in SAMPLERS:
            spec = {"dataset": dataset, "sampler": sampler,
                    "epochs": args.gowalla_epochs if gowalla else args.ml100k_epochs,
                    "eval_every": 1 if gowalla else 2, "lr": 0.005}
            r = run_case("bench.negatives", spec, timeout=4 * 3600)
            print(r, flush=True)
            rows.append(r)
    table = markdown_table(rows, ["dataset", "sampler", "recall@20", "ndcg@20", "best_epoch",
                                  "train_seconds_to_best_epoch"])
    epochs = {r["dataset"]: r["epochs"] for r in rows if "epochs" in r}
    write_results("negatives", {"cases": rows, "epoch_budget": epochs}, table,
                  "Negative samplers: LightGCN on ML-100K and Gowalla",
                  notes=f"lr 0.005, batch 2048; epoch budgets {epochs}; the epoch is chosen on validation "
                        "(evaluated every 2 epochs on ML-100K, every epoch on Gowalla), test ranked once.")


if __name__ == "__main__":
    entry(case, main)
