"""search.first_trial_from: a new study's trial 0 taken from a finished retrain of the recipe on the
same data, instead of training the recipe again. The run must have trained exactly what trial 0
would: the same settings, data and code; else the refusal names what differs."""
from __future__ import annotations

from typing import Optional

import optuna

from deploy.provenance import source_tags
from deploy.study_runs import copy_trial_run, read_source_run
from deploy.tracking import metric_key
from recsys.config import AUTO, GENERIC, ConfigError, RunConfig, with_overrides
from recsys.recipe import recipe_values
from recsys.search.space import configured_params, draw, objective_name, trial_config

# the settings that decide what a trial trains and how it is judged (a run's params under these
# prefixes), less those that change neither, and the data's files: the data's fingerprint is compared
# instead (a run's params hold the data's counts under data.interactions, data.users, data.items)
_TRAINING = ("data.", "validation.", "graph.", "features.", "model.", "train.", "eval.")
_NOT_TRAINING = {"data.path", "data.interactions", "data.users", "data.items", "data.social", "train.progress",
                 "train.refit", "eval.chunk_size"}


def _training_settings(flat: dict, family_name: str) -> dict[str, str]:
    """`flat` (a config's flat values, or a run's params) restricted to _TRAINING, as the strings MLflow
    params hold, each `auto` train setting resolved by the family's recipe as training resolves it."""
    recipe = recipe_values(family_name)
    out = {}
    for key, value in flat.items():
        if not key.startswith(_TRAINING) or key in _NOT_TRAINING:
            continue
        short = key.removeprefix("train.")
        if value == AUTO and short in GENERIC:
            value = recipe[short]
        out[key] = ("None" if value is None else str(value))[:500]
    return out


def same_as_champion(cfg: RunConfig, fingerprint: str) -> Optional[str]:
    """The champion's version when its run trained `cfg`'s settings (as _training_settings reads
    them, `auto` resolved) on data of this fingerprint: registering `cfg` again would add a copy of
    it. None without a champion or when anything differs."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        champion = client.get_model_version_by_alias(cfg.stores.registered_model, "champion")
    except MlflowException:  # no registered model, or no champion yet
        return None
    if champion.run_id is None:
        return None
    run = client.get_run(champion.run_id)
    if run.data.tags.get("graphrec.data_fingerprint") != fingerprint:
        return None
    ours = _training_settings(cfg.flat(), cfg.model.family)
    theirs = _training_settings(run.data.params, cfg.model.family)
    return str(champion.version) if all(theirs.get(k) == v for k, v in ours.items()) else None


def seed_first_trial(cfg: RunConfig, study: optuna.Study, prepared, parent_run_id: str, log=print) -> None:
    """search.first_trial_from: a new study's trial 0 is that finished run of the configured recipe,
    not the recipe trained again. The run must have trained what trial 0 would: the same settings
    (_training_settings; `auto` as the recipe resolves it), data fingerprint and commit; else a
    ConfigError names what differs. Its curves and per-user figures become a child run of the study."""
    s = cfg.search
    name = objective_name(cfg)
    if s.first_trial_from is None:
        raise ValueError("seed_first_trial needs search.first_trial_from")
    source = read_source_run(s.first_trial_from, s.first_trial_store, name)
    scratch = optuna.create_study()  # the recipe's params and distributions, as a trial of the space draws them
    scratch.enqueue_trial(configured_params(cfg))
    drawn = scratch.ask()
    draw(cfg, drawn)
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
