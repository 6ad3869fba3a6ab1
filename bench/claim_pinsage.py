"""Claim 3 of bench/claims.py: PinSage's importance pooling tames hub items (CLAIM: the protocol).

The same PinSage with three neighbourhoods (`model.pinsage.pooling`): importance (the T items random
walks visit most, weighted by visits: the paper's), mean (the same neighbours, equal weights), uniform
(T items drawn from the 2-hop items); hubs are the top 10% of items by training degree.

    ./dev.sh python -m bench.claim_pinsage [--datasets ml-100k lastfm]
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.common import PRE_RECIPE, mean_epoch_seconds, prepare_and_fit, run_config
from bench.runner import entry, run_arms

CLAIM = {
    "id": 3,
    "title": "PinSage's importance pooling tames hub items",
    "claim": "Weighting PinSage's random-walk neighbours by visit counts (importance pooling) gives better "
             "recommendations than equal weights or uniformly sampled neighbours, notably for tail items, "
             "because hub items no longer dominate every neighbourhood.",
    "data": "ML-100K (943 users, 1,682 movies; the top 10% of movies by training degree hold 43% of the "
            "training pairs)",
    "protocol": "One PinSage configuration (2 layers, T = 10, 50 walks, restart 0.5, early stopping on "
                "validation NDCG@20, per-user random 80/10/10 split) trained three times, changing only the "
                "neighbourhood: visit-count-weighted random-walk neighbours, the same neighbours with equal "
                "weights, or T neighbours drawn uniformly from the 2-hop item-user-item neighbourhood. Test "
                "Recall/NDCG@20 by full ranking with training items masked, overall and for head (top 10% by "
                "training degree) and tail targets apart, the head share of the top 20, and the variance of "
                "hub and tail item vectors across two neighbourhood redraws.",
}

COLUMNS = ["dataset", "arm", "recall@20", "ndcg@20", "head_recall@20", "tail_recall@20", "head_share@20",
           "hub_redraw_var", "tail_redraw_var", "epochs_run"]

SEED = 0
HEAD_FRACTION = 0.1
ARMS = ("importance", "mean", "uniform")
REPLICATE = "importance_seed1"
MARGIN = 0.02  # "beats": by more than 2% (relative) and more than the replicate's difference


def specs(datasets: tuple[str, ...] = ("ml-100k",)) -> list[dict]:
    """One arm per pooling, plus importance pooling again with another model seed (same split):
    the run-to-run noise the verdict's margin must exceed. One torch thread: on 2 cores shared
    with other jobs, two threads ran an epoch several times slower."""
    arms = [(arm, arm, SEED) for arm in ARMS] + [(REPLICATE, "importance", SEED + 1)]
    return [{"dataset": d, "arm": arm, "pooling": pooling, "seed": SEED, "model_seed": model_seed, "epochs": 40,
             "threads": 1} for d in datasets for arm, pooling, model_seed in arms]


def _config(spec: dict):
    # LastFM brings its own train/test split (no validation: a fixed epoch budget).
    return run_config(spec["dataset"], {"family": "pinsage", "dim": 64, "layers": 2, "pinsage": {
        "pooling": spec["pooling"], "num_neighbors": 10, "num_walks": 50, "restart_prob": 0.5}},
        {**PRE_RECIPE,  # the recorded protocol: uniform negatives, no average
         "epochs": spec["epochs"], "lr": 0.005, "eval_every": 2, "seed": spec.get("model_seed", spec["seed"])},
        {"seed": spec["seed"]}, features={"text": True})


def head_items(train: np.ndarray, n_items: int, fraction: float = HEAD_FRACTION) -> np.ndarray:
    """Boolean mask of the top `fraction` of items by training degree (ties: lower index first)."""
    degree = np.bincount(train[:, 1], minlength=n_items)
    head = np.zeros(n_items, dtype=bool)
    head[np.argsort(-degree, kind="stable")[: int(np.ceil(fraction * n_items))]] = True
    return head


def head_share(users, items, targets: np.ndarray, seen: np.ndarray, head: np.ndarray, k: int = 20) -> float:
    """Mean over test users of the fraction of head items in their top k (seen items masked)."""
    import torch

    test_users = np.unique(targets[:, 0])
    scores = users[torch.from_numpy(test_users)] @ items.T
    row = {u: r for r, u in enumerate(test_users)}
    keep = np.isin(seen[:, 0], test_users)
    scores[torch.from_numpy(np.array([row[u] for u in seen[keep, 0]], dtype=np.int64)),
           torch.from_numpy(seen[keep, 1])] = -torch.inf
    top = torch.topk(scores, k, dim=1).indices.numpy()
    return float(head[top].mean())


def redraw_variance(model, graph, mask: np.ndarray, seeds=(1001, 1002)) -> float:
    """Mean over the masked items of sum_d var_d over two neighbourhood redraws (unit vectors)."""
    import torch

    from recsys.seeding import seed_everything

    vectors = []
    with torch.no_grad():
        for s in seeds:
            seed_everything(s)  # DGL's generator too: the graph's owner has loaded DGL
            model._neighbourhoods = model.neighbourhoods(graph)
            vectors.append(model.item_vectors(graph)[torch.from_numpy(mask)])
    return float(((vectors[0] - vectors[1]) ** 2).sum(1).mean() / 2)


def case(spec: dict) -> dict:
    import torch

    from recsys.metrics import evaluate

    prepared, model, result, train_seconds = prepare_and_fit(_config(spec), seed=spec.get("model_seed", spec["seed"]))
    x, graph = prepared.indexed, prepared.graph
    model.eval()
    with torch.no_grad():
        users, items = model.embed(graph)
    head = head_items(x.train, x.n_items)
    targets, seen = x.test, x.seen_before("test")
    on_head = head[targets[:, 1]]
    m = evaluate(users, items, targets, seen, [20])
    m_head = evaluate(users, items, targets[on_head], seen, [20])
    m_tail = evaluate(users, items, targets[~on_head], seen, [20])
    out = {"recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"],
           "head_recall@20": m_head["recall@20"], "tail_recall@20": m_tail["recall@20"],
           "head_share@20": head_share(users, items, targets, seen, head),
           "head_share_of_targets": float(on_head.mean()),
           "head_share_of_train": float(head[x.train[:, 1]].mean()),
           "hub_redraw_var": redraw_variance(model, graph, head),
           "tail_redraw_var": redraw_variance(model, graph, ~head),
           "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
           "epoch_seconds": mean_epoch_seconds(result.history),
           "train_seconds": train_seconds}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _margin(imp: dict, rep: dict | None, key: str, best: float) -> float:
    """What "beats" must exceed: MARGIN relative to the best alternative, or the spread between the
    two importance runs (rep: the replicate, absent when it was not run) if that is larger."""
    return max(MARGIN * best, abs(imp[key] - rep[key]) if rep else 0.0)


def verdict(rows: list[dict]) -> tuple[bool, str]:
    """Held (on every data set run) if importance pooling beats both alternatives on overall
    Recall@20, or beats both on tail Recall@20 while its overall Recall@20 is not below the better
    alternative's by more than the margin. "Beats" means by more than the margin: 2% relative, or
    the difference between the two importance runs (model seeds 0 and 1) if that is larger."""
    held_all, parts = True, []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        by_arm = {r["arm"]: r for r in rows if r["dataset"] == dataset}
        imp, alts, rep = by_arm["importance"], [by_arm["mean"], by_arm["uniform"]], by_arm.get(REPLICATE)
        best, best_tail = max(a["recall@20"] for a in alts), max(a["tail_recall@20"] for a in alts)
        overall_margin = _margin(imp, rep, "recall@20", best)
        tail_margin = _margin(imp, rep, "tail_recall@20", best_tail)
        wins_overall = imp["recall@20"] - best > overall_margin
        wins_tail = imp["tail_recall@20"] - best_tail > tail_margin and imp["recall@20"] >= best - overall_margin
        held = wins_overall or wins_tail
        held_all &= held
        figures = "; ".join(f"{r['arm']} {r['recall@20']:.4f} (tail {r['tail_recall@20']:.4f})"
                            for r in (imp, *([rep] if rep else []), *alts))
        parts.append(f"{dataset}: Recall@20 {figures}; head share of the top 20 "
                     + "/".join(f"{r['head_share@20']:.2f}" for r in (imp, *alts))
                     + f"; margins {overall_margin:.4f} overall, {tail_margin:.4f} tail: importance pooling "
                     + ("beats both" + (" overall" if wins_overall else " on the tail without losing overall recall")
                        if held else "does not beat both alternatives by the margin, overall or on the tail"))
    return held_all, "; ".join(parts) + (". The claim holds here." if held_all else ". The claim does not hold here.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["ml-100k"])
    args = p.parse_args()
    run_arms("bench.claim_pinsage", specs(tuple(args.datasets)), verdict)


if __name__ == "__main__":
    entry(case, main)
