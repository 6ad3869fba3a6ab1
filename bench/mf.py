"""Matrix factorisation (family mf) on Gowalla and ML-100K, beside LightGCN.

Gowalla, the paper's protocol with the budget chosen on validation: (A) for each candidate recipe
(sampler, lr, L2), MF trains on 90% of train.txt (bench.lightgcn_gowalla.explore_split: random pairs,
seed 0) and ranks the held-out 10% every epoch (all items, training items masked); a run stops after
--patience epochs without a better validation recall@20 or at --max-epochs. The recipe with the best
validation recall@20 wins, and its best epoch is carried over to all of train.txt in optimiser steps
(bench.lightgcn_gowalla.validated_budget: epochs x 0.9). (B) MF trains on all of train.txt for that
budget with that recipe and ranks test.txt once: recall@20, NDCG@20. test.txt chooses nothing.
Beside it: the NGCF paper's MF figure (recall@20 0.1291, NDCG@20 0.1109) and graphrec's LightGCN
headline (bench/results/lightgcn_gowalla.json).

ML-100K: graphrec's loader with a seeded per-user random split (valid 0.1, test 0.1, seed 0); MF and
LightGCN (3 layers) with the same recipe (default: bench/families.py's ML-100K setting, uniform, lr 0.005,
L2 1e-4; --ml100k-recipe gowalla: the one chosen on Gowalla's validation split), early stopping on
validation recall@20 (best state kept), test recall@20 / NDCG@20 side by side.

Seconds per epoch: MF's mean training seconds per epoch on all of train.txt (step B); with
--lightgcn-epochs N > 0, LightGCN's over N epochs with the same recipe, and the ratio.

Every model is built through the family registry (recsys.models.build_model, model.family=mf or
lightgcn) and trained by recsys.train.fit. Dim 64, batch 2048, torch threads 2.

The recorded run (bench/results/mf.json; to fit the time available, validation runs capped at 30 epochs,
the hard-negative one at 20; it ran in three invocations, the later ones with --resume, reusing the stages
already finished, the last adding LightGCN's 2 epochs and --machine-note):

    OMP_WAIT_POLICY=PASSIVE ./dev.sh python -m bench.mf --max-epochs 30 --max-epochs-for hard=20 \\
        --lightgcn-epochs 2

OMP_WAIT_POLICY=PASSIVE changes no figure: it stops torch's idle OpenMP threads from spinning, which on
2 cores shared with another torch process made epochs up to 10x slower. Other forms:

    ./dev.sh python -m bench.mf --lightgcn-epochs 0   # without LightGCN's seconds per epoch on Gowalla
    ./dev.sh python -m bench.mf --resume              # reuse the stages an interrupted run finished
    ./dev.sh python -m bench.mf --help
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import RESULTS, SHARED_DATA, Stages, epoch_caps, peak_rss_mb, write_results
from recsys.train import Callback

# The candidate recipes compared on Gowalla's validation split (dim 64, batch 2048 for all).
RECIPES = {
    "uniform": {"sampler": "uniform", "per_positive": 1, "candidates": 32, "lr": 0.001, "l2": 1e-4,
                "about": "the NGCF/LightGCN papers' setting: one uniform negative, lr 0.001, L2 1e-4"},
    "hard": {"sampler": "model", "per_positive": 8, "candidates": 64, "lr": 0.002, "l2": 1e-3,
             "about": "the LightGCN headline's recipe: 8 hardest of 64 uniform candidates by the model's "
                      "score, lr 0.002, L2 1e-3"},
}
# ML-100K's default recipe: bench/families.py's ML-100K settings (its LightGCN row is then comparable). The model
# sampler's rejection of training items is slow on ML-100K's dense rows (about 20 s an epoch on 2 cores).
ML100K_RECIPE = {"sampler": "uniform", "per_positive": 1, "candidates": 32, "lr": 0.005, "l2": 1e-4,
                 "about": "bench/families.py's ML-100K setting: one uniform negative, lr 0.005, L2 1e-4"}
PUBLISHED_MF = {"recall@20": 0.1291, "ndcg@20": 0.1109,
                "source": "NGCF (Wang et al., SIGIR 2019), Table 2, MF on Gowalla; repeated in LightGCN's Table 4"}
LIGHTGCN_HEADLINE = RESULTS / "lightgcn_gowalla.json"
LIGHTGCN_VALIDATION = RESULTS / "explore_m64x8_l2_1e-3.json"  # the validation run that chose the headline's settings
SEED = 2020  # Gowalla runs: the seed of bench.lightgcn_gowalla's runs


def model_config(family: str, layers: int = 3):
    """The `model` section of a run configuration for a registered family (dim 64)."""
    from recsys.config import RunConfig

    return RunConfig.model_validate({"model": {"family": family, "dim": 64, "layers": layers}}).model


def train_config(recipe: dict, epochs: int, seed: int, threads: int, **extra):
    from recsys.config import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=2048, max_steps_per_epoch=None,  # the recorded runs' exact mode
                       lr=recipe["lr"], l2=recipe["l2"], seed=seed, progress=False,
                       negatives={"kind": recipe["sampler"], "per_positive": recipe["per_positive"],
                                  "candidates": recipe["candidates"]}, **extra)


def curve_callback(model, graph, data):
    """bench.lightgcn_gowalla.TestCurve: ranks data.test every epoch (here the validation split)."""
    from bench.lightgcn_gowalla import TestCurve

    return TestCurve(model, graph, data, every=1, chunk_size=1024)


class PatienceOnCurve(Callback):
    """Callback after a bench.lightgcn_gowalla.TestCurve: ends training (StopTraining) once `patience`
    evaluations in a row brought no better recall@20."""

    def __init__(self, curve, patience: int):
        self.curve, self.patience = curve, patience

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        from recsys.train import StopTraining

        points = self.curve.points
        best = max(range(len(points)), key=lambda i: points[i]["recall@20"])
        if len(points) - 1 - best >= self.patience:
            raise StopTraining


def gowalla(explore: bool):
    """(data, graph): Gowalla's paper split, or with --explore's validation split in place of test.txt."""
    from bench.lightgcn_gowalla import explore_split
    from recsys.data.loaders import load_gowalla
    from recsys.graph.build import build_graph

    data = load_gowalla(SHARED_DATA / "gowalla").indexed()
    if explore:
        data = explore_split(data)
    return data, build_graph(data)


def mean_epoch_seconds(result) -> float:
    return sum(h["epoch_seconds"] for h in result.history) / len(result.history)


def gowalla_validation(name: str, recipe: dict, max_epochs: int, patience: int, threads: int) -> dict:
    """Step A for one recipe: the validation recall@20 / NDCG@20 curve, one point per epoch."""
    from recsys.config import EvalConfig
    from recsys.models import build_model
    from recsys.train import fit

    data, graph = gowalla(explore=True)
    model = build_model(model_config("mf"), graph, seed=SEED)
    curve = curve_callback(model, graph, data)
    t0 = time.perf_counter()
    result = fit(model, graph, data, train_config(recipe, max_epochs, SEED, threads), EvalConfig(ks=[20]),
                 callbacks=[curve, PatienceOnCurve(curve, patience)])
    best = max(curve.points, key=lambda p: p["recall@20"])
    return {"recipe": name, "settings": {k: v for k, v in recipe.items() if k != "about"},
            "best_epoch": best["epoch"], "best_recall@20": best["recall@20"], "best_ndcg@20": best["ndcg@20"],
            "epochs_run": result.epochs_run, "stopped": "early (patience)" if result.epochs_run < max_epochs
            else "at --max-epochs", "epoch_seconds": round(mean_epoch_seconds(result), 2),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "curve": [{k: p[k] for k in ("epoch", "train_seconds", "recall@20", "ndcg@20")} for p in curve.points]}


def gowalla_test(recipe: dict, epochs: int, threads: int) -> dict:
    """Step B: all of train.txt for the validated budget, then test.txt ranked once."""
    from bench.lightgcn_gowalla import rank
    from recsys.config import EvalConfig
    from recsys.models import build_model
    from recsys.train import fit

    data, graph = gowalla(explore=False)
    model = build_model(model_config("mf"), graph, seed=SEED)
    t0 = time.perf_counter()
    result = fit(model, graph, data, train_config(recipe, epochs, SEED, threads), EvalConfig(ks=[20]))
    t1 = time.perf_counter()
    m = rank(model, graph, data, 1024)
    return {"recall@20": round(m["recall@20"], 5), "ndcg@20": round(m["ndcg@20"], 5), "epochs": epochs,
            "epoch_seconds": round(mean_epoch_seconds(result), 2),
            "epoch_seconds_each": [round(h["epoch_seconds"], 2) for h in result.history],
            "eval_seconds": round(time.perf_counter() - t1, 2), "wall_seconds": round(t1 - t0, 1),
            "loss_by_epoch": [round(h["loss"], 5) for h in result.history]}


def lightgcn_epoch_seconds(recipe: dict, epochs: int, threads: int) -> dict:
    """LightGCN (3 layers) trained for a few epochs on all of train.txt with the same recipe: its
    seconds per epoch only (no evaluation)."""
    from recsys.config import EvalConfig
    from recsys.models import build_model
    from recsys.train import fit

    data, graph = gowalla(explore=False)
    graph.norm_adj()
    model = build_model(model_config("lightgcn", layers=3), graph, seed=SEED)
    result = fit(model, graph, data, train_config(recipe, epochs, SEED, threads), EvalConfig(ks=[20]))
    return {"epochs": epochs, "epoch_seconds": round(mean_epoch_seconds(result), 2),
            "wall_seconds": round(result.seconds, 1),
            "epoch_seconds_each": [round(h["epoch_seconds"], 2) for h in result.history]}


def ml100k_case(family: str, recipe: dict, max_epochs: int, patience: int, threads: int,
                data_path: Path | None = None) -> dict:
    """One family on ML-100K: seeded random split, early stopping on validation recall@20, test figures."""
    from recsys.config import RunConfig
    from recsys.data.loaders import load_data
    from recsys.models import build_model
    from recsys.prepare import prepare
    from recsys.train import evaluate_model, fit

    cfg = RunConfig.model_validate({
        "data": {"source": "ml-100k", "path": str(data_path or SHARED_DATA / "ml-100k"),
                 "split": {"kind": "random", "valid_fraction": 0.1, "test_fraction": 0.1, "seed": 0}},
        "features": {"enabled": False},
        "model": {"family": family, "dim": 64, "layers": 3},
        "eval": {"ks": [20]},
        "stores": {"root": str(RESULTS / ".cache")},
    })
    cfg = cfg.model_copy(update={"train": train_config(recipe, max_epochs, 0, threads, eval_every=1,
                                                       patience=patience, monitor="recall@20")})
    prepared = prepare(load_data(cfg.data), cfg)
    model = build_model(cfg.model, prepared.graph, seed=cfg.train.seed)
    t0 = time.perf_counter()
    result = fit(model, prepared.graph, prepared.indexed, cfg.train, cfg.eval)
    wall = time.perf_counter() - t0
    m = evaluate_model(model, prepared.graph, prepared.indexed, "test", cfg.eval)
    return {"family": family, "recall@20": round(m["recall@20"], 5), "ndcg@20": round(m["ndcg@20"], 5),
            "best_epoch": result.best_epoch, "best_valid_recall@20": round(result.best_score, 5),
            "epochs_run": result.epochs_run, "epoch_seconds": round(mean_epoch_seconds(result), 3),
            "wall_seconds": round(wall, 1),
            "valid_curve": [[h["epoch"], round(h["valid_recall@20"], 5)] for h in result.history
                            if "valid_recall@20" in h]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Candidate recipes (chosen between on Gowalla's validation split): "
                                       + "; ".join(f"{k}: {v['about']}" for k, v in RECIPES.items()))
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                   help="candidate recipes compared on the validation split (default: all)")
    p.add_argument("--max-epochs", type=int, default=60, help="validation runs: most epochs (default 60)")
    p.add_argument("--max-epochs-for", nargs="*", default=[], metavar="RECIPE=N",
                   help="a recipe's own cap on its validation run, instead of --max-epochs (e.g. hard=20)")
    p.add_argument("--patience", type=int, default=5,
                   help="validation runs: stop after this many epochs without a better recall@20 (default 5)")
    p.add_argument("--ml100k-epochs", type=int, default=300, help="ML-100K: most epochs (default 300)")
    p.add_argument("--ml100k-patience", type=int, default=10,
                   help="ML-100K: evaluations (one per epoch) without a better validation recall@20 (default 10)")
    p.add_argument("--ml100k-recipe", choices=["families", "gowalla"], default="families",
                   help="ML-100K's recipe for both families: bench/families.py's (uniform, lr 0.005, L2 1e-4; "
                        "default) or the one chosen on Gowalla's validation split (its hard negatives are slow on "
                        "ML-100K's dense rows)")
    p.add_argument("--lightgcn-epochs", type=int, default=2,
                   help="LightGCN epochs on Gowalla for its seconds per epoch (0: skip; default 2)")
    p.add_argument("--resume", action="store_true", help="reuse stages finished by an earlier run with the same "
                                                         "inputs (bench/results/.cache/mf_stages.json)")
    p.add_argument("--name", default="mf", help="results file name (default mf)")
    p.add_argument("--machine-note", default="",
                   help="what else ran on the machine meanwhile (recorded with the seconds per epoch)")
    args = p.parse_args(argv)

    import torch

    from bench.lightgcn_gowalla import VALIDATION, validated_budget

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    stages = Stages("mf", args.resume)
    caps = epoch_caps(p, args.recipes, args.max_epochs, args.max_epochs_for)

    # Step A: every recipe on the validation split; the best validation recall@20 chooses recipe and budget.
    validation = {name: stages.run(f"gowalla_valid_{name}", {"max_epochs": caps[name], "patience": args.patience,
                                                             "threads": args.threads, **RECIPES[name]},
                                   lambda name=name: gowalla_validation(name, RECIPES[name], caps[name],
                                                                        args.patience, args.threads))
                  for name in args.recipes}
    for name, v in validation.items():
        v["max_epochs"] = caps[name]
    chosen = max(validation.values(), key=lambda v: v["best_recall@20"])
    recipe = RECIPES[chosen["recipe"]]
    budget, how = validated_budget(chosen["curve"], "raw")

    # Step B: all of train.txt for that budget, test.txt ranked once.
    test = stages.run("gowalla_test", {"epochs": budget, "threads": args.threads, **recipe},
                      lambda: gowalla_test(recipe, budget, args.threads))
    lightgcn_speed = None
    if args.lightgcn_epochs > 0:
        lightgcn_speed = stages.run("gowalla_lightgcn_speed",
                                    {"epochs": args.lightgcn_epochs, "threads": args.threads, **recipe},
                                    lambda: lightgcn_epoch_seconds(recipe, args.lightgcn_epochs, args.threads))

    ml_recipe = recipe if args.ml100k_recipe == "gowalla" else ML100K_RECIPE
    ml = {family: stages.run(f"ml100k_{family}", {"epochs": args.ml100k_epochs, "patience": args.ml100k_patience,
                                                  "threads": args.threads, **ml_recipe},
                             lambda family=family: ml100k_case(family, ml_recipe, args.ml100k_epochs,
                                                               args.ml100k_patience, args.threads))
          for family in ("mf", "lightgcn")}

    headline = json.loads(LIGHTGCN_HEADLINE.read_text())
    stage_seconds = round(sum(v["wall_seconds"] for v in validation.values()) + test["wall_seconds"]
                          + test["eval_seconds"] + (lightgcn_speed["wall_seconds"] if lightgcn_speed else 0)
                          + sum(r["wall_seconds"] for r in ml.values()), 1)
    lightgcn_valid = None
    if LIGHTGCN_VALIDATION.exists():  # the same validation split, so MF's curve can be read beside it
        explore = json.loads(LIGHTGCN_VALIDATION.read_text())
        top = max(explore["test_curve"], key=lambda p: p["recall@20"])
        lightgcn_valid = {"recall@20": top["recall@20"], "ndcg@20": top["ndcg@20"], "epoch": top["epoch"],
                          "source": f"bench/results/{LIGHTGCN_VALIDATION.name} ({explore['split']}; "
                                    f"{explore['command']})"}
    if lightgcn_speed:
        lightgcn_seconds = lightgcn_speed["epoch_seconds"]
        lightgcn_source = f"measured here: {lightgcn_speed['epochs']} epochs of LightGCN with the same recipe"
    else:  # not measured: the headline run's own figure (its recipe: the LightGCN headline's)
        lightgcn_seconds = headline["epoch_seconds"]
        lightgcn_source = (f"not measured here (--lightgcn-epochs 0): bench/results/{LIGHTGCN_HEADLINE.name}'s "
                           f"epoch_seconds ({headline['date']}, {headline['threads']} threads, negatives "
                           f"{headline['settings']['negatives']}, lr {headline['settings']['lr']}); another day's "
                           "machine load, so the ratio is indicative")
    settings = {k: v for k, v in recipe.items() if k != "about"}
    choice = (f"recipe '{chosen['recipe']}' ({recipe['about']}) chosen on Gowalla's validation split "
              f"({VALIDATION}) by its best validation recall@20 "
              + ", ".join(f"{v['recipe']} {v['best_recall@20']:.4f} at epoch {v['best_epoch']}"
                          for v in validation.values())
              + f"; budget: {how}. test.txt chose nothing: it was ranked once, after step B. ML-100K: one recipe for "
                f"both families ({ml_recipe['about']}), epochs chosen by early stopping on ML-100K's own validation "
                "split (recall@20).")
    figures = {
        "gowalla_recall@20": test["recall@20"],
        "gowalla_ndcg@20": test["ndcg@20"],
        "gowalla_budget_epochs": budget,
        "gowalla_published_mf_recall@20": PUBLISHED_MF["recall@20"],
        "gowalla_published_mf_ndcg@20": PUBLISHED_MF["ndcg@20"],
        "gowalla_published_mf_source": PUBLISHED_MF["source"],
        "lightgcn_gowalla_recall@20": headline["recall@20"],
        "lightgcn_gowalla_ndcg@20": headline["ndcg@20"],
        "lightgcn_gowalla_source": (f"bench/results/{LIGHTGCN_HEADLINE.name} ({headline['date']}; "
                                    f"{headline['epochs']} epochs, {headline['settings']['negatives']}, "
                                    f"{headline.get('parameters_ranked', 'trained parameters')})"),
        "lightgcn_gowalla_validation_best": lightgcn_valid,
        "ml100k_recall@20": ml["mf"]["recall@20"],
        "ml100k_ndcg@20": ml["mf"]["ndcg@20"],
        "ml100k_lightgcn_recall@20": ml["lightgcn"]["recall@20"],
        "ml100k_lightgcn_ndcg@20": ml["lightgcn"]["ndcg@20"],
        "epoch_seconds": test["epoch_seconds"],
        "lightgcn_epoch_seconds": lightgcn_seconds,
        "lightgcn_epoch_seconds_source": lightgcn_source,
        "lightgcn_over_mf_epoch_seconds": round(lightgcn_seconds / test["epoch_seconds"], 1),
        "machine_note": args.machine_note or None,
        "budget_chosen_on": choice,
        "settings": {"dim": 64, "batch_size": 2048, "loss": "bpr", "score": "dot", "seed_gowalla": SEED,
                     **settings},
        "ml100k_settings": {"dim": 64, "batch_size": 2048, "loss": "bpr", "score": "dot", "seed": 0,
                            "lightgcn_layers": 3, **{k: v for k, v in ml_recipe.items() if k != "about"}},
        "gowalla_validation": validation,
        "gowalla_test": test,
        "gowalla_lightgcn_speed": lightgcn_speed,
        "ml100k": ml,
        "total_seconds": stage_seconds,
        "total_seconds_means": ("the stages' own seconds (training, and the validation/test rankings), summed; "
                                "data loading and start-up not counted; stages reused by --resume count with "
                                "the seconds of the run that computed them"),
        "this_invocation_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "command": "./dev.sh python -m bench.mf " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    rows = [("Gowalla MF recall@20 / NDCG@20 (test.txt, validated budget)",
             f"{test['recall@20']:.4f} / {test['ndcg@20']:.4f}"),
            ("Gowalla MF, published (NGCF paper)", f"{PUBLISHED_MF['recall@20']:.4f} / {PUBLISHED_MF['ndcg@20']:.4f}"),
            ("Gowalla LightGCN, graphrec headline (lightgcn_gowalla.json)",
             f"{headline['recall@20']:.4f} / {headline['ndcg@20']:.4f}"),
            ("Gowalla MF budget (epochs on all of train.txt)", f"{budget} ({how})"),
            ("recipe chosen on validation", f"{chosen['recipe']}: {recipe['about']}")]
    rows += [(f"Gowalla validation, {v['recipe']}", f"best recall@20 {v['best_recall@20']:.4f} / NDCG@20 "
              f"{v['best_ndcg@20']:.4f} at epoch {v['best_epoch']}; {v['epochs_run']} epochs run "
              f"(cap {v['max_epochs']}), stopped {v['stopped']}; {v['epoch_seconds']:.1f} s/epoch")
             for v in validation.values()]
    if lightgcn_valid:
        rows.append(("Gowalla validation, LightGCN (same split, headline recipe; "
                     f"{LIGHTGCN_VALIDATION.name})", f"best recall@20 {lightgcn_valid['recall@20']:.4f} / NDCG@20 "
                     f"{lightgcn_valid['ndcg@20']:.4f} at epoch {lightgcn_valid['epoch']}"))
    rows.append(("Gowalla MF seconds per epoch (all of train.txt)", f"{test['epoch_seconds']:.1f}"))
    rows.append(("Gowalla LightGCN seconds per epoch" + (f" (same recipe, {lightgcn_speed['epochs']} epochs)"
                                                         if lightgcn_speed else " (lightgcn_gowalla.json)"),
                 f"{lightgcn_seconds:.1f} ({figures['lightgcn_over_mf_epoch_seconds']}x MF)"))
    for family in ("mf", "lightgcn"):
        r = ml[family]
        rows.append((f"ML-100K {family} recall@20 / NDCG@20 (test)",
                     f"{r['recall@20']:.4f} / {r['ndcg@20']:.4f} (best validation epoch {r['best_epoch']}, "
                     f"{r['epochs_run']} run, {r['epoch_seconds']:.2f} s/epoch)"))
    rows.append(("total compute (s; the stages' training and ranking)", f"{figures['total_seconds']:.0f}"))
    notes = ("Gowalla: the paper's split; ranking over all 40,981 items with training items masked. "
             "Budget and recipe: " + choice + " ML-100K: per-user random 80/10/10 split (seed 0), no features, "
             "LightGCN with 3 layers, best validation state kept. Validation curves: JSON `gowalla_validation`. "
             f"LightGCN's seconds per epoch: {lightgcn_source}."
             + (f" Machine: {args.machine_note}." if args.machine_note else ""))
    write_results(args.name, figures, rows, "Matrix factorisation (family mf) on Gowalla and ML-100K, beside LightGCN",
                  notes=notes)


if __name__ == "__main__":
    main()
