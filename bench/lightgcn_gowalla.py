"""LightGCN on Gowalla with the paper's settings, for a given epoch budget.

Paper protocol: train on train.txt, rank all 40,981 items for every test user with their training
items masked, Recall@20 / NDCG@20 on test.txt; dim 64, K = 3 layers, lr 0.001, batch 2048,
L2 1e-4, one uniform negative per positive, the whole graph re-propagated for every batch.
The paper reports Recall@20 0.1830 / NDCG@20 0.1554 after about 1000 epochs; this records where
graphrec's loop stands after the budget given here.

    ./dev.sh python -m bench.lightgcn_gowalla --epochs 20

The best run so far (bench/results/lightgcn_gowalla.json; settings and budget from the validation run
explore_m64x8_l2_1e-3, the best of the validation runs):

    ./dev.sh python -m bench.lightgcn_gowalla --sampler model --candidates 64 --per-positive 8 --lr 0.002 \\
        --l2 1e-3 --eval-every 1 --ema 0.998 --headline-ema 0.998 --chosen-on explore_m64x8_l2_1e-3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench import gowalla as gw
from bench.common import SHARED_DATA, command, mean_epoch_seconds, peak_rss_mb, write_results
from recsys.config import EvalConfig, TrainConfig
from recsys.models.lightgcn import LightGCN
from recsys.seeding import seed_everything
from recsys.train import fit


def chosen_on(name: str) -> dict:
    """What a validation (--explore) run recorded: its command and curve."""
    import json

    from bench.common import RESULTS

    record = json.loads((RESULTS / f"{name}.json").read_text())
    if record.get("split") != gw.VALIDATION and "--explore" not in record["command"]:
        raise SystemExit(f"{name} is not a validation run (--explore); settings must not be chosen on test.txt")
    return {"name": name, "split": gw.VALIDATION, "command": record["command"], "curve": record["test_curve"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=None,
                   help="epoch budget (default: from the first --chosen-on validation run, see validated_budget; "
                        "else 20)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--data", type=Path, default=SHARED_DATA / "gowalla")
    p.add_argument("--chunk-size", type=int, default=1024, help="users ranked at once in evaluation")
    p.add_argument("--lr", type=float, default=0.001, help="default: the paper's 0.001")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--max-steps-per-epoch", type=int, default=None,
                   help="train.max_steps_per_epoch: larger batches, a fixed number of steps per epoch")
    p.add_argument("--lr-batch-scaling", choices=["none", "sqrt", "linear"], default="sqrt")
    p.add_argument("--sampler", default="uniform", help="train.negatives.kind")
    p.add_argument("--per-positive", type=int, default=1)
    p.add_argument("--candidates", type=int, default=32, help="model sampler: candidates scored, hardest kept")
    p.add_argument("--loss", choices=["bpr", "softmax"], default="bpr")
    p.add_argument("--temperature", type=float, default=0.1, help="softmax loss temperature")
    p.add_argument("--score", choices=["dot", "cosine"], default="dot")
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--lr-milestones", type=int, nargs="*", default=[], help="epochs after which lr is scaled")
    p.add_argument("--lr-gamma", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=0,
                   help="rank test.txt every N epochs to record recall against wall clock (as the paper's code does)")
    p.add_argument("--seed", type=int, default=2020, help="initialisation, batch order and sampling seed")
    p.add_argument("--ema", type=float, nargs="*", default=[],
                   help="also rank with exponential moving averages of the parameters at these decays")
    p.add_argument("--headline-ema", type=float, default=None,
                   help="report the average at this decay (one of --ema) as the result instead of the trained "
                        "parameters")
    p.add_argument("--name", default="lightgcn_gowalla", help="results file name")
    p.add_argument("--chosen-on", nargs="*", default=[], metavar="NAME",
                   help="--explore result files (bench/results/NAME.json) that chose these settings; their "
                        "commands and validation curves are copied into this run's results")
    p.add_argument("--explore", action="store_true",
                   help=f"choose settings without test.txt: hold out {gw.HELD_OUT * 100:.0f}%% of train.txt (random "
                        "pairs, seed 0) and report that split everywhere test figures would go; test.txt is not read")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    chosen = [chosen_on(name) for name in args.chosen_on]  # read first: fail before training, not after
    budget_rule = "given on the command line"
    if chosen:
        series = "raw" if args.headline_ema is None else f"ema{args.headline_ema}"
        budget, how = gw.validated_budget(chosen[0]["curve"], series)
        if args.epochs is None:
            args.epochs, budget_rule = budget, how
        elif args.epochs != budget:
            budget_rule = f"given on the command line; the validation rule would give {budget} ({how})"
        else:
            budget_rule = how
    elif args.epochs is None:
        args.epochs, budget_rule = 20, "the default"
    t0 = time.perf_counter()
    data, graph = gw.load(args.explore, args.data)
    graph.norm_adj()
    load_seconds = time.perf_counter() - t0
    print(f"gowalla: {data.n_users} users, {data.n_items} items, {len(data.train)} train, {len(data.test)} test "
          f"(loaded in {load_seconds:.1f} s)")

    seed_everything(args.seed)
    model = LightGCN(data.n_users, data.n_items, dim=64, layers=3)
    model.cosine = args.score == "cosine"
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, max_steps_per_epoch=args.max_steps_per_epoch,
                      lr_batch_scaling=args.lr_batch_scaling, lr=args.lr, l2=args.l2, seed=args.seed,
                      lr_milestones=args.lr_milestones, lr_gamma=args.lr_gamma,
                      loss=args.loss, temperature=args.temperature, average=None,
                      negatives={"kind": args.sampler, "per_positive": args.per_positive,
                                 "candidates": args.candidates})
    if args.headline_ema is not None and args.headline_ema not in args.ema:
        p.error("--headline-ema must be one of the --ema decays")
    averages = gw.Averages(model, args.ema) if args.ema else None
    curve = gw.TestCurve(model, graph, data, args.eval_every, args.chunk_size, averages, args.headline_ema)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), callbacks=[curve])

    t1 = time.perf_counter()
    trained = gw.rank(model, graph, data, args.chunk_size)
    eval_seconds = time.perf_counter() - t1
    final = curve.rank_all(trained)
    metrics = final[args.headline_ema]

    epoch_seconds = mean_epoch_seconds(result.history)
    figures = {
        "epochs": args.epochs,
        "epoch_seconds": round(epoch_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "recall@20": round(metrics["recall@20"], 5),
        "ndcg@20": round(metrics["ndcg@20"], 5),
        "torch_threads": args.threads,
        "final_loss": round(result.history[-1]["loss"], 5),
        "loss_by_epoch": [round(h["loss"], 5) for h in result.history],
        "paper_recall@20": 0.1830,
        "paper_ndcg@20": 0.1554,
        "settings": {"dim": 64, "layers": 3, "lr": args.lr, "lr_milestones": args.lr_milestones,
                     "lr_gamma": args.lr_gamma, "batch_size": args.batch_size, "l2": args.l2,
                     "max_steps_per_epoch": args.max_steps_per_epoch, "batch_used": result.batch_size,
                     "lr_batch_scaling": args.lr_batch_scaling if args.max_steps_per_epoch else None,
                     "negatives": f"{args.sampler}, {args.per_positive}"
                     + (f", hardest of {args.candidates}" if args.sampler == "model" else ""), "loss": args.loss,
                     "temperature": args.temperature if args.loss == "softmax" else None, "score": args.score},
        "sampler": args.sampler,
        "parameters_ranked": "trained" if args.headline_ema is None else f"moving average, decay {args.headline_ema}",
        "final_by_average": {"raw" if d is None else f"ema{d}": [round(m["recall@20"], 5), round(m["ndcg@20"], 5)]
                             for d, m in final.items()},
        "seed": args.seed,
        "test_curve": curve.points,
        "seconds_to_recall_0.17": curve.first_reaching(0.17),
        "seconds_to_recall_0.18": curve.first_reaching(0.18),
        "paper_protocol_best": None if args.explore else gw.best_evaluation(curve.points),
    }
    rows = [("epochs", str(args.epochs)), ("seconds per epoch", f"{epoch_seconds:.1f}"),
            ("full evaluation (s)", f"{eval_seconds:.1f}"), ("peak RSS (MB)", f"{figures['peak_rss_mb']:.0f}"),
            ("recall@20", f"{metrics['recall@20']:.4f} (paper, ~1000 epochs: 0.1830)"),
            ("ndcg@20", f"{metrics['ndcg@20']:.4f} (paper, ~1000 epochs: 0.1554)"),
            ("final training loss", f"{figures['final_loss']:.4f}"),
            ("training seconds to recall@20 >= 0.17", str(figures["seconds_to_recall_0.17"])),
            ("training seconds to recall@20 >= 0.18", str(figures["seconds_to_recall_0.18"]))]
    best = figures["paper_protocol_best"]
    if best:
        rows.append(("best test evaluation (the paper's epoch choice)",
                     f"{best['recall@20']:.4f} / {best['ndcg@20']:.4f} at epoch {best['epoch']} "
                     f"({best['train_seconds']:.0f} s)"))
    title = (f"LightGCN on Gowalla (lr {args.lr}, batch {args.batch_size}, {args.sampler} x{args.per_positive}, "
             f"{args.loss}{f' T={args.temperature}' if args.loss == 'softmax' else ''}, {args.score})")
    figures["command"] = command("lightgcn_gowalla", None)
    figures["split"] = gw.VALIDATION if args.explore else "test.txt (the paper's protocol)"
    figures["epochs_chosen_on"] = chosen
    figures["epoch_budget_rule"] = budget_rule
    split = f"the validation split ({gw.HELD_OUT:.0%} of train.txt; test.txt not read)" if args.explore else "test.txt"
    if args.eval_every:
        notes = (f"{split} ranked every {args.eval_every} epochs for the recall-vs-time curve (JSON `test_curve`), "
                 "as the paper's code does. Headline figures are after the last epoch.")
        if not args.explore:
            notes += (" The 'best test evaluation' row applies the paper's own rule (" + gw.PAPER_RULE + "); the "
                      "headline does not.")
    else:
        notes = f"{split} ranked once, after the budget."
    if args.chosen_on:
        notes += " Settings and epoch budget chosen on the validation runs " + ", ".join(args.chosen_on) + "."
    write_results(args.name, figures, rows, title, notes=notes)
    save_curve(args.name, figures, title)


def save_curve(name: str, figures: dict, title: str) -> None:
    """Recall@20 against training wall clock: a PNG beside the results and an MLflow run (the
    project's default store, experiment graphrec-bench) with one point per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import RESULTS, log_bench_run

    points = figures["test_curve"]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p["train_seconds"] / 60 for p in points], [p["recall@20"] for p in points], marker="o", label="graphrec")
    ax.axhline(figures["paper_recall@20"], color="grey", ls="--", label="paper, ~1000 epochs (0.1830)")
    ax.set_xlabel("training wall clock (minutes, 2 cores)")
    ax.set_ylabel("recall@20 on test.txt")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    png = RESULTS / f"{name}_curve.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    log_bench_run(name, figures["settings"],
                  [(p["epoch"], {"test_recall_at_20": p["recall@20"], "test_ndcg_at_20": p["ndcg@20"],
                                 "train_seconds": p["train_seconds"]}) for p in points],
                  {png: "plots", RESULTS / f"{name}.json": "results"})


if __name__ == "__main__":
    main()
