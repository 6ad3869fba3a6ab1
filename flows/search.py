"""Hyperparameter search: an Optuna study over one model family, every trial an MLflow child run.

    graphrec search --family lightgcn --trials 20 [--timeout 3600]

* The study lives in an RDB (SQLite under `.graphrec/` by default, any SQLAlchemy URL such as
  PostgreSQL unchanged). Its target is `search.trials` finished trials (complete or pruned), so a
  killed search run again resumes: the killed trial's heartbeat stops, it is marked failed after
  the grace period (also when it was killed before its first heartbeat: fail_unheard_trials), and
  numbering continues. Several processes may work on one study at once.
* TPE with a seed; pruning fed by the validation metric the training loop reports every
  `train.eval_every` epochs: with `search.pace_stretch`, from the second trial on, a pace rule
  against the recipe's curve (PacePruner); with `search.median_pruning` (off: early figures
  ranked final ones in reverse on LastFM and ML-100K) also Optuna's median rule, once
  `search.pruner_startup_trials` trials have completed. After the recipe, a new study tries the
  settings that beat it on other data sets (`search.proven_first`), then its one-step neighbours
  (`search.neighbours_first`).
* MLflow: a parent run per study (found again on resume) holds Optuna's plots (history, parameter
  importance, parallel coordinates); each trial is a child run with its params, per-epoch curves,
  and its state (complete, pruned, failed).
* `search.timeout` is a wall-clock budget for the trials, one deadline for every worker: no trial
  starts after it, and a trial still training at it stops at the end of its current epoch and is
  judged on its best validation figure so far (user attribute `stopped_at_deadline`).
* Finally the chosen trial's configuration (chosen_trial: the best, unless its lead over the
  recipe is within the noise of the validation users) is retrained by the retraining flow, so it is
  registered as `challenger` and goes through the same promotion gate as any scheduled run.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Optional

import numpy as np
import optuna
import sqlalchemy
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retrain import build_graph, load_data, retrain_flow, validate
from recsys.config import RunConfig, with_overrides
from recsys.families import family, load
from recsys.train import Callback, StopTraining

# Optuna's lines go through logging like everyone else's, so that the terminal drops their
# tracebacks (they stay in the command's log file) instead of its own handler printing them.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
PROVEN_ON = "graphrec.proven_on"  # a trial run's tag: the data set its settings were proven on


def open_study(cfg: RunConfig, first: bool = False) -> optuna.Study:
    """The study on its storage, created if new. `first` (the search command's own process, not its
    workers): a new study gets the configured recipe as its first trial (search.first_trial_configured)."""
    s = cfg.search
    url = cfg.stores.resolved_optuna_storage()
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):  # two workers starting at once may race to create the tables
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                 heartbeat_interval=s.heartbeat_seconds, grace_period=s.grace_seconds)
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                         n_warmup_steps=s.pruner_warmup_epochs) if s.median_pruning \
        else optuna.pruners.NopPruner()
    if s.pace_stretch:
        pruner = PacePruner(pruner, s.pace_stretch, configured_params(cfg), proven_settings(cfg),
                            s.proven_pace_stretch)
    sampler = optuna.samplers.TPESampler(seed=s.seed)
    if s.first_trial_configured and (queue := queued_after_recipe(cfg)):
        sampler = NeighboursFirst(sampler, queue)
    study = optuna.create_study(
        study_name=s.study_name(cfg.stores.experiment), storage=storage, direction="maximize",
        sampler=sampler, pruner=pruner, load_if_exists=True)
    fail_unheard_trials(storage, study, s.grace_seconds or 2 * s.heartbeat_seconds)
    if first and s.first_trial_configured and not s.first_trial_from and not study.get_trials(deepcopy=False):
        study.enqueue_trial(configured_params(cfg), skip_if_exists=True)
    return study


class PacePruner(optuna.pruners.BasePruner):
    """The wrapped pruner's decision, and also: prune a trial that falls behind the configured recipe's
    pace by more than `stretch`. At epoch e its best validation figure must reach the best the
    recipe's trial (recipe_trial) had by epoch e / stretch. Unlike the median rule this judges from
    the second trial on, yet a trial that learns up to `stretch` times slower than the recipe survives.
    Trials at `proven` settings (proven_settings: few, and with evidence) are judged with
    `proven_stretch` instead (None: never pruned by pace)."""

    def __init__(self, inner: optuna.pruners.BasePruner, stretch: float, recipe: dict, proven: list[dict] = (),
                 proven_stretch: Optional[float] = None):
        self.inner, self.stretch, self.recipe = inner, stretch, recipe
        self.proven, self.proven_stretch = list(proven), proven_stretch

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.inner.prune(study, trial):
            return True
        stretch = self.proven_stretch if trial.params in self.proven else self.stretch
        if trial.last_step is None or stretch is None:
            return False
        reference = _first_complete_at(study, self.recipe)
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


class ConfiguredTrial:
    """A stand-in for an Optuna trial whose every suggestion is the configuration's own value, when
    the configuration has one the parameter's range or choices hold; `params` keeps what it gave.
    Parameters the configuration has no value for (derived ones, e.g. a band's lower end) are left
    out, so Optuna samples them."""

    def __init__(self, cfg: RunConfig):
        resolved = cfg.model_copy(update={"train": cfg.train.resolved(_recipe(cfg.search.family))})
        self.flat, self.params = resolved.flat(), {}

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


def _recipe(family_name: str) -> dict:
    """What the family trains with where a setting is `auto` (its model's RecModel.recipe)."""
    model = family(family_name).model
    return getattr(load(model), "recipe", {}) if model else {}


def configured_params(cfg: RunConfig) -> dict:
    """The search space's parameters at the configuration's values (ConfiguredTrial)."""
    trial = ConfiguredTrial(cfg)
    family(cfg.search.family).space(trial)
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
    """Trials 1, 2, ... of a new study: the family's proven settings (search.proven_first, less
    those found on search.proven_skip), then the recipe's neighbours (search.neighbours_first)."""
    return proven_settings(cfg) + (recipe_neighbours(cfg) if cfg.search.neighbours_first else [])


def proven_settings(cfg: RunConfig) -> list[dict]:
    """The family's proven settings a new study tries after the recipe (search.proven_first), less
    those found on search.proven_skip."""
    s = cfg.search
    if not (s.proven_first and s.first_trial_configured):
        return []
    return [p.settings for p in family(s.family).proven if p.found_on not in s.proven_skip]


def recipe_neighbours(cfg: RunConfig) -> list[dict]:
    """The configured recipe with one parameter moved one step (_NeighbourTrial), in an order
    shuffled with search.seed: trials 1, 2, ... under search.neighbours_first (NeighboursFirst)."""
    import random

    trial = _NeighbourTrial(cfg)
    family(cfg.search.family).space(trial)
    out = [{**trial.params, name: v} for name, values in trial.steps.items() for v in values]
    random.Random(cfg.search.seed).shuffle(out)
    return out


def fail_unheard_trials(storage: optuna.storages.RDBStorage, study: optuna.Study, grace_seconds: float,
                        now: Optional[datetime] = None) -> list[int]:
    """Mark failed the running trials that never recorded a heartbeat and started more than the
    grace period ago; their numbers. Optuna fails a running trial whose heartbeat went stale but
    passes over one with no heartbeat at all, which a process killed between starting a trial and
    its first heartbeat leaves behind: it would count as running for ever. A live process records
    its first heartbeat as its trial starts, so after the grace period such a trial is dead."""
    cutoff = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None) \
        - timedelta(seconds=grace_seconds)
    query = sqlalchemy.text(
        "SELECT t.number FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "WHERE s.study_name = :name AND t.state = 'RUNNING' AND t.datetime_start < :cutoff "
        "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)")
    with storage.engine.connect() as con:
        numbers = [row[0] for row in con.execute(query, {"name": study.study_name, "cutoff": cutoff})]
    failed = []
    for number in numbers:
        try:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
            failed.append(number)
        except (ValueError, RuntimeError):  # finished meanwhile, by another worker
            pass
    return failed


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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
        self.deadline, self.epoch = deadline, None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if time.time() >= self.deadline:
            self.epoch = epoch
            raise StopTraining


def make_objective(cfg: RunConfig, prepared, parent_run_id: str, log=print, deadline: Optional[float] = None):
    """The function Optuna calls per trial: sample a config, train with pruning, log a child run.
    A trial still training at `deadline` ends there, judged on its best validation figure so far."""
    from deploy.study_runs import (
        log_per_user,
        start_trial_run,
        trial_complete,
        trial_failed,
        trial_interrupted,
        trial_pruned,
    )
    from deploy.tracking import EpochLogger
    from recsys.fit import train

    searched = family(cfg.search.family)

    def objective(trial: optuna.Trial) -> float:
        values = searched.space(trial)
        tcfg = with_overrides(cfg, {"model.family": cfg.search.family, **values, "train.progress": False,
                                    "train.refit": False})  # a trial is judged on validation: no refit
        found_on = next((p.found_on for p in searched.proven if p.settings == trial.params), None)
        run_id = start_trial_run(tcfg, prepared.data, parent_run_id, trial.study.study_name, trial.number,
                                 {PROVEN_ON: found_on} if found_on else None)
        if found_on:
            log(f"trial {trial.number}: the settings proven on {found_on}")
        trial.set_user_attr("mlflow_run_id", run_id)
        name = objective_name(tcfg)
        reporter = PruningReporter(trial, f"valid_{name}")  # reports at whichever stage computes it
        stop = [AtDeadline(deadline)] if deadline is not None else []
        try:
            trained = train(prepared, tcfg, lambda stage: [EpochLogger(run_id, prefix=stage), reporter, *stop])
            if stop and stop[0].epoch is not None:
                trial.set_user_attr("stopped_at_deadline", stop[0].epoch)
                if trained.score == float("-inf"):  # stopped before its first validation figure: nothing to judge
                    raise optuna.TrialPruned(f"stopped at the search's deadline after epoch {stop[0].epoch}, "
                                             "before any validation")
                log(f"trial {trial.number} stopped at the search's deadline after epoch {stop[0].epoch}")
        except optuna.TrialPruned:
            trial_pruned(run_id)
            log(f"trial {trial.number} pruned: {values}")
            raise
        except Exception as exc:
            trial_failed(run_id, exc)
            raise
        except BaseException:  # SIGTERM / Ctrl-C: the trial run ends with the process
            trial_interrupted(run_id)
            raise
        per_user = _per_user(trained, prepared, tcfg, name)
        if per_user is not None:
            log_per_user(run_id, *per_user)
        trial_complete(run_id, name, trained.score, trained.best_epoch)
        log(f"trial {trial.number}: {name}={trained.score:.4f} at epoch {trained.best_epoch}")
        return trained.score

    return objective


# the settings that decide what a trial trains and how it is judged (a run's params under these
# prefixes), less those that change neither, and the data's files: the data's fingerprint is compared
# instead (a run's params hold the data's counts under data.interactions, data.users, data.items)
_TRAINING = ("data.", "validation.", "graph.", "features.", "model.", "train.", "eval.")
_NOT_TRAINING = {"data.path", "data.interactions", "data.users", "data.items", "data.social", "train.progress",
                 "train.refit", "eval.chunk_size"}


def _training_settings(flat: dict, family_name: str) -> dict[str, str]:
    """`flat` (a config's flat values, or a run's params) restricted to _TRAINING, as the strings MLflow
    params hold, each `auto` train setting resolved by the family's recipe as training resolves it."""
    from recsys.config import AUTO, GENERIC

    recipe = _recipe(family_name)
    out = {}
    for key, value in flat.items():
        if not key.startswith(_TRAINING) or key in _NOT_TRAINING:
            continue
        short = key.removeprefix("train.")
        if value == AUTO and short in GENERIC:
            value = recipe.get(short, GENERIC[short])
        out[key] = ("None" if value is None else str(value))[:500]
    return out


def seed_first_trial(cfg: RunConfig, study: optuna.Study, prepared, parent_run_id: str, log=print) -> None:
    """search.first_trial_from: a new study's trial 0 is that finished run of the configured recipe,
    not the recipe trained again. The run must have trained what trial 0 would: the same settings
    (_training_settings; `auto` as the recipe resolves it), data fingerprint and commit; else a
    ConfigError names what differs. Its curves and per-user figures become a child run of the study."""
    from deploy.provenance import source_tags
    from deploy.study_runs import copy_trial_run, read_source_run
    from deploy.tracking import metric_key
    from recsys.config import ConfigError

    s = cfg.search
    name = objective_name(cfg)
    source = read_source_run(s.first_trial_from, s.first_trial_store, name)
    scratch = optuna.create_study()  # the recipe's params and distributions, as a trial of the space draws them
    scratch.enqueue_trial(configured_params(cfg))
    drawn = scratch.ask()
    family(s.family).space(drawn)
    tcfg = with_overrides(trial_config(cfg, drawn), {"train.progress": False, "train.refit": False})
    ours, theirs = (_training_settings(flat, s.family) for flat in (tcfg.flat(), source.params))
    differ = [f"{k} ({theirs.get(k, 'not on the run')} there, {v} here)" for k, v in ours.items() if theirs.get(k) != v]
    fingerprint, trained_on = prepared.data.fingerprint(), source.tags.get("graphrec.data_fingerprint")
    if trained_on != fingerprint:
        differ.append(f"the data (fingerprint {trained_on} there, {fingerprint} here)")
    commit, here = source.tags.get("mlflow.source.git.commit"), source_tags().get("mlflow.source.git.commit")
    if commit and here and commit != here:
        differ.append(f"the code (commit {commit[:10]} there, {here[:10]} here)")
    if differ:
        raise ConfigError(f"search.first_trial_from: {source.where} did not train the recipe this search starts "
                          f"from: {'; '.join(differ[:5])}{' ...' if len(differ) > 5 else ''}; give a run that did, "
                          "or unset search.first_trial_from to train the recipe as trial 0")
    run_id = copy_trial_run(tcfg, prepared.data, parent_run_id, study.study_name, 0, source, name)
    curve = source.curves[metric_key(f"valid_{name}")]
    study.add_trial(optuna.trial.create_trial(
        params=drawn.params, distributions=drawn.distributions, value=curve[source.best_epoch],
        intermediate_values=curve, user_attrs={"mlflow_run_id": run_id, "from_run": source.where}))
    log(f"trial 0: {name}={curve[source.best_epoch]:.4f} at epoch {source.best_epoch}, taken from {source.where}")


def _per_user(trained, prepared, cfg: RunConfig, name: str):
    """The trial's objective per validation user, from the model it is judged by (the same ranking as
    its score); None for an objective that is not a ranking figure (mmoe's AUC)."""
    from recsys.config import computed_metrics
    from recsys.train import evaluate_model_per_user

    if name not in computed_metrics(cfg.eval.ks) or not hasattr(trained.model, "embed"):
        return None
    users, values = evaluate_model_per_user(trained.model, trained.graph, prepared.indexed, "valid", cfg.eval)
    return users, values[name]


def objective_name(cfg: RunConfig) -> str:
    """What a study maximises: the family's validation figure (a ranking metric, or for mmoe the
    mean validation AUC of its two tasks)."""
    return family(cfg.search.family).objective(cfg)


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


@task(cache_policy=NO_CACHE)
def trial_worker(cfg: RunConfig, prepared, parent_run_id: str, deadline: Optional[float]) -> int:
    """One worker of the Prefect runner: its own study handle on the shared storage."""
    study = open_study(cfg)
    run_trials(study, make_objective(cfg, prepared, parent_run_id, get_run_logger().info, deadline),
               cfg.search.trials, deadline)
    return finished_trials(study)


def trial_config(cfg: RunConfig, trial: optuna.trial.FrozenTrial) -> RunConfig:
    """A trial's configuration, rebuilt from its parameters by replaying the space."""
    values = family(cfg.search.family).space(optuna.trial.FixedTrial(trial.params))
    return with_overrides(cfg, {"model.family": cfg.search.family, **values})


def recipe_trial(cfg: RunConfig, study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    """The first complete trial at the configured recipe (configured_params), if the study has one."""
    return _first_complete_at(study, configured_params(cfg))


def _first_complete_at(study: optuna.Study, params: dict) -> Optional[optuna.trial.FrozenTrial]:
    return next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if all(t.params.get(k) == v for k, v in params.items())), None)


def chosen_trial(cfg: RunConfig, study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, dict]:
    """The trial the search registers, and why. The best trial, unless its lead over the configured
    recipe is within search.min_gain_se standard errors of the mean paired difference over the
    validation users (each trial's figure per user, logged with its run): a lead that small is the
    validation sample's noise, and the recipe, which the search did not choose, stays.

    On Gowalla a trial led the recipe by 1.4e-5 in validation ndcg@20 (0.117387 against 0.117373,
    over 29,858 users) and its test recall@20 came out 0.0022 below the recipe's."""
    from deploy.study_runs import load_per_user

    best, recipe = study.best_trial, recipe_trial(cfg, study)
    if recipe is None or recipe.number == best.number or not cfg.search.min_gain_se:
        return best, {"reason": f"trial {best.number} has the best validation figure"}
    pair = [load_per_user(t.user_attrs.get("mlflow_run_id")) for t in (best, recipe)]
    if any(p is None for p in pair) or not np.array_equal(pair[0][0], pair[1][0]):
        return best, {"reason": f"trial {best.number} has the best validation figure (no per-user figures "
                                "to compare it with the recipe's)"}
    diff = pair[0][1] - pair[1][1]
    gain = float(diff.mean())
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    info = {"recipe_trial": recipe.number, "gain_over_recipe": gain, "gain_se": se}
    lead = f"leads the recipe (trial {recipe.number}) by {gain:.3g}, {gain / se if se else float('inf'):.2f} " \
           f"standard errors over {len(diff)} validation users"
    if gain > cfg.search.min_gain_se * se:
        return best, {**info, "reason": f"trial {best.number} {lead}"}
    return recipe, {**info, "reason": f"the recipe kept: trial {best.number} {lead}, not more than "
                                      f"search.min_gain_se={cfg.search.min_gain_se:g}"}


@flow(name="graphrec-search", log_prints=True)
def search_flow(config: Optional[RunConfig] = None) -> dict:
    from deploy.runs import ended_with_outcome, reopen_run
    from deploy.study_runs import study_parent_run
    from flows.stopping import stop_requested

    cfg = config or RunConfig()
    cfg = with_overrides(cfg, {"model.family": cfg.search.family})  # data preparation depends on it
    logger = get_run_logger()
    data = load_data(cfg)
    validate(data, cfg)
    prepared = build_graph(data, cfg)
    study = open_study(cfg, first=True)
    parent = study_parent_run(cfg, study.study_name, prepared.data)
    reopen_run(parent)  # a resumed study's run is running again, in this process
    with ended_with_outcome(parent, interrupted=stop_requested):  # ends with the search: FINISHED, FAILED, KILLED
        return _search(cfg, study, prepared, parent, logger)


def _search(cfg: RunConfig, study: optuna.Study, prepared, parent: str, logger) -> dict:
    from deploy.study_report import log_study
    from deploy.study_runs import tag_best_trial_retrain, tag_chosen_trial

    started = time.time()
    deadline = None if cfg.search.timeout is None else started + cfg.search.timeout  # one for all workers
    objective = make_objective(cfg, prepared, parent, logger.info, deadline)
    before = finished_trials(study)
    logger.info(f"study {study.study_name}: {before} of {cfg.search.trials} trials already finished")
    if cfg.search.first_trial_from and not study.get_trials(deepcopy=False):
        seed_first_trial(cfg, study, prepared, parent, logger.info)
    elif cfg.search.first_trial_from:
        logger.info(f"study {study.study_name} has trials already: search.first_trial_from is for a new study")
    parallel = cfg.search.runner == "prefect" or cfg.compute.runner == "dask"
    if parallel and study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        # the enqueued first trial runs here, before the workers start: two workers could both take
        # a waiting trial from SQLite (no row locks), and the second would fail to report it
        run_trials(study, objective, min(cfg.search.trials, before + 1), deadline)
    if parallel:
        from flows.runners import task_runner

        @flow(name="graphrec-search-trials", task_runner=task_runner(cfg.compute, cfg.search.workers))
        def trials_flow():
            futures = [trial_worker.submit(cfg, prepared, parent, deadline) for _ in range(cfg.search.workers)]
            return [f.result() for f in futures]

        trials_flow()
    else:
        run_trials(study, objective, cfg.search.trials, deadline)
    summary = log_study(study, parent)
    summary["trials_seconds"] = round(time.time() - started, 1)  # this invocation's, before any retraining
    summary["parent_run_id"] = parent
    summary["objective"] = objective_name(cfg)
    if "best_params" in summary:
        chosen, why = chosen_trial(cfg, study)
        summary.update(chosen_trial=chosen.number, chosen_value=chosen.value, chosen_params=chosen.params, **why)
        tag_chosen_trial(parent, chosen.number, why)
        logger.info(f"study {study.study_name}: {why['reason']}")
    if cfg.search.register_best and "chosen_params" in summary and chosen.user_attrs.get("from_run"):
        summary["chosen_from_run"] = chosen.user_attrs["from_run"]  # trained and gated already: not again
    elif cfg.search.register_best and "chosen_params" in summary:
        best = retrain_flow(trial_config(cfg, chosen))
        tag_best_trial_retrain(best["run_id"], parent, study.study_name)
        summary["retrain"] = {k: best[k] for k in ("run_id", "version", "promoted", "decision", "metrics")}
    logger.info(f"study {study.study_name}: {summary['trials']}")
    return summary
