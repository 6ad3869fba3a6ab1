"""The rules a study runs by: the order of its first trials (NeighboursFirst), the pace rule that
prunes a trial falling behind the recipe (PacePruner), and the training callbacks that report to
Optuna and stop a trial at the search's deadline."""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import optuna

from recsys.config import RunConfig
from recsys.search.space import configured_params
from recsys.train import Callback, StopTraining


class PacePruner(optuna.pruners.BasePruner):
    """The wrapped pruner's decision, and also: prune a trial that falls behind the configured recipe's
    pace by more than `stretch`. At epoch e its best validation figure must reach the best the
    recipe's trial (recipe_trial) had by epoch e / stretch. Unlike the median rule this judges from
    the second trial on, yet a trial that learns up to `stretch` times slower than the recipe survives.
    Trials at `proven` settings (proven_settings: few, and with evidence) are judged with
    `proven_stretch` instead (None: never pruned by pace)."""

    def __init__(self, inner: optuna.pruners.BasePruner, stretch: float, recipe: dict, proven: Sequence[dict] = (),
                 proven_stretch: Optional[float] = None):
        self.inner, self.stretch, self.recipe = inner, stretch, recipe
        self.proven, self.proven_stretch = list(proven), proven_stretch

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.inner.prune(study, trial):
            return True
        stretch = self.proven_stretch if trial.params in self.proven else self.stretch
        if trial.last_step is None or stretch is None or \
                trial.params.get("model.family") != self.recipe.get("model.family"):
            return False  # (a joint study: another family learns at its own pace, e.g. the filter in one fit)
        reference = first_complete_at(study, self.recipe)
        if reference is None or reference.number == trial.number:
            return False
        bar = [v for epoch, v in reference.intermediate_values.items() if epoch * stretch <= trial.last_step]
        return bool(bar) and max(trial.intermediate_values.values()) < max(bar)


class NeighboursFirst(optuna.samplers.BaseSampler):
    """Trial n (n >= 1) takes the n-th of `neighbours` (queued_after_recipe; trial 0 is the recipe
    itself), then `base` samples. By trial number, so two workers never draw the same neighbour
    and nothing waits in the study; a parameter a neighbour lacks (one its change brings in, e.g.
    a sampler's hardness) is the base sampler's to draw."""

    def __init__(self, base: optuna.samplers.BaseSampler, neighbours: list[dict]):
        self.base, self.neighbours = base, neighbours

    def _neighbour(self, trial: optuna.trial.FrozenTrial) -> Optional[dict]:
        return self.neighbours[trial.number - 1] if 1 <= trial.number <= len(self.neighbours) else None

    def infer_relative_search_space(self, study, trial):
        return {} if self._neighbour(trial) else self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._neighbour(trial) else self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):
        value = (self._neighbour(trial) or {}).get(name, _ABSENT)
        try:
            if value is not _ABSENT and distribution._contains(distribution.to_internal_repr(value)):
                return value
        except (ValueError, TypeError):  # not one of this distribution's values
            pass
        return self.base.sample_independent(study, trial, name, distribution)

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


_ABSENT = object()


class PruningReporter(Callback):
    """Training callback: reports each validation evaluation to Optuna and stops a bad trial."""

    def __init__(self, trial: optuna.Trial, key: str):
        self.trial, self.key = trial, key

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.key in logs:
            self.trial.report(logs[self.key], epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {self.key}={logs[self.key]:.4f} below the pruner's bar")


class AtDeadline(Callback):
    """Training callback: ends a trial at the first epoch end past the search's deadline (a
    `time.time()` instant, comparable between a search's processes)."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.epoch: Optional[int] = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if time.time() >= self.deadline:
            self.epoch = epoch
            raise StopTraining


class TrialProgress(Callback):
    """Training callback: a line on the trial's progress at most every `every` seconds, and after
    its first epoch, if the search's deadline comes before the trial could run all its epochs at
    that pace, one line that says so (the trial is then stopped there and judged on what it reached)."""

    def __init__(self, number: int, epochs: int, key: str, log: Callable[[str], None],
                 deadline: Optional[float] = None, every: float = 30.0):
        self.number, self.epochs, self.key, self.log = number, epochs, key, log
        self.deadline, self.every = deadline, every
        self.started = self.said = time.time()
        self.best: Optional[float] = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        now = time.time()
        if self.key in logs:
            self.best = logs[self.key] if self.best is None else max(self.best, logs[self.key])
        if epoch == 1 and self.deadline is not None:
            pace = now - self.started
            needed = pace * self.epochs
            if now + pace * (self.epochs - 1) > self.deadline:
                self.log(f"trial {self.number}: at {pace:.1f} s an epoch, its {self.epochs} epochs "
                         f"need about {needed:.0f} s and the search's budget ends in {self.deadline - now:.0f} s: "
                         "it will stop at the deadline and be judged on the epochs it reached "
                         f"(a budget of {needed * 1.2:.0f} s or more lets it finish)")
        if now - self.said >= self.every:
            self.said = now
            best = f", best {self.key.removeprefix('valid_')} {self.best:.4f}" if self.best is not None else ""
            self.log(f"trial {self.number}: epoch {epoch} of at most {self.epochs}{best}, {now - self.started:.0f} s")


def first_complete_at(study: optuna.Study, params: dict) -> Optional[optuna.trial.FrozenTrial]:
    """The first complete trial whose parameters include `params`."""
    return next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if all(t.params.get(k) == v for k, v in params.items())), None)


def recipe_trial(cfg: RunConfig, study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    """The first complete trial at the configured recipe (configured_params), if the study has one."""
    return first_complete_at(study, configured_params(cfg))
