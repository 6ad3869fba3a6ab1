"""The graph-filter family's whole training (its registry entry): one fit, no epochs.

The filter (recsys/models/graph_filter.py) is fitted on the training pairs and ranked on validation,
which is what a search compares and the gates judge; with `train.refit`, it is fitted again on the
training and validation pairs together, and that one serves (as every family's refit does). The
observers see the fit as epoch 1 of stage "" (and of "refit_"): its seconds and, where there is a
validation split, its figures.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from recsys.families import family
from recsys.prepare import with_validation_trained
from recsys.train import Callback, StopTraining, TrainResult, evaluate_model, no_callbacks
from recsys.trained import Trained


def train_filter(prepared, cfg, model, callbacks: Callable[[str], Sequence[Callback]] = no_callbacks,
                 log: Optional[Callable[[str], None]] = None, stages: Optional[dict] = None) -> Trained:
    """`stages`: a warm start's later stages (the filter has none, and starts from nothing)."""
    selected = _fit_once(model, prepared.graph, prepared.indexed, cfg, callbacks(""), log, "fit")
    if not (cfg.train.refit and len(prepared.indexed.valid)):
        return selected
    merged = with_validation_trained(prepared, cfg)
    final = family(cfg.model.family).build(cfg.model, merged.graph, seed=cfg.train.seed)
    refit = _fit_once(final, merged.graph, merged.indexed, cfg, callbacks("refit_"), log, "refit")
    refit.result.recipe.update(refit_pairs=len(merged.indexed.train), selection_pairs=len(prepared.indexed.train))
    return Trained(final, merged.graph, refit.result, selected.score, 1, selection=selected, indexed=merged.indexed)


def _fit_once(model, graph, data, cfg, callbacks: Sequence[Callback], log, stage: str) -> Trained:
    started = time.perf_counter()
    for cb in callbacks:
        cb.on_epoch_start(1)
    logs = model.fit(graph)
    score = float("-inf")
    if stage == "fit" and len(data.valid):
        metrics = evaluate_model(model, graph, data, "valid", cfg.eval)
        if cfg.train.monitor not in metrics:
            raise ValueError(f"train.monitor={cfg.train.monitor!r} is not computed; choose one of {sorted(metrics)}")
        score = metrics[cfg.train.monitor]
        logs.update({f"valid_{k}": v for k, v in metrics.items()})
    logs["elapsed_seconds"] = time.perf_counter() - started
    if log:
        log(f"filter {stage}: {logs['fit_seconds']:.1f} s on {len(data.train)} pairs"
            + (f", valid {cfg.train.monitor}={score:.4f}" if score > float("-inf") else ""))
    try:
        for cb in callbacks:
            cb.on_epoch_end(1, logs)
    except StopTraining:
        pass  # the fit is whole: nothing is left to stop
    result = TrainResult(history=[{"epoch": 1, **logs}], best_epoch=1, best_score=score, epochs_run=1,
                         seconds=time.perf_counter() - started,
                         recipe={f"filter.{k}": v for k, v in model.options.model_dump().items()})
    return Trained(model, graph, result, score, 1)
