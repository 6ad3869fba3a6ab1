"""PinSage (family pinsage) on Gowalla with mini-batch training, against MF's published figure.

The paper protocol of bench/gowalla.py, as bench/mf.py runs it: (A) each candidate recipe (objective,
negatives, lr, L2, width, depth, user sample) on the validation split (90% of train.txt trains), stopped
after --patience epochs without a better validation recall@20 or at its cap; the best one's best epoch
is carried over to all of train.txt in optimiser steps; (B) that recipe on all of train.txt for that
budget, test.txt ranked once, beside MF's published figure (NGCF paper). test.txt chooses nothing.

Training is recsys.train.fit with the model built through the family registry (model.family=pinsage):
each batch convolves only its positives, negatives and a sample of at most `user_items` of each user's
other items, through their sampled random-walk neighbourhoods (recsys/models/pinsage.py).

Speed (--speed-batches N > 0): N batches of the families bench's Gowalla setting (batch 2048, one
uniform negative, hinge, 2 layers, dim 64) timed two ways on the same model and neighbourhoods: the
mini-batch loss, and the full-graph loss as the family computed it before (every item convolved and every
user's items summed for every batch), here through today's layers (each layer's whole-catalogue pooling
kept for the epoch), each scaled to seconds per epoch of train.txt. The implementation before mini-batches
(DGL message passing) is slower than that full-graph path; the results' notes give its figure.

The recorded run's commands (two sessions, stages reused by --resume, --train-ahead and --curve-from-log)
are in bench/README.md.
"""
from __future__ import annotations

import json
import time

from bench import gowalla as gw
from bench.common import RESULTS, command, peak_rss_mb, write_results
from bench.gowalla import PUBLISHED_MF, SEED, load
from recsys.train import Callback

# Candidate recipes compared on Gowalla's validation split: the sampled softmax, then each variant as
# what it changes.
SOFTMAX = {"loss": "softmax", "temperature": 0.1, "sampler": "uniform", "per_positive": 16, "candidates": 32,
           "lr": 0.005, "l2": 1e-4, "dim": 64, "layers": 2, "user_items": 16, "batch_size": 8192,
           "about": "sampled softmax (temperature 0.1) over 16 uniform negatives, lr 0.005, L2 1e-4"}
HARD = {"sampler": "model", "per_positive": 8, "candidates": 64}
RECIPES = {
    "softmax": SOFTMAX,
    "hinge": {**SOFTMAX, "loss": "hinge", "per_positive": 4,
              "about": "PinSage's max-margin hinge (margin 0.5) over 4 uniform negatives, lr 0.005, L2 1e-4"},
    "bpr_hard": {**SOFTMAX, "loss": "bpr", **HARD,
                 "about": "BPR over the 8 hardest of 64 uniform candidates by the model's score (bench/mf.py's "
                          "'hard' sampler), lr 0.005, L2 1e-4"},
    "hinge_hard": {**SOFTMAX, "loss": "hinge", **HARD,
                   "about": "the hinge over the 8 hardest of 64 uniform candidates by the model's score, lr 0.005, "
                            "L2 1e-4"},
    "softmax_1layer": {**SOFTMAX, "layers": 1, "about": "the softmax recipe with one layer"},
    "softmax_u32": {**SOFTMAX, "user_items": 32, "about": "the softmax recipe with user_items 32"},
    "softmax_lr02": {**SOFTMAX, "lr": 0.02, "about": "the softmax recipe with lr 0.02"},
    "softmax_b2048": {**SOFTMAX, "batch_size": 2048, "about": "the softmax recipe with batches of 2048 (4x the steps)"},
    "softmax_hard": {**SOFTMAX, **HARD,
                     "about": "sampled softmax (temperature 0.1) over the 8 hardest of 64 uniform candidates by the "
                              "model's score, lr 0.005, L2 1e-4"},
    "softmax_free": {**SOFTMAX, "unit_items": False,
                     "about": "the softmax recipe with item vectors of free length (no final normalisation)"},
    "softmax_free_n64": {**SOFTMAX, "unit_items": False, "per_positive": 64,
                         "about": "softmax_free over 64 uniform negatives"},
    "softmax_user": {**SOFTMAX, "user_embedding": True,
                     "about": "the softmax recipe with a learned vector per user added to the mean of their items"},
}
REFRESHES_PER_BATCHES = 5  # model sampler: the model's scores recomputed every 5 batches


def model_config(recipe: dict):
    from recsys.config import RunConfig

    return RunConfig.model_validate({"model": {
        "family": "pinsage", "dim": recipe["dim"], "layers": recipe["layers"],
        "pinsage": {"user_items": recipe["user_items"], "user_embedding": recipe.get("user_embedding", False),
                    "unit_items": recipe.get("unit_items", True),
                    "pairwise_loss": "bpr" if recipe["loss"] == "bpr" else "hinge"}}}).model


def train_config(recipe: dict, epochs: int, threads: int):
    from recsys.config import TrainConfig

    return TrainConfig(
        epochs=epochs, batch_size=recipe["batch_size"], max_steps_per_epoch=None, lr=recipe["lr"], l2=recipe["l2"],
        seed=SEED,
        progress=False, loss="softmax" if recipe["loss"] == "softmax" else "bpr", temperature=recipe["temperature"],
        negatives={"kind": recipe["sampler"], "per_positive": recipe["per_positive"],
                   "candidates": recipe["candidates"],
                   "refresh_every": recipe["per_positive"] * REFRESHES_PER_BATCHES})


def build(recipe: dict, graph):
    from recsys.models import build_model

    return build_model(model_config(recipe), graph, seed=SEED)


def validation_run(name: str, recipe: dict, max_epochs: int, patience: int, threads: int) -> dict:
    """Step A for one recipe: the validation recall@20 / NDCG@20 curve, one point per epoch."""
    return gw.validation_run(name, recipe, lambda graph: build(recipe, graph),
                             train_config(recipe, max_epochs, threads), patience, digits=1, at_cap="at the epoch cap")


SNAPSHOTS = RESULTS / ".cache" / "pinsage_gowalla_full"


def snapshot_key(recipe: dict, threads: int) -> str:
    """A folder name for one recipe's run on all of train.txt (its settings, so another recipe never reuses it)."""
    import hashlib

    settings = json.dumps(gw.settings_of(recipe) | {"threads": threads}, sort_keys=True)
    return hashlib.sha1(settings.encode()).hexdigest()[:12]


class Snapshots(Callback):
    """Callback: the model's state and the epoch's figures after every epoch, under SNAPSHOTS/<key>/."""

    def __init__(self, model, folder):
        self.model, self.folder = model, folder
        folder.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        import torch

        torch.save(self.model.state_dict(), self.folder / f"epoch{epoch}.pt")
        (self.folder / f"epoch{epoch}.json").write_text(json.dumps(logs))


def train_ahead(recipe: dict, epochs: int, threads: int) -> None:
    """All of train.txt for `epochs` epochs, a snapshot after each, test.txt not read: step B's
    training done before step A has chosen the budget (fit's trajectory up to epoch E does not
    depend on the epoch cap: no lr schedule, no evaluation without a validation split, every epoch
    seeded by its number), so step B can rank the snapshot at the chosen budget."""
    from recsys.config import EvalConfig
    from recsys.train import fit

    data, graph = load(explore=False)
    model = build(recipe, graph)
    fit(model, graph, data, train_config(recipe, epochs, threads), EvalConfig(ks=[20]),
        callbacks=[Snapshots(model, SNAPSHOTS / snapshot_key(recipe, threads))])


def validation_from_log(name: str, recipe: dict, log_path: str, patience: int) -> dict:
    """Step A's record for a validation run stopped by hand before its cap (the session's time, or a
    recipe that had collapsed): its curve read back from the points its TestCurve printed, one line an
    epoch, as in the log."""
    import ast

    points = [ast.literal_eval(line) for line in open(log_path) if line.startswith("{'epoch'")]
    if not points:
        raise SystemExit(f"{log_path}: no validation points")
    best = max(points, key=lambda p: p["recall@20"])
    seconds = [b["train_seconds"] - a["train_seconds"] for a, b in zip([{"train_seconds": 0.0}] + points, points)]
    return {"recipe": name, "settings": gw.settings_of(recipe),
            "best_epoch": best["epoch"], "best_recall@20": best["recall@20"], "best_ndcg@20": best["ndcg@20"],
            "epochs_run": len(points), "max_epochs": len(points),
            "stopped": f"by hand after {len(points)} epoch(s), before its cap (curve read from its log)",
            "epoch_seconds": round(sum(seconds) / len(seconds), 1), "wall_seconds": points[-1]["train_seconds"],
            "curve": [{k: p[k] for k in gw.CURVE_KEYS} for p in points]}


def test_run(recipe: dict, epochs: int, threads: int) -> dict:
    """Step B: all of train.txt for the validated budget, then test.txt ranked once. Where --train-ahead
    left snapshots of this recipe up to that epoch, the training is theirs (see train_ahead)."""
    import torch

    from recsys.config import EvalConfig
    from recsys.train import fit

    data, graph = load(explore=False)
    model = build(recipe, graph)
    folder = SNAPSHOTS / snapshot_key(recipe, threads)
    ahead = all((folder / f"epoch{e}.json").exists() for e in range(1, epochs + 1))
    if ahead and (folder / f"epoch{epochs}.pt").exists():
        history = [json.loads((folder / f"epoch{e}.json").read_text()) for e in range(1, epochs + 1)]
        model.load_state_dict(torch.load(folder / f"epoch{epochs}.pt"))
        model.on_epoch_start(graph, epochs)  # the neighbourhoods that epoch trained with
        trained = f"snapshot after epoch {epochs} of a --train-ahead run ({folder.name})"
        wall = sum(h["epoch_seconds"] for h in history)
    else:
        t0 = time.perf_counter()
        result = fit(model, graph, data, train_config(recipe, epochs, threads), EvalConfig(ks=[20]))
        history, trained, wall = result.history, "trained here", time.perf_counter() - t0
    return gw.ranked_once(model, graph, data, history, wall, digits=1, trained=trained)


def full_graph_loss(model, graph, users, pos, neg):
    """The loss as the family computed it before mini-batches: every item convolved and every user's
    items summed, for every batch (the positive then taken out of its user's mean)."""
    items = model.item_vectors(graph)
    sums, counts = model._user_sums(graph, items)
    u = (sums[users] - items[pos]) / (counts[users] - 1).clamp(min=1)
    return model.ranking_loss(u, items[pos], items[neg])


def speed(batches: int, threads: int) -> dict:
    """Seconds per epoch of train.txt, mini-batch against full-graph, at the families bench's setting."""
    import numpy as np
    import torch

    data, graph = load(explore=False)
    setting = {**RECIPES["hinge"], "per_positive": 1, "batch_size": 2048, "lr": 0.001, "user_items": 32}
    model = build(setting, graph)
    model.set_objective("bpr")
    model.on_epoch_start(graph, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=setting["lr"])
    rng = np.random.default_rng(0)
    out = {}
    for way in ("minibatch", "full_graph"):
        seconds = []
        for _ in range(batches):
            t0 = time.perf_counter()
            batch = data.train[rng.integers(len(data.train), size=setting["batch_size"])]
            users, pos = torch.from_numpy(batch[:, 0]), torch.from_numpy(batch[:, 1])
            neg = torch.from_numpy(rng.integers(data.n_items, size=(len(batch), 1)))
            loss = (model.batch_loss(graph, users, pos, neg)[0] if way == "minibatch"
                    else full_graph_loss(model, graph, users, pos, neg))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seconds.append(time.perf_counter() - t0)
        per_batch = float(np.median(seconds))
        out[way] = {"batch_seconds_median": round(per_batch, 3),
                    "epoch_seconds": round(per_batch * -(-len(data.train) // setting["batch_size"]), 1)}
    out["setting"] = ("batch 2048, one uniform negative, hinge, 2 layers, dim 64, user_items 32 (mini-batch); "
                      f"median of {batches} Adam steps each, scaled to {-(-len(data.train) // 2048)} steps an epoch; "
                      "neighbourhood drawing (once an epoch) not counted")
    out["speedup"] = round(out["full_graph"]["epoch_seconds"] / out["minibatch"]["epoch_seconds"], 1)
    return out


def main(argv: list[str] | None = None) -> None:
    p = gw.protocol_parser(__doc__, "pinsage_gowalla", RECIPES, ["softmax"], max_epochs=12, patience=3)
    p.add_argument("--curve-from-log", nargs="*", default=[], metavar="RECIPE=LOG",
                   help="a recipe's validation run that was stopped by hand before its cap: its curve as its log "
                        "printed it (one point an epoch) stands for step A's run, its cap the epochs it ran")
    p.add_argument("--validate-only", action="store_true", help="step A only (no test.txt, no results file)")
    p.add_argument("--train-ahead", type=int, default=0, metavar="EPOCHS",
                   help="only train the first recipe on all of train.txt for EPOCHS epochs, a snapshot after each, "
                        "test.txt not read; a later step B ranks the snapshot at the validated budget")
    p.add_argument("--speed-batches", type=int, default=10,
                   help="batches timed each way for mini-batch against full-graph seconds per epoch (0: skip)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    protocol = gw.Protocol(p, args, "pinsage_gowalla", RECIPES)
    if args.train_ahead:
        train_ahead(RECIPES[args.recipes[0]], args.train_ahead, args.threads)
        return

    for item in args.curve_from_log:  # step A's record of a run stopped by hand, in place of its stage
        name, _, log_path = item.partition("=")
        if name not in protocol.caps:
            p.error(f"--curve-from-log {item}: want RECIPE=LOG with RECIPE one of {', '.join(protocol.caps)}")
        record = validation_from_log(name, RECIPES[name], log_path, args.patience)
        protocol.caps[name] = record["max_epochs"]
        protocol.stages.done[f"valid_{name}"] = {"inputs": protocol.inputs(name), "output": record}
    validation = protocol.validate(lambda name, recipe, cap: validation_run(name, recipe, cap, args.patience,
                                                                            args.threads))
    if args.validate_only:
        return
    chosen, recipe, budget, how, test = protocol.test(validation,
                                                      lambda recipe, budget: test_run(recipe, budget, args.threads))
    timing = None
    if args.speed_batches > 0:
        timing = protocol.stages.run("speed", {"batches": args.speed_batches, "threads": args.threads},
                                     lambda: speed(args.speed_batches, args.threads))

    choice = gw.choice(chosen, recipe, validation, how, among=" among ")
    reached = test["recall@20"] >= PUBLISHED_MF["recall@20"]
    figures = {
        **gw.headline_figures(test, budget),
        "reaches_published_mf_recall@20": reached,
        "epoch_seconds": test["epoch_seconds"],
        "speed": timing,
        "machine_note": args.machine_note or None,
        "budget_chosen_on": choice,
        "settings": {"score": "dot", "seed": SEED, "num_neighbors": 10, "num_walks": 50, "restart_prob": 0.5,
                     "pooling": "importance", "refresh_every_batches": REFRESHES_PER_BATCHES,
                     **gw.settings_of(recipe)},
        "gowalla_validation": validation,
        "gowalla_test": test,
        "this_invocation_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "command": command("pinsage_gowalla", argv),
    }
    rows = [("Gowalla PinSage recall@20 / NDCG@20 (test.txt, validated budget)",
             f"{test['recall@20']:.4f} / {test['ndcg@20']:.4f}"), gw.PUBLISHED_ROW,
            ("reaches MF's published recall@20", "yes" if reached else "no"),
            ("budget (epochs on all of train.txt)", f"{budget} ({how})"),
            ("recipe chosen on validation", f"{chosen['recipe']}: {recipe['about']}"),
            *gw.validation_rows(validation, "validation, "),
            ("PinSage seconds per epoch (all of train.txt, chosen recipe)", f"{test['epoch_seconds']:.1f}")]
    if timing:
        rows.append(("seconds per epoch at batch 2048, 1 uniform negative: mini-batch / full-graph (before)",
                     f"{timing['minibatch']['epoch_seconds']:.1f} / {timing['full_graph']['epoch_seconds']:.1f} "
                     f"({timing['speedup']}x)"))
    notes = ("Gowalla: the paper's split; ranking over all 40,981 items with training items masked; no item "
             "features, so layer 0 is learned ID embeddings. Neighbourhoods: T = 10 most visited of 50 random walks "
             "(restart 0.5, 3 traversals), redrawn every epoch. Recipe and budget: " + choice
             + " Validation curves: JSON `gowalla_validation`."
             + (f" Speed: {timing['setting']}." if timing else "")
             + (f" Machine: {args.machine_note}." if args.machine_note else ""))
    write_results(args.name, figures, rows, "PinSage (mini-batch) on Gowalla, against MF's published figure",
                  notes=notes)


if __name__ == "__main__":
    main()
