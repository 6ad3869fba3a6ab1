"""Matrix factorisation (family mf) on Gowalla and ML-100K, beside LightGCN.

Gowalla, the paper protocol of bench/gowalla.py: (A) each candidate recipe (sampler, lr, L2) on the
validation split, stopped by --patience or at its cap; the best validation recall@20 chooses recipe and
budget; (B) MF on all of train.txt for that budget, test.txt ranked once. Beside it: the NGCF paper's
MF figure and graphrec's LightGCN headline (bench/results/lightgcn_gowalla.json). ML-100K: a seeded
per-user random split, MF and LightGCN (3 layers) with one recipe, early stopping on validation
recall@20. --lightgcn-epochs N > 0: LightGCN's seconds per epoch on Gowalla with the same recipe.
Every model is built through the family registry and trained by recsys.train.fit (dim 64, batch 2048).
The recorded run's command is in bench/README.md.
"""
from __future__ import annotations

import json
import time

from bench import gowalla as gw
from bench.common import RESULTS, command, mean_epoch_seconds, peak_rss_mb, prepare_and_fit, run_config, write_results
from bench.gowalla import SEED, load, settings_of

# The candidate recipes compared on Gowalla's validation split (dim 64, batch 2048 for all).
RECIPES = {
    "uniform": {"sampler": "uniform", "per_positive": 1, "candidates": 32, "lr": 0.001, "l2": 1e-4,
                "about": "the NGCF/LightGCN papers' setting: one uniform negative, lr 0.001, L2 1e-4"},
    "hard": {"sampler": "model", "per_positive": 8, "candidates": 64, "lr": 0.002, "l2": 1e-3,
             "about": "the LightGCN headline's recipe: 8 hardest of 64 uniform candidates by the model's "
                      "score, lr 0.002, L2 1e-3"},
}
# ML-100K's default recipe: bench/families.py's ML-100K settings (its LightGCN row is then comparable). The model
# sampler's rejection of training items is slow on ML-100K's dense rows.
ML100K_RECIPE = {"sampler": "uniform", "per_positive": 1, "candidates": 32, "lr": 0.005, "l2": 1e-4,
                 "about": "bench/families.py's ML-100K setting: one uniform negative, lr 0.005, L2 1e-4"}
LIGHTGCN_HEADLINE = RESULTS / "lightgcn_gowalla.json"
LIGHTGCN_VALIDATION = RESULTS / "explore_m64x8_l2_1e-3.json"  # the validation run that chose the headline's settings


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


def lightgcn_epoch_seconds(recipe: dict, epochs: int, threads: int) -> dict:
    """LightGCN (3 layers) trained for a few epochs on all of train.txt with the same recipe: its
    seconds per epoch only (no evaluation)."""
    from recsys.config import EvalConfig
    from recsys.models import build_model
    from recsys.train import fit

    data, graph = load(explore=False)
    graph.norm_adj()
    model = build_model(model_config("lightgcn", layers=3), graph, seed=SEED)
    result = fit(model, graph, data, train_config(recipe, epochs, SEED, threads), EvalConfig(ks=[20]))
    return {"epochs": epochs, "epoch_seconds": round(mean_epoch_seconds(result.history), 2),
            "wall_seconds": round(result.seconds, 1),
            "epoch_seconds_each": [round(h["epoch_seconds"], 2) for h in result.history]}


def ml100k_case(family: str, recipe: dict, max_epochs: int, patience: int, threads: int) -> dict:
    """One family on ML-100K: seeded random split, early stopping on validation recall@20, test figures."""
    from recsys.train import evaluate_model

    cfg = run_config("ml-100k", {"family": family, "dim": 64, "layers": 3}, {}, {"seed": 0},
                     features={"enabled": False})
    cfg = cfg.model_copy(update={"train": train_config(recipe, max_epochs, 0, threads, eval_every=1,
                                                       patience=patience, monitor="recall@20")})
    prepared, model, result, wall = prepare_and_fit(cfg, seed=cfg.train.seed)
    m = evaluate_model(model, prepared.graph, prepared.indexed, "test", cfg.eval)
    return {"family": family, "recall@20": round(m["recall@20"], 5), "ndcg@20": round(m["ndcg@20"], 5),
            "best_epoch": result.best_epoch, "best_valid_recall@20": round(result.best_score, 5),
            "epochs_run": result.epochs_run, "epoch_seconds": round(mean_epoch_seconds(result.history), 3),
            "wall_seconds": round(wall, 1),
            "valid_curve": [[h["epoch"], round(h["valid_recall@20"], 5)] for h in result.history
                            if "valid_recall@20" in h]}


def build(graph):
    from recsys.models import build_model

    return build_model(model_config("mf"), graph, seed=SEED)


def gowalla_validation(name: str, recipe: dict, max_epochs: int, patience: int, threads: int) -> dict:
    """Step A for one recipe: the validation recall@20 / NDCG@20 curve, one point per epoch."""
    run = gw.validation_run(name, recipe, build, train_config(recipe, max_epochs, SEED, threads), patience)
    return {k: v for k, v in run.items() if k != "loss_by_epoch"}


def gowalla_test(recipe: dict, epochs: int, threads: int) -> dict:
    """Step B: all of train.txt for the validated budget, then test.txt ranked once."""
    from recsys.config import EvalConfig
    from recsys.train import fit

    data, graph = load(explore=False)
    model = build(graph)
    t0 = time.perf_counter()
    result = fit(model, graph, data, train_config(recipe, epochs, SEED, threads), EvalConfig(ks=[20]))
    return gw.ranked_once(model, graph, data, result.history, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = gw.protocol_parser(__doc__, "mf", RECIPES, list(RECIPES), max_epochs=60, patience=5)
    p.add_argument("--ml100k-epochs", type=int, default=300, help="ML-100K: most epochs (default 300)")
    p.add_argument("--ml100k-patience", type=int, default=10,
                   help="ML-100K: evaluations (one per epoch) without a better validation recall@20 (default 10)")
    p.add_argument("--ml100k-recipe", choices=["families", "gowalla"], default="families",
                   help="ML-100K's recipe for both families: bench/families.py's (default) or the one chosen on "
                        "Gowalla's validation split")
    p.add_argument("--lightgcn-epochs", type=int, default=2,
                   help="LightGCN epochs on Gowalla for its seconds per epoch (0: skip; default 2)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    protocol = gw.Protocol(p, args, "mf", RECIPES, prefix="gowalla_")
    stages = protocol.stages
    validation = protocol.validate(lambda name, recipe, cap: gowalla_validation(name, recipe, cap, args.patience,
                                                                                args.threads))
    chosen, recipe, budget, how, test = protocol.test(
        validation, lambda recipe, budget: gowalla_test(recipe, budget, args.threads))
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
    chosen_text = gw.choice(chosen, recipe, validation, how) + (
        f" ML-100K: one recipe for both families ({ml_recipe['about']}), epochs chosen by early stopping on "
        "ML-100K's own validation split (recall@20).")
    common = {"dim": 64, "batch_size": 2048, "loss": "bpr", "score": "dot"}
    figures = {
        **gw.headline_figures(test, budget),
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
        "budget_chosen_on": chosen_text,
        "settings": {**common, "seed_gowalla": SEED, **settings_of(recipe)},
        "ml100k_settings": {**common, "seed": 0, "lightgcn_layers": 3, **settings_of(ml_recipe)},
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
        "command": command("mf", argv),
    }
    rows = [("Gowalla MF recall@20 / NDCG@20 (test.txt, validated budget)",
             f"{test['recall@20']:.4f} / {test['ndcg@20']:.4f}"), gw.PUBLISHED_ROW,
            ("Gowalla LightGCN, graphrec headline (lightgcn_gowalla.json)",
             f"{headline['recall@20']:.4f} / {headline['ndcg@20']:.4f}"),
            ("Gowalla MF budget (epochs on all of train.txt)", f"{budget} ({how})"),
            ("recipe chosen on validation", f"{chosen['recipe']}: {recipe['about']}"),
            *gw.validation_rows(validation, "Gowalla validation, ")]
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
             "Budget and recipe: " + chosen_text + " ML-100K: per-user random 80/10/10 split (seed 0), no features, "
             "LightGCN with 3 layers, best validation state kept. Validation curves: JSON `gowalla_validation`. "
             f"LightGCN's seconds per epoch: {lightgcn_source}."
             + (f" Machine: {args.machine_note}." if args.machine_note else ""))
    write_results(args.name, figures, rows, "Matrix factorisation (family mf) on Gowalla and ML-100K, beside LightGCN",
                  notes=notes)


if __name__ == "__main__":
    main()
