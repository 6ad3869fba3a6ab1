"""GraphSAGE on Gowalla: peak memory and time per epoch of full neighbourhoods vs fan-outs.

Two layers, mean aggregator, dim 64, batch 2048 (user, positive, negative) triples, lr 0.001; the
batch's own edges hidden from the sampler; Gowalla has no node features, so layer 0 is learned ID
embeddings. Each setting runs in its own process for a fixed epoch budget; Recall@20 by full
ranking on test.txt after the budget.

    ./dev.sh python -m bench.fanout_memory [--epochs 1]
"""
from __future__ import annotations

import argparse
import time

from bench.common import mean_epoch_seconds, peak_rss_mb, write_results
from bench.gowalla import load
from bench.runner import entry, markdown_table, run_case

SETTINGS = {"full": [-1, -1], "[20,10]": [20, 10], "[10,5]": [10, 5], "[5,5]": [5, 5]}


def case(spec: dict) -> dict:
    from recsys.config import EvalConfig, TrainConfig
    from recsys.models.sage import GraphSAGE
    from recsys.train import evaluate_model, fit

    data, graph = load(explore=False)
    graph.homogeneous()
    rss_before = peak_rss_mb()
    model = GraphSAGE(data.n_users, data.n_items, dim=64, aggregator="mean", fanouts=tuple(spec["fanouts"]))
    result = fit(model, graph, data, TrainConfig(epochs=spec["epochs"], batch_size=2048, lr=0.001, progress=False),
                 EvalConfig(ks=[20]))
    rss_train = peak_rss_mb()
    t0 = time.perf_counter()
    m = evaluate_model(model, graph, data, "test", EvalConfig(ks=[20]))
    return {"epoch_seconds": round(mean_epoch_seconds(result.history), 1),
            "peak_rss_mb_training": round(rss_train, 1), "rss_mb_before_training": round(rss_before, 1),
            "recall@20": round(m["recall@20"], 4), "ndcg@20": round(m["ndcg@20"], 4),
            "eval_seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    rows = []
    for name, fanouts in SETTINGS.items():
        r = run_case("bench.fanout_memory", {"setting": name, "fanouts": fanouts, "epochs": args.epochs})
        print(r, flush=True)
        rows.append(r)
    table = markdown_table(rows, ["setting", "epochs", "peak_rss_mb_training", "epoch_seconds", "recall@20"])
    write_results("fanout_memory", {"cases": rows}, table, "GraphSAGE fan-out sampling on Gowalla: memory and time",
                  notes="full = every neighbour at both layers. Peak RSS includes the loaded graph "
                        "(rss_mb_before_training in the JSON).")


if __name__ == "__main__":
    entry(case, main)
