"""An Optuna study over one family, composed from the configuration: TPE with a seed, the recipe's
trial first and then the queued ones (NeighboursFirst), the pace rule and optionally the median
rule; and running trials on it until it holds its target or the deadline passes. The storage it
lives in is deploy/study_store.py's."""
from __future__ import annotations

import time
from typing import Optional

import optuna

from recsys.config import RunConfig
from recsys.search.rules import NeighboursFirst, PacePruner
from recsys.search.space import configured_params, proven_settings, queued_after_recipe

# Optuna's lines go through logging like everyone else's, so that a command's terminal drops their
# tracebacks (they stay in its log file) instead of Optuna's own handler printing them.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def build_study(cfg: RunConfig, storage) -> optuna.Study:
    """The study named by search.study_name on `storage`, created if new, with the configured
    sampler and pruners."""
    s = cfg.search
    pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                         n_warmup_steps=s.pruner_warmup_epochs) if s.median_pruning \
        else optuna.pruners.NopPruner()
    if s.pace_stretch:
        pruner = PacePruner(pruner, s.pace_stretch, configured_params(cfg), proven_settings(cfg),
                            s.proven_pace_stretch)
    sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=s.seed)
    if s.first_trial_configured and (queue := queued_after_recipe(cfg)):
        sampler = NeighboursFirst(sampler, queue)
    return optuna.create_study(study_name=s.study_name(cfg.stores.experiment), storage=storage, direction="maximize",
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def enqueue_recipe(cfg: RunConfig, study: optuna.Study) -> None:
    """A new study's first trial is the configured recipe (search.first_trial_configured), unless
    it is taken from a finished run (search.first_trial_from)."""
    s = cfg.search
    if s.first_trial_configured and not s.first_trial_from and not study.get_trials(deepcopy=False):
        study.enqueue_trial(configured_params(cfg), skip_if_exists=True)


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: optuna.Study, objective, target: int, deadline: Optional[float]) -> None:
    """Work on the study until it holds `target` finished trials (counting other workers' too) or
    `deadline` (a `time.time()` instant) has passed."""
    stop = optuna.study.MaxTrialsCallback(target, states=FINISHED)
    while finished_trials(study) < target:
        left = None if deadline is None else deadline - time.time()
        if left is not None and left <= 0:
            return
        try:
            study.optimize(objective, timeout=left, callbacks=[stop], catch=(RuntimeError, ValueError),
                           gc_after_trial=True)
            return
        except ValueError as exc:  # two processes took the same waiting trial (SQLite has no row locks)
            if not str(exc).startswith("Cannot tell a"):
                raise
