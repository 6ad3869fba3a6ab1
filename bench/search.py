"""`graphrec search` throughput and progress per family: trials per hour, pruned share, best value
against trial count.

Each family gets a fresh study (TPE seed 0, median pruner after 3 trials and 2 epochs) run by the
real search flow (Prefect, MLflow on SQLite, Optuna on SQLite) with `--trials` trials of at most
`--epochs` epochs, validation every 2 epochs. LightGCN, GCN, GraphSAGE and PinSage search on
ML-100K (random 80/10/10 split, objective validation NDCG@20); MMoE needs click events and
friendships, so it searches on the synthetic network (objective: mean validation AUC of job click
and friend request). The best configuration is not retrained here (search.register_best=false).

    ./dev.sh python -m bench.search [--trials 10] [--epochs 20] [--families lightgcn,sage]
"""
from __future__ import annotations

import argparse
import shutil
import time

from bench.common import RESULTS, SHARED_DATA, write_results
from flows.cli import prepare_prefect
from recsys.config import load_config

ML100K = ["data.source=ml-100k", f"data.path={SHARED_DATA / 'ml-100k'}", "data.split.kind=random",
          "validation.min_interactions_per_user=1"]
DATA = {"mmoe": ["data.synthetic.n_users=2000"]}  # MMoE needs click events and friendships: the synthetic network


def run_family(family: str, trials: int, epochs: int) -> dict:
    import optuna

    from deploy.study_store import open_study
    from flows.search import search_flow

    root = RESULTS / ".cache" / "search" / family
    shutil.rmtree(root, ignore_errors=True)
    data = DATA.get(family, ML100K)
    cfg = load_config(None, [*data, f"stores.root={root}", f"search.family={family}", f"search.trials={trials}",
                             "search.register_best=false", f"train.epochs={epochs}", "train.eval_every=2",
                             "train.progress=false", f"model.mmoe.epochs={epochs}", "features.text=false"])
    prepare_prefect(root)
    t0 = time.perf_counter()
    summary = search_flow(cfg)
    seconds = time.perf_counter() - t0
    study = open_study(cfg)
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    best, curve = float("-inf"), []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state == optuna.trial.TrialState.COMPLETE:
            best = max(best, t.value)
        curve.append(round(best, 4) if best > float("-inf") else None)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return {"family": family, "objective": summary["objective"], "trials": len(study.trials),
            "finished": len(done), "pruned": pruned, "pruned_share": round(pruned / max(len(study.trials), 1), 3),
            "seconds": round(seconds, 1), "trials_per_hour": round(len(done) / seconds * 3600, 1),
            "best_value": summary.get("best_value"), "best_by_trial": curve, "best_params": summary.get("best_params")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--families", default="lightgcn,gcn,sage,pinsage,mmoe")
    args = p.parse_args()
    results = [run_family(f, args.trials, args.epochs) for f in args.families.split(",")]
    figures = {r["family"]: r for r in results}
    figures.update(trials_per_family=args.trials, max_epochs=args.epochs)
    rows = [(r["family"], r["objective"], str(r["finished"]), f"{r['pruned_share']:.0%}", f"{r['trials_per_hour']:.0f}",
             f"{r['best_value']:.4f}" if r["best_value"] is not None else "-",
             " ".join("-" if v is None else f"{v:.3f}" for v in r["best_by_trial"])) for r in results]
    write_results("search", figures, rows, "Optuna search per family (ML-100K; MMoE on the synthetic network)",
                  header=("family", "objective (validation)", "trials", "pruned", "trials/hour", "best",
                          "best so far, by trial"))


if __name__ == "__main__":
    main()
