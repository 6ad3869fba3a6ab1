"""Harness: the Gowalla paper protocol, shared by lightgcn_gowalla and gpu.

The paper's split (train.txt / test.txt); every item ranked for every test user with their training
items masked, Recall@20 / NDCG@20; a validation split held out of train.txt at random (settings are
chosen there, test.txt chooses nothing); a callback that ranks every few epochs, with moving
averages of the parameters; the budget a validation curve gives all of train.txt.
"""
from __future__ import annotations

import numpy as np
import torch

from bench.common import SHARED_DATA
from recsys.data.types import IndexedData
from recsys.metrics import evaluate
from recsys.train import Callback
from recsys.train_state import ParameterAverage

HELD_OUT = 0.1  # share of train.txt the validation split holds out
VALIDATION = f"validation: {HELD_OUT:.0%} of train.txt held out at random (seed 0), test.txt not read"
PAPER_RULE = ("epoch chosen on test.txt as the paper's code does (NGCF/LightGCN: test recall@20 evaluated during "
              "training, early stopping on it, the best evaluation reported)")


def load(explore: bool, path=None):
    """(data, graph): Gowalla's paper split, or with the validation split in place of test.txt."""
    from recsys.data.loaders import load_gowalla
    from recsys.graph.build import build_graph

    data = load_gowalla(path or SHARED_DATA / "gowalla").indexed()
    if explore:
        data = explore_split(data)
    return data, build_graph(data)


def explore_split(data: IndexedData) -> IndexedData:
    """train.txt split at random; the HELD_OUT share stands in for the test split."""
    rng = np.random.default_rng(0)
    held = rng.random(len(data.train)) < HELD_OUT
    train, valid = data.train[~held], data.train[held]
    return IndexedData(data.user_ids, data.item_ids, train, valid[:0], valid, data.social)


def rank(model, graph, data, chunk: int = 1024) -> dict:
    model.eval()
    with torch.no_grad():
        users, items = model.embed(graph)
    model.train()
    return evaluate(users, items, data.test, data.train, [20], chunk_size=chunk)


class Averages:
    """Moving averages of the model's parameters, one per decay (recsys.train.ParameterAverage),
    updated after every optimizer step of fit's loop."""

    def __init__(self, model, decays: list[float]):
        self.by_decay = {d: ParameterAverage(model, None, d) for d in decays}

    def swapped(self, decay: float):
        """The model's parameters replaced by the average for `decay` inside the block."""
        return self.by_decay[decay].swapped()

    def close(self) -> None:
        for average in self.by_decay.values():
            average.close()


class TestCurve(Callback):
    """Callback: recall@20 on data.test every `every` epochs, against training wall clock (excluding
    the evaluations themselves). With parameter averages, each is ranked too; `headline` (None: the
    trained parameters, else a decay) gives the point's recall@20 / ndcg@20."""

    def __init__(self, model, graph, data, every: int, chunk_size: int, averages: Averages | None = None,
                 headline: float | None = None):
        self.model, self.graph, self.data, self.every, self.chunk = model, graph, data, every, chunk_size
        self.averages, self.headline = averages, headline
        self.points: list[dict] = []
        self.train_seconds = 0.0

    def rank_all(self, trained: dict | None = None) -> dict:
        """{None: metrics of the trained parameters (`trained` if already ranked), decay: that average's}"""
        out = {None: trained or rank(self.model, self.graph, self.data, self.chunk)}
        for d in self.averages.by_decay if self.averages else ():
            with self.averages.swapped(d):
                out[d] = rank(self.model, self.graph, self.data, self.chunk)
        return out

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.train_seconds += logs["epoch_seconds"]
        if self.every and epoch % self.every == 0:
            ranked = self.rank_all()
            m = ranked[self.headline]
            point = {"epoch": epoch, "train_seconds": round(self.train_seconds, 1),
                     "recall@20": round(m["recall@20"], 5), "ndcg@20": round(m["ndcg@20"], 5)}
            for d, m in ranked.items():
                point["raw" if d is None else f"ema{d}"] = [round(m["recall@20"], 5), round(m["ndcg@20"], 5)]
            self.points.append(point)
            print(self.points[-1], flush=True)

    def first_reaching(self, target: float):
        return next((p["train_seconds"] for p in self.points if p["recall@20"] >= target), None)


def reference_loss(users, items, adj, u, p, n, l2: float = 1e-4, layers: int = 3):
    """A batch's loss with LightGCN-PyTorch's semantics (gpu times it): autograd through
    `layers` products with the COO adjacency, the mean of the layers, BPR with one negative per positive,
    L2 on the batch's layer-0 rows."""
    e = total = torch.cat([users, items])
    for _ in range(layers):
        e = torch.sparse.mm(adj, e)
        total = total + e
    final = total / (layers + 1)
    fu, fi = final[: len(users)], final[len(users):]
    loss = torch.nn.functional.softplus((fu[u] * fi[n]).sum(1) - (fu[u] * fi[p]).sum(1)).mean()
    reg = 0.5 * (users[u].pow(2).sum() + items[p].pow(2).sum() + items[n].pow(2).sum()) / len(u)
    return loss + l2 * reg


def best_evaluation(points: list[dict]) -> dict | None:
    """The paper's own epoch choice applied to a test curve: the evaluation with the highest recall@20
    (its NDCG@20 and training seconds with it). Only meaningful for curves on test.txt."""
    if not points:
        return None
    best = max(points, key=lambda p: p["recall@20"])
    return {"epoch": best["epoch"], "recall@20": best["recall@20"], "ndcg@20": best["ndcg@20"],
            "train_seconds": best["train_seconds"], "evaluations": len(points), "rule": PAPER_RULE}


def validated_budget(curve: list[dict], series: str) -> tuple[int, str]:
    """(epochs, how): the validation curve's best epoch by recall@20 of `series` ("raw" or "ema<decay>",
    else the curve's headline), carried over in optimizer steps: the validation run trains on
    1 - HELD_OUT of train.txt, so the same number of steps is that share of its epochs on all of it."""
    def recall(point):
        return point[series][0] if series in point else point["recall@20"]

    best = max(curve, key=recall)
    epochs = max(1, round(best["epoch"] * (1 - HELD_OUT)))
    return epochs, (f"best validation epoch {best['epoch']} (recall@20 {recall(best):.4f}, {series}) x "
                    f"{1 - HELD_OUT:g} (the validation run's share of train.txt, so the same optimizer steps) "
                    f"= {epochs} epochs")
