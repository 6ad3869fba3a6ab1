"""Harness: the Gowalla paper protocol, shared by lightgcn_gowalla, mf, pinsage_gowalla and gpu.

The paper's split (train.txt / test.txt); every item ranked for every test user with their training
items masked, Recall@20 / NDCG@20; a validation split held out of train.txt at random (settings are
chosen there, test.txt chooses nothing); a callback that ranks every few epochs, with moving
averages of the parameters; and the two steps mf and pinsage_gowalla share: (A) each candidate
recipe on the validation split, stopped by patience, the best validation recall@20 choosing recipe
and budget; (B) that recipe on all of train.txt for that budget, test.txt ranked once.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import SHARED_DATA, Stages, epoch_caps, mean_epoch_seconds
from recsys.data.types import IndexedData
from recsys.metrics import evaluate
from recsys.train import Callback, ParameterAverage, StopTraining

HELD_OUT = 0.1  # share of train.txt the validation split holds out
VALIDATION = f"validation: {HELD_OUT:.0%} of train.txt held out at random (seed 0), test.txt not read"
PAPER_RULE = ("epoch chosen on test.txt as the paper's code does (NGCF/LightGCN: test recall@20 evaluated during "
              "training, early stopping on it, the best evaluation reported)")
PUBLISHED_MF = {"recall@20": 0.1291, "ndcg@20": 0.1109,
                "source": "NGCF (Wang et al., SIGIR 2019), Table 2, MF on Gowalla; repeated in LightGCN's Table 4"}
SEED = 2020  # the seed of every Gowalla run here
CURVE_KEYS = ("epoch", "train_seconds", "recall@20", "ndcg@20")


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


class PatienceOnCurve(Callback):
    """Callback after a TestCurve: ends training (StopTraining) once `patience` evaluations in a row
    brought no better recall@20."""

    def __init__(self, curve, patience: int):
        self.curve, self.patience = curve, patience

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        points = self.curve.points
        best = max(range(len(points)), key=lambda i: points[i]["recall@20"])
        if len(points) - 1 - best >= self.patience:
            raise StopTraining


def reference_loss(users, items, adj, u, p, n, l2: float = 1e-4, layers: int = 3):
    """A batch's loss with LightGCN-PyTorch's semantics (lightgcn_speed and gpu time it): autograd through
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


def settings_of(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "about"}


def validation_run(name: str, recipe: dict, build, cfg, patience: int, digits: int = 2,
                   at_cap: str = "at --max-epochs") -> dict:
    """Step A for one recipe on the validation split (the model build(graph), trained with `cfg`): the
    recall@20 / NDCG@20 curve, one point per epoch, stopped after `patience` epochs without a better
    recall@20 or at cfg.epochs."""
    from recsys.config import EvalConfig
    from recsys.train import fit

    data, graph = load(explore=True)
    model = build(graph)
    curve = TestCurve(model, graph, data, every=1, chunk_size=1024)
    t0 = time.perf_counter()
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), callbacks=[curve, PatienceOnCurve(curve, patience)])
    best = max(curve.points, key=lambda p: p["recall@20"])
    return {"recipe": name, "settings": settings_of(recipe),
            "best_epoch": best["epoch"], "best_recall@20": best["recall@20"], "best_ndcg@20": best["ndcg@20"],
            "epochs_run": result.epochs_run, "max_epochs": cfg.epochs,
            "stopped": "early (patience)" if result.epochs_run < cfg.epochs else at_cap,
            "epoch_seconds": round(mean_epoch_seconds(result.history), digits),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "loss_by_epoch": [round(h["loss"], 5) for h in result.history],
            "curve": [{k: p[k] for k in CURVE_KEYS} for p in curve.points]}


def ranked_once(model, graph, data, history: list[dict], wall: float, digits: int = 2, **extra) -> dict:
    """Step B's figures: test.txt ranked once after the training whose epochs `history` holds."""
    t1 = time.perf_counter()
    m = rank(model, graph, data)
    return {"recall@20": round(m["recall@20"], 5), "ndcg@20": round(m["ndcg@20"], 5), "epochs": len(history),
            **extra, "epoch_seconds": round(mean_epoch_seconds(history), digits),
            "epoch_seconds_each": [round(h["epoch_seconds"], digits) for h in history],
            "eval_seconds": round(time.perf_counter() - t1, digits), "wall_seconds": round(wall, 1),
            "loss_by_epoch": [round(h["loss"], 5) for h in history]}


def protocol_parser(doc: str, name: str, recipes: dict, default: list[str], max_epochs: int,
                    patience: int) -> argparse.ArgumentParser:
    """The options every two-step bench takes: recipes, epoch caps, patience, threads, resume, name."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], epilog="Candidate recipes: " + "; ".join(
        f"{k}: {v['about']}" for k, v in recipes.items()))
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--recipes", nargs="+", choices=list(recipes), default=default,
                   help="candidate recipes compared on the validation split")
    p.add_argument("--max-epochs", type=int, default=max_epochs, help="validation runs: most epochs")
    p.add_argument("--max-epochs-for", nargs="*", default=[], metavar="RECIPE=N",
                   help="a recipe's own cap on its validation run, instead of --max-epochs (e.g. hard=20)")
    p.add_argument("--patience", type=int, default=patience,
                   help="validation runs: stop after this many epochs without a better recall@20")
    p.add_argument("--resume", action="store_true", help="reuse stages finished by an earlier run with the same "
                                                         f"inputs (bench/results/.cache/{name}_stages.json)")
    p.add_argument("--name", default=name, help="results file name")
    p.add_argument("--machine-note", default="", help="what else ran on the machine meanwhile")
    return p


class Protocol:
    """Steps A and B for one bench: its stages (kept for --resume), recipes and epoch caps."""

    def __init__(self, parser, args, stage_file: str, recipes: dict, prefix: str = ""):
        torch.set_num_threads(args.threads)
        self.args, self.recipes, self.prefix = args, recipes, prefix
        self.stages = Stages(stage_file, args.resume)
        self.caps = epoch_caps(parser, args.recipes, args.max_epochs, args.max_epochs_for)

    def inputs(self, name: str) -> dict:
        return {"max_epochs": self.caps[name], "patience": self.args.patience, "threads": self.args.threads,
                **self.recipes[name]}

    def validate(self, run) -> dict:
        """Step A: run(name, recipe, cap) for every recipe, each a stage."""
        out = {name: self.stages.run(f"{self.prefix}valid_{name}", self.inputs(name),
                                     lambda name=name: run(name, self.recipes[name], self.caps[name]))
               for name in self.args.recipes}
        for name, v in out.items():
            v.setdefault("max_epochs", self.caps[name])
        return out

    def test(self, validation: dict, run) -> tuple[dict, dict, int, str, dict]:
        """Step B: (chosen validation record, its recipe, budget, how, run(recipe, budget)'s figures)."""
        chosen = max(validation.values(), key=lambda v: v["best_recall@20"])
        recipe = self.recipes[chosen["recipe"]]
        budget, how = validated_budget(chosen["curve"], "raw")
        test = self.stages.run(f"{self.prefix}test", {"epochs": budget, "threads": self.args.threads, **recipe},
                               lambda: run(recipe, budget))
        return chosen, recipe, budget, how, test


def choice(chosen: dict, recipe: dict, validation: dict, how: str, among: str = " ") -> str:
    return (f"recipe '{chosen['recipe']}' ({recipe['about']}) chosen on Gowalla's validation split ({VALIDATION}) "
            f"by its best validation recall@20{among}"
            + ", ".join(f"{v['recipe']} {v['best_recall@20']:.4f} at epoch {v['best_epoch']}"
                        for v in validation.values())
            + f"; budget: {how}. test.txt chose nothing: it was ranked once, after step B.")


def headline_figures(test: dict, budget: int) -> dict:
    return {"gowalla_recall@20": test["recall@20"], "gowalla_ndcg@20": test["ndcg@20"],
            "gowalla_budget_epochs": budget,
            **{f"gowalla_published_mf_{k}": v for k, v in PUBLISHED_MF.items()}}


def validation_rows(validation: dict, label: str) -> list[tuple[str, str]]:
    return [(f"{label}{v['recipe']}", f"best recall@20 {v['best_recall@20']:.4f} / NDCG@20 "
             f"{v['best_ndcg@20']:.4f} at epoch {v['best_epoch']}; {v['epochs_run']} epochs run "
             f"(cap {v['max_epochs']}), stopped {v['stopped']}; {v['epoch_seconds']:.1f} s/epoch")
            for v in validation.values()]


PUBLISHED_ROW = ("Gowalla MF, published (NGCF paper)", f"{PUBLISHED_MF['recall@20']:.4f} / "
                                                       f"{PUBLISHED_MF['ndcg@20']:.4f}")
