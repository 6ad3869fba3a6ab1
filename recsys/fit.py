"""A family's whole training: its model built from the registry (recsys/families.py), trained the
family's way (the ranking loop of recsys/train.py, or the family's own stages on top of it), and,
with `train.refit`, trained again on the training and validation pairs together for the optimiser
steps that were chosen on validation. This sits above data preparation (recsys/prepare.py, which
the refit calls), so nothing below imports it back.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from recsys.config import TrainConfig
from recsys.device import resolve_device
from recsys.families import RANKING_LOOP, family, load
from recsys.prepare import with_validation_trained
from recsys.recipe import resolve_for_model
from recsys.train import Callback, batch_plan, fit, no_callbacks
from recsys.trained import Trained
from recsys.warm import Start, WarmStartError, WarmState, carry, stages_carried


def train(prepared, cfg, callbacks=None, log: Optional[Callable[[str], None]] = None,
          warm: Optional[WarmState] = None, why: str = ""):
    """Build the configured family's model and train it the family's way: a recsys.trained.Trained.
    `callbacks(stage)` gives the observers of each training stage ("" for the ranking loop,
    "head_" for MMoE's heads, "prefix_" for the LLM prefix). `warm`: the champion's state to start
    from (recsys/warm.py; `why` says why there is none); the Trained's `start` says how it started."""
    f = family(cfg.model.family)
    callbacks = callbacks or no_callbacks
    model = f.build(cfg.model, prepared.graph, seed=cfg.train.seed)
    start = warm_start(model, warm, f.trained_model(cfg.model).name, prepared.indexed, cfg.train, why)
    if log:
        log(f"training starts {'from ' + start.reason if start.mode == 'champion' else 'from scratch: ' + start.reason}"
            + (f" ({start.carried})" if start.carried else ""))
    trained = load(f.train)(prepared, cfg, model, callbacks, log,
                            warm.stages if warm is not None and start.mode == "champion" else None)
    if cfg.train.refit and f.train == RANKING_LOOP and len(prepared.indexed.valid) and trained.best_epoch:
        def build(graph):
            refit_model = f.build(cfg.model, graph, seed=cfg.train.seed)
            if start.mode == "champion" and warm is not None:
                warm_start(refit_model, warm, f.trained_model(cfg.model).name, prepared.indexed, cfg.train, why)
            return refit_model

        trained = refit(trained, prepared, cfg, build, callbacks, log)
    if start.mode == "champion" and trained.stages:
        start.carried["stages"] = stages_carried(trained.stages)
    trained.start = start
    return trained


def warm_start(model, warm: Optional[WarmState], family_name: str, data, train: TrainConfig, why: str) -> Start:
    """`model` seeded from `warm` where it fits (recsys.warm.carry); otherwise left as built, with the reason."""
    if warm is None:
        return Start("scratch", why or "train.start=scratch")
    if not getattr(model, "warm_startable", True):
        return Start("scratch", f"a {family_name} model is fitted whole; nothing carries over")
    settings = resolve_for_model(train, model).warm  # shrink and perturb left `auto`
    try:
        carried = carry(model, warm, family_name, data, settings.new_rows, float(settings.shrink),
                        float(settings.perturb))
    except WarmStartError as e:
        return Start("scratch", str(e))
    model.warm_from = warm.version  # the loop ranks validation before the first epoch (recsys.train.fit)
    return Start("champion", f"champion v{warm.version}", warm.version, warm.chain + 1, carried)


def train_ranking(prepared, cfg, model, callbacks: Callable[[str], Sequence[Callback]] = no_callbacks,
                  log: Optional[Callable[[str], None]] = None, stages: Optional[dict] = None) -> Trained:
    """A family's whole training when it is the ranking loop above (every family but those with a
    later stage). `callbacks(stage)` gives the observers of a stage; this one is stage "". `stages`:
    a warm start's later stages (a family with none has nothing to take from them)."""
    result = fit(model, prepared.graph, prepared.indexed, cfg.train, cfg.eval, callbacks=callbacks(""), log=log,
                 device=resolve_device(cfg.compute.device))
    return Trained(model, prepared.graph, result, result.best_score, result.best_epoch)


def refit_plan(cfg: TrainConfig, best_epoch: int, selection_batches: int, n_pairs: int) -> tuple[int, TrainConfig]:
    """(epochs, settings) of a refit on `n_pairs`: as many optimiser steps as the selection run took to
    its best epoch (`best_epoch` epochs of `selection_batches` steps), and the learning-rate schedule
    (cosine's length, the milestones, a warm start's larger first steps) stretched by the same factor.
    `cfg` is resolved (no `auto`)."""
    batch, _ = batch_plan(cfg, n_pairs)
    batches = max(1, -(-n_pairs // batch))
    epochs = max(1, round(best_epoch * selection_batches / batches))
    stretch = epochs / best_epoch
    return epochs, cfg.model_copy(update={"epochs": max(epochs, round(int(cfg.epochs) * stretch)),
                                          "lr_milestones": [round(m * stretch) for m in cfg.lr_milestones],
                                          "warm": cfg.warm.model_copy(
                                              update={"lr_epochs": round(int(cfg.warm.lr_epochs) * stretch)})})


def refit(selected: Trained, prepared, cfg, build: Callable,
          callbacks: Callable[[str], Sequence[Callback]] = no_callbacks,
          log: Optional[Callable[[str], None]] = None) -> Trained:
    """train.refit: a fresh model (`build(graph)`, the same seed) trained on training and validation pairs
    together for the optimiser steps the selection run took to its best epoch (refit_plan). Its
    epochs go to callbacks("refit_"). Returns the refit model, carrying `selected` for the gates."""
    merged = with_validation_trained(prepared, cfg)
    model = build(merged.graph)
    train_cfg = resolve_for_model(cfg.train, model)
    r = selected.result
    epochs, plan = refit_plan(train_cfg, r.best_epoch, max(1, -(-len(prepared.indexed.train) // r.batch_size)),
                              len(merged.indexed.train))
    if log:
        log(f"refit: {epochs} epochs on {len(merged.indexed.train)} pairs (training and validation), the optimiser "
            f"steps of the {r.best_epoch} epochs chosen on validation")
    result = fit(model, merged.graph, merged.indexed, plan, cfg.eval, callbacks("refit_"), log=log,
                 device=resolve_device(cfg.compute.device), stage="refit", stop_after=epochs)
    result.recipe.update({"refit_epochs": epochs, "refit_pairs": len(merged.indexed.train),
                          "selection_epochs": r.best_epoch, "selection_pairs": len(prepared.indexed.train)})
    return Trained(model, merged.graph, result, selected.score, selected.best_epoch, selection=selected,
                   indexed=merged.indexed)
