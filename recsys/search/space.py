"""A family's search space seen from the configuration: the recipe as a point of the space, its
one-step neighbours, the settings proven on other data sets, and a trial's configuration rebuilt
from its parameters."""
from __future__ import annotations

import random

import optuna

from recsys.config import RunConfig, with_overrides
from recsys.config_base import ConfigError
from recsys.families import family
from recsys.recipe import resolve_run


class ConfiguredTrial:
    """A stand-in for an Optuna trial whose every suggestion is the configuration's own value, when
    the configuration has one the parameter's range or choices hold; `params` keeps what it gave.
    Parameters the configuration has no value for (derived ones, e.g. a band's lower end) are left
    out, so Optuna samples them."""

    def __init__(self, cfg: RunConfig):
        searched = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": cfg.search.family})})
        resolved = searched.model_copy(update={"train": resolve_run(searched)})
        self.flat = resolved.flat()
        self.params: dict = {}

    def _take(self, name: str, allowed, fallback):
        value = self.flat.get(name)
        if name in self.flat and allowed(value):
            self.params[name] = value
            return value
        return fallback

    def suggest_float(self, name, low, high, *, log=False, step=None):
        return self._take(name, lambda v: isinstance(v, (int, float)) and low <= v <= high, low)

    def suggest_int(self, name, low, high, *, log=False, step=1):
        return self._take(name, lambda v: isinstance(v, int) and low <= v <= high, low)

    def suggest_categorical(self, name, choices):
        return self._take(name, lambda v: v in choices, choices[0])


def draw(cfg: RunConfig, trial) -> dict:
    """The study's space as `trial` draws it ({dotted key: value}, model.family included). In a joint
    study (search.families) the family is a parameter of its own, drawn first, and only that family's
    space follows (Optuna samples define-by-run spaces)."""
    names = cfg.search.searched()
    name = trial.suggest_categorical("model.family", names) if len(names) > 1 else names[0]
    return {"model.family": name, **family(name).draw(trial)}


def configured_params(cfg: RunConfig) -> dict:
    """The search space's parameters at the configuration's values (ConfiguredTrial)."""
    trial = ConfiguredTrial(cfg)
    draw(cfg, trial)
    return trial.params


class _NeighbourTrial(ConfiguredTrial):
    """ConfiguredTrial that also records, per parameter it gives, the values one step away: a float
    times or over sqrt(10) on a log scale (a quarter of its range on a linear one), an int +-1, a
    categorical's entries beside it in the order the space declares, all within the range."""

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.steps: dict[str, list] = {}

    def _near(self, name: str, values) -> None:
        if name in self.params:
            self.steps[name] = [v for v in dict.fromkeys(values) if v != self.params[name]]

    def suggest_float(self, name, low, high, *, log=False, step=None):
        value = super().suggest_float(name, low, high, log=log, step=step)
        span = [value * 10 ** 0.5, value / 10 ** 0.5] if log else [value + (high - low) / 4, value - (high - low) / 4]
        self._near(name, [min(high, max(low, v)) for v in span])
        return value

    def suggest_int(self, name, low, high, *, log=False, step=1):
        value = super().suggest_int(name, low, high, log=log, step=step)
        self._near(name, [v for v in (value - step, value + step) if low <= v <= high])
        return value

    def suggest_categorical(self, name, choices):
        value = super().suggest_categorical(name, choices)
        if name in self.params:
            at = list(choices).index(value)
            self._near(name, list(choices)[max(0, at - 1):at + 2])
        return value


def queued_after_recipe(cfg: RunConfig) -> list[dict]:
    """Trials 1, 2, ... of a new study: in a joint study, each other family at the configuration's
    values; then the family's proven settings (search.proven_first, less those found on
    search.proven_skip), then the recipe's neighbours (search.neighbours_first)."""
    others = [configured_params(with_overrides(cfg, {"search.family": n}))
              for n in cfg.search.searched() if n != cfg.search.family]
    return others + proven_settings(cfg) + (recipe_neighbours(cfg) if cfg.search.neighbours_first else [])


def proven_settings(cfg: RunConfig) -> list[dict]:
    """The family's proven settings a new study tries after the recipe (search.proven_first), less
    those found on search.proven_skip."""
    s = cfg.search
    if not (s.proven_first and s.first_trial_configured):
        return []
    joint = {"model.family": s.family} if len(s.searched()) > 1 else {}
    return [{**joint, **p.settings} for p in family(s.family).proven if p.found_on not in s.proven_skip]


def recipe_neighbours(cfg: RunConfig) -> list[dict]:
    """The configured recipe with one parameter moved one step (_NeighbourTrial), in an order
    shuffled with search.seed: trials 1, 2, ... under search.neighbours_first (NeighboursFirst)."""
    trial = _NeighbourTrial(cfg)
    draw(cfg, trial)
    out = [{**trial.params, name: v} for name, values in trial.steps.items() for v in values]
    random.Random(cfg.search.seed).shuffle(out)
    return out


def trial_config(cfg: RunConfig, trial: optuna.trial.BaseTrial) -> RunConfig:
    """A trial's configuration, rebuilt from its parameters by replaying the space."""
    return with_overrides(cfg, draw(cfg, optuna.trial.FixedTrial(trial.params)))


def objective_name(cfg: RunConfig) -> str:
    """What a study maximises: the family's validation figure (a ranking metric, or for mmoe the
    mean validation AUC of its two tasks); in a joint study every family's must be the same one."""
    names = {n: family(n).objective(cfg) for n in cfg.search.searched()}
    if len(set(names.values())) > 1:
        raise ConfigError(f"search.families: the families maximise different figures ({names}); a joint study "
                          "compares one figure: choose families that share it")
    return names[cfg.search.family]


def check_joint_data(cfg: RunConfig) -> None:
    """A joint study prepares its data once: refuses families that read different data (node
    features, text, prepared tasks)."""
    from recsys.prepare import needs_features

    reads = {n: (needs_features(with_overrides(cfg, {"model.family": n})), family(n).reads_text, family(n).prepare)
             for n in cfg.search.searched()}
    if len(set(reads.values())) > 1:
        what = {n: ", ".join(k for k, on in zip(("features", "text", "tasks"), r) if on) or "interactions only"
                for n, r in reads.items()}
        raise ConfigError(f"search.families: a joint study prepares the data once, and these families read "
                          f"different data ({what}); search them in studies of their own")
