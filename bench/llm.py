"""Claim 9 of bench/claims.py, and its own results: GNN alone vs graph-as-text vs GNN-as-prefix, on warm
and cold members of the synthetic network (CLAIM: the protocol). Each arm runs in its own process; the
prefix arm trains its own GraphSAGE, the same one as the GNN arm's (same seeds).

    ./dev.sh python -m bench.llm [--epochs 20] [--prefix-epochs 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import peak_rss_mb, write_results
from bench.runner import entry, run_arms, settle

GNN, TEXT, PREFIX = "gnn (GraphSAGE)", "graph as text", "GNN as prefix"

CLAIM = {
    "id": 9,
    "title": "GNN as a soft prompt vs graph as text",
    "claim": "Feeding a GNN's node embedding to a frozen language model as soft prompt tokens recommends better "
             "than writing the node's graph neighbourhood out as text for the language model to read.",
    "data": "The synthetic professional network (2,000 members, 800 jobs, friendships, MiniLM text features), "
            "temporal split, 10% of members with interactions held out of training entirely (cold: scored on all "
            "their jobs).",
    "protocol": "GraphSAGE (20 epochs) is the GNN; graph-as-text encodes each member's profile, friends and latest "
                "jobs with the frozen all-MiniLM-L6-v2 (no training); GNN-as-prefix projects the GraphSAGE member "
                "embedding into 4 soft tokens before the member's profile (32 tokens) and trains only the "
                "projection (2 epochs, sampled softmax); jobs are the frozen encoder's vectors of their text in "
                "both. Recall@20 and NDCG@20 by full ranking on the test split, warm and cold members apart; "
                "seconds are each arm's training and encoding time (the prefix arm's includes its GraphSAGE).",
}

COLUMNS = ["warm_recall@20", "warm_ndcg@20", "cold_recall@20", "cold_ndcg@20", "seconds"]


def specs(sage_epochs: int = 20, prefix_epochs: int = 2, threads: int = 2, users: int = 2000,
          seed: int = 0) -> list[dict]:
    """One spec per arm; each runs alone in a child process (bench.runner.run_case)."""
    data = {"users": users, "seed": seed, "threads": threads}
    return [{"arm": GNN, **data, "sage_epochs": sage_epochs},
            {"arm": TEXT, **data},
            {"arm": PREFIX, **data, "sage_epochs": sage_epochs, "prefix_epochs": prefix_epochs, "prefix_tokens": 4,
             "max_tokens": 32, "batch_size": 128, "lr": 0.005}]


def _config(spec: dict):
    from recsys.config import load_config

    cache = Path(__file__).resolve().parents[1] / ".graphrec"
    sets = [f"data.synthetic.n_users={spec['users']}", "data.split.cold_user_fraction=0.1",
            "model.family=sage", f"train.epochs={spec.get('sage_epochs', 1)}", f"train.seed={spec['seed']}",
            "train.progress=false", f"stores.root={cache}", "eval.ks=[20]"]
    for key in ("prefix_tokens", "max_tokens", "batch_size", "lr"):
        if key in spec:
            sets.append(f"model.llm.{key}={spec[key]}")
    if "prefix_epochs" in spec:
        sets.append(f"model.llm.epochs={spec['prefix_epochs']}")
    return load_config(None, sets)


def _train_sage(prepared, cfg):
    from recsys.models import build_model
    from recsys.seeding import seed_everything
    from recsys.train import fit

    # GraphSAGE samples neighbours with DGL's generator, seeded too since prepare() has loaded DGL:
    # the same GNN in every arm
    seed_everything(cfg.train.seed)
    sage = build_model(cfg.model, prepared.graph, seed=cfg.train.seed)
    fit(sage, prepared.graph, prepared.indexed, cfg.train, cfg.eval)
    return sage


def case(spec: dict) -> dict:
    from recsys.data.loaders import load_data
    from recsys.llm_fit import train_llm
    from recsys.prepare import prepare
    from recsys.train import evaluate_model

    cfg = _config(spec)
    prepared = prepare(load_data(cfg.data), cfg)
    indexed = prepared.indexed
    extra = {}
    t0 = time.perf_counter()
    if spec["arm"] == GNN:
        model = _train_sage(prepared, cfg)
    elif spec["arm"] == TEXT:
        opts = cfg.model.llm.model_copy(update={"mode": "text"})
        model, _ = train_llm(prepared, opts, None, cfg.stores.text_cache(), seed=spec["seed"])
    elif spec["arm"] == PREFIX:
        sage = _train_sage(prepared, cfg)
        extra["gnn_seconds"] = round(time.perf_counter() - t0, 1)
        opts = cfg.model.llm.model_copy(update={"mode": "prefix"})
        model, history = train_llm(prepared, opts, sage, cfg.stores.text_cache(), seed=spec["seed"],
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
        extra["prefix_loss_first"] = round(history[0]["loss"], 4)
        extra["prefix_loss_last"] = round(history[-1]["loss"], 4)
        extra["prefix_epoch_seconds"] = round(float(np.mean([h["epoch_seconds"] for h in history])), 1)
    else:
        raise ValueError(f"unknown arm {spec['arm']!r}")
    seconds = time.perf_counter() - t0
    figures = {}
    for group, mask in (("warm", ~prepared.cold_users), ("cold", prepared.cold_users)):
        m = evaluate_model(model, prepared.graph, indexed, "test", cfg.eval, user_mask=mask)
        figures[f"{group}_recall@20"] = round(float(m["recall@20"]), 4)
        figures[f"{group}_ndcg@20"] = round(float(m["ndcg@20"]), 4)
    cold_test_users = indexed.test[prepared.cold_users[indexed.test[:, 0]], 0]
    return {**figures, "seconds": round(seconds, 1), **extra, "members": int(indexed.n_users),
            "jobs": int(indexed.n_items), "cold_members": int(prepared.cold_users.sum()),
            "cold_with_test_targets": int(len(np.unique(cold_test_users))), "peak_rss_mb": round(peak_rss_mb(), 1)}


def verdict(rows: list[dict]) -> tuple[bool, str]:
    """Holds if GNN-as-prefix beats graph-as-text on warm members' recall@20."""
    by_arm = {row["arm"]: row for row in rows}
    text, prefix = by_arm[TEXT], by_arm[PREFIX]
    holds = prefix["warm_recall@20"] > text["warm_recall@20"]
    gnn = f"; GraphSAGE alone has {by_arm[GNN]['warm_recall@20']:.4f} warm and {by_arm[GNN]['cold_recall@20']:.4f} " \
        "cold" if GNN in by_arm else ""
    cold = "also ahead" if prefix["cold_recall@20"] > text["cold_recall@20"] else "behind"
    return holds, (f"GNN as prefix {'beats' if holds else 'does not beat'} graph as text on warm members' "
                   f"recall@20 ({prefix['warm_recall@20']:.4f} vs {text['warm_recall@20']:.4f}) and is {cold} on "
                   f"cold members ({prefix['cold_recall@20']:.4f} vs {text['cold_recall@20']:.4f}){gnn}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="GraphSAGE epochs")
    p.add_argument("--prefix-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--users", type=int, default=2000)
    args = p.parse_args()

    rows = run_arms("bench.llm", specs(args.epochs, args.prefix_epochs, args.threads, args.users), verdict)
    holds, reason = settle(rows, verdict)
    ok = [r for r in rows if "error" not in r]
    first = ok[0] if ok else {}
    figures = {"data": {k: first.get(k) for k in ("members", "jobs", "cold_members", "cold_with_test_targets")},
               "methods": {r["arm"]: {k: v for k, v in r.items() if k != "arm"} for r in rows},
               "settings": {"sage_epochs": args.epochs, "prefix_epochs": args.prefix_epochs,
                            "prefix": {k: specs()[2][k] for k in ("prefix_tokens", "max_tokens", "batch_size", "lr")}},
               "verdict": {"holds": holds, "reason": reason}}
    table = [(r["arm"], "failed", "", "", "", "") if "error" in r else
             (r["arm"], *(f"{r[c]:.4f}" for c in COLUMNS[:4]), f"{r['seconds']:.0f}") for r in rows]
    write_results("llm", figures, table, "GNN vs graph-as-text vs GNN-as-prefix (synthetic network, test split)",
                  "Cold: members held out of training entirely (10%). Seconds: training and encoding (text: encoding "
                  "only, cached by content; prefix: its GraphSAGE, the projection and encoding every member). "
                  f"Verdict: {reason}",
                  header=("method", "warm recall@20", "warm NDCG@20", "cold recall@20", "cold NDCG@20", "seconds"))


if __name__ == "__main__":
    entry(case, main)
