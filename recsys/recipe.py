"""Every `auto` training setting made concrete, in one place.

A setting left `auto` takes, in this order: the family's recipe (its registry entry's `recipe`,
recsys/families.py), else the generic fallback (recsys.config.GENERIC); `max_steps_per_epoch`
takes the family's step bound (its entry's `auto_steps`); the model sampler's `candidates` takes
the rule on the log's density (recsys.negatives.auto_candidates) once the training pairs are known.
Training (the loop, the refit) and the search (the recipe as a trial, a finished run compared with
it) all call this, so `auto` means one thing everywhere; the loop records what it resolved to.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from recsys.config import AUTO, GENERIC, RunConfig, TrainConfig
from recsys.families import AUTO_STEPS, FAMILIES, RANKING_LOOP, always, never, of_model
from recsys.negatives import auto_candidates


def resolve(train: TrainConfig, family_name: Optional[str], train_pairs: Optional[np.ndarray] = None,
            n_items: Optional[int] = None) -> TrainConfig:
    """`train` with every `auto` setting made concrete for the family whose model trains
    (`family_name`; None: the generic fallback and bound). Without `train_pairs`, an `auto`
    candidate count stays `auto` (it depends on the log)."""
    entry = FAMILIES.get(family_name) if family_name else None
    out = train.resolved((entry.recipe or {}) if entry else {})
    update: dict = {}
    if out.max_steps_per_epoch == AUTO:
        update["max_steps_per_epoch"] = entry.auto_steps if entry else AUTO_STEPS
    negatives = out.negatives
    if negatives.kind == "model" and negatives.candidates == AUTO and train_pairs is not None \
            and n_items is not None:
        update["negatives"] = negatives.model_copy(update={"candidates": auto_candidates(train_pairs, n_items)})
    return out.model_copy(update=update) if update else out


def resolve_for_model(train: TrainConfig, model, train_pairs: Optional[np.ndarray] = None,
                      n_items: Optional[int] = None) -> TrainConfig:
    """resolve() for the family whose registered class `model` is."""
    entry = of_model(model)
    return resolve(train, entry.name if entry else None, train_pairs, n_items)


def resolve_run(cfg: RunConfig, train_pairs: Optional[np.ndarray] = None, n_items: Optional[int] = None) -> TrainConfig:
    """resolve() for the run's family (for a family on a bottom, the bottom trains first)."""
    return resolve(cfg.train, FAMILIES[cfg.model.family].trained_model(cfg.model).name, train_pairs, n_items)


def recipe_values(family_name: Optional[str]) -> dict:
    """What each setting GENERIC names resolves to for `family_name` when left `auto`."""
    every_auto: dict = {}
    for key in GENERIC:
        *sections, name = key.split(".")
        node = every_auto
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = AUTO
    return resolve(TrainConfig(**every_auto), family_name).recipe()


def families_table() -> list[str]:
    """The registry as text lines (`graphrec families`): what each family reads, whether a search
    tunes it, and what its `auto` training settings become (recsys/recipe.py)."""
    lines = [f"{'family':<9} {'inductive':<14} {'features':<9} {'search':<7} what it is"]
    for f in FAMILIES.values():
        features = "text" if f.reads_text else "always" if f.reads_features is always else (
            "no" if f.reads_features is never else "option")
        lines.append(f"{f.name:<9} {f.inductive:<14} {features:<9} {'yes' if f.space else 'no':<7} {f.summary}")
        if f.model:
            auto = ", ".join(f"{k}={v}" for k, v in recipe_values(f.name).items())
            lines.append(f"{'':<9} auto: {auto}, max_steps_per_epoch={f.auto_steps}"
                         f"{'' if f.train == RANKING_LOOP else '; trains in stages of its own (no refit)'}")
    return lines
