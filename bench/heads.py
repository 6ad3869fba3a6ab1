"""Harness: multi-task heads of equal capacity (MMoE, shared bottom, one model per task) trained on
tabular rows and scored by test AUC, and the Census-Income split they are compared on; used by
census_mmoe and claim_mmoe."""
from __future__ import annotations

import time

from bench.common import SHARED_DATA
from recsys.models.mmoe import build_head
from recsys.multitask import fit_head, gate_utilisation, predict, task_aucs
from recsys.seeding import seed_everything

HEAD = dict(n_experts=8, expert_dim=16, expert_hidden=(64,), tower_hidden=(8,), dropout=0.1)
KINDS = ("mmoe", "shared_bottom", "single_task")


def census():
    """(frame, parts, (train, valid, test)): census-income.test split 60/20/20 at random (seed 0)."""
    from recsys.data.tabular import CENSUS_NUMERIC, CENSUS_TASKS, load_census, split_rows, tabular_rows

    frame = load_census(SHARED_DATA / "census-income" / "census-income.test")
    parts = split_rows(len(frame), (0.6, 0.2, 0.2), seed=0)
    return frame, parts, tabular_rows([frame.iloc[i] for i in parts], CENSUS_TASKS, numeric=CENSUS_NUMERIC)


def run_heads(train, valid, test, seed: int, epochs: int, n_tasks: int, lr: float = 1e-3, batch_size: int = 512):
    """{head kind: (test AUC per task, best epochs, seconds, gate utilisation)}."""
    out = {}
    for kind in KINDS:
        seed_everything(seed)
        models = build_head(kind, train.x.shape[1], n_tasks, **HEAD)
        t0 = time.perf_counter()
        aucs, epochs_used = [], []
        for t, model in enumerate(models):
            tasks = list(range(n_tasks)) if len(models) == 1 else [t]
            sub = [r.__class__(r.x, r.y[:, tasks]) for r in (train, valid, test)]
            res = fit_head(model, sub[0], sub[1], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
            aucs += task_aucs(predict(model, sub[2].x), sub[2].y)
            epochs_used.append(res.best_epoch)
        gates = gate_utilisation(models[0], test.x) if kind == "mmoe" else None
        out[kind] = (aucs, epochs_used, time.perf_counter() - t0, gates)
        print(kind, [round(a, 4) for a in aucs], epochs_used, f"{out[kind][2]:.0f}s", flush=True)
    return out
