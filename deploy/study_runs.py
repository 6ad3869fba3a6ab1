"""The MLflow runs of a hyperparameter study.

One parent run per study, found again by its tags when the study resumes (in this process or
another one) so that every trial of the study nests under the same run; one child run per trial,
ended with the trial's state (COMPLETE: FINISHED, PRUNED and interrupted: KILLED, FAIL: FAILED,
the error kept as a tag); and the tags that put the retrain of the best configuration under its
study. The parent run's own ending (it ends with the search) is deploy/runs.py's.
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from deploy.tracking import configure, metric_key, start_run
from recsys.config import ConfigError, RunConfig

STUDY = "graphrec.study"
ROLE = "graphrec.role"
TRIAL_STATE = "graphrec.trial_state"
PER_USER = "validation/per_user.npz"


def study_parent_run(cfg: RunConfig, study_name: str, data) -> str:
    """The study's parent run: the oldest one tagged with this study name, or a new one. Two
    workers starting a new study at once may each create one; the younger deletes its own."""
    experiment_id = configure(cfg.stores)
    client = MlflowClient()
    query = f"tags.`{STUDY}` = '{study_name}' and tags.`{ROLE}` = 'study'"

    def oldest():
        runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    found = oldest()
    if found:
        return found
    mine = start_run(cfg, data.summary(), data.fingerprint(), run_name=f"study {study_name}",
                     tags={STUDY: study_name, ROLE: "study", "graphrec.search_family": "+".join(cfg.search.searched())})
    first = oldest()
    if first != mine:
        client.delete_run(mine)
    return first


def start_trial_run(cfg: RunConfig, data, parent_run_id: str, study_name: str, number: int,
                    tags: Optional[dict[str, str]] = None) -> str:
    """A trial's child run, with the worker (host:pid) that trains it."""
    return start_run(cfg, data.summary(), data.fingerprint(), run_name=f"trial {number}",
                     parent_run_id=parent_run_id,
                     tags={STUDY: study_name, "graphrec.trial": str(number), ROLE: "trial",
                           "graphrec.worker": f"{socket.gethostname()}:{os.getpid()}", **(tags or {})})


FROM_RUN = "graphrec.trial_from_run"
EPOCH_KEYS = ("loss", "reg_loss", "lr", "epoch_seconds")  # a run's per-epoch curves besides validation's


@dataclass
class SourceRun:
    """A finished run a study takes as a trial instead of training it (search.first_trial_from):
    its settings (MLflow params), tags, per-epoch curves ({metric key: {epoch: value}}; the
    selection's, for a refit retrain), best epoch, and objective per validation user."""
    run_id: str
    where: str
    params: dict[str, str]
    tags: dict[str, str]
    curves: dict[str, dict[int, float]]
    best_epoch: int
    per_user: tuple[np.ndarray, np.ndarray]


def read_source_run(run_id: str, tracking_uri: Optional[str], objective: str) -> SourceRun:
    """The run `run_id` (in `tracking_uri`, else the configured store) as a study's trial; a
    ConfigError naming what it lacks when it cannot be one."""
    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    where = f"run {run_id}" + (f" in {tracking_uri}" if tracking_uri else "")
    fix = "give a finished retrain of the configured recipe on this data (search.first_trial_from), or unset it"
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"search.first_trial_from: cannot read {where} ({str(exc)[:200]}); {fix}") from None
    if run.info.status != "FINISHED":
        raise ConfigError(f"search.first_trial_from: {where} is {run.info.status}, not FINISHED; {fix}")
    # the epochs trained are the steps of its loss; a retrain logs its final figures one step after the
    # last epoch (log_results) and, before that was so, at step 0: neither is a point of a curve
    epochs = {m.step for m in client.get_metric_history(run_id, "loss") if m.step >= 1}
    curves = {key: {m.step: m.value for m in client.get_metric_history(run_id, key) if m.step in epochs}
              for key in run.data.metrics if key.startswith("valid_") or key in EPOCH_KEYS}
    best_epoch = int(run.data.metrics.get("best_epoch", -1))
    if best_epoch not in curves.get(metric_key(f"valid_{objective}"), {}):
        raise ConfigError(f"search.first_trial_from: {where} has no validation {objective} at its best epoch "
                          f"({best_epoch}); {fix}")
    per_user = load_per_user(run_id, client)
    if per_user is None:
        raise ConfigError(f"search.first_trial_from: {where} has no per-user validation figures ({PER_USER}; "
                          f"retrains log them since this option exists); {fix}")
    return SourceRun(run_id, where, dict(run.data.params), dict(run.data.tags), curves, best_epoch, per_user)


def copy_trial_run(cfg: RunConfig, data, parent_run_id: str, study_name: str, number: int, source: SourceRun,
                   objective: str) -> str:
    """The study's child run for a trial taken from `source`: this trial's settings, the source's
    curves and per-user figures, COMPLETE at its best epoch, tagged with the run it came from."""
    run_id = start_trial_run(cfg, data, parent_run_id, study_name, number, tags={FROM_RUN: source.where})
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, curve in source.curves.items() for step, value in curve.items()]
    client = MlflowClient()
    for at in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(run_id, metrics=metrics[at:at + 1000])
    log_per_user(run_id, *source.per_user)
    trial_complete(run_id, objective, source.curves[metric_key(f"valid_{objective}")][source.best_epoch],
                   source.best_epoch)
    return run_id


def trial_complete(run_id: str, objective: str, score: float, best_epoch: int) -> None:
    """The trial's best validation figure (the study's objective) and its epoch; FINISHED."""
    client = MlflowClient()
    client.log_metric(run_id, metric_key(f"best_valid_{objective}"), score)
    client.log_metric(run_id, "best_epoch", best_epoch)
    client.set_tag(run_id, TRIAL_STATE, "COMPLETE")
    client.set_terminated(run_id, "FINISHED")


def log_per_user(run_id: str, users: np.ndarray, values: np.ndarray) -> None:
    """A run's objective per validation user (the users ranked, in order), as an artifact: what
    a paired comparison of two trials needs, readable from any worker that reaches the tracking store."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PER_USER).name
        np.savez_compressed(path, users=np.asarray(users, np.int64), values=np.asarray(values, np.float64))
        MlflowClient().log_artifact(run_id, str(path), str(Path(PER_USER).parent))


def load_per_user(run_id: Optional[str], client: Optional[MlflowClient] = None
                  ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(users, values) that log_per_user stored on the run; None when it has none."""
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = (client or MlflowClient()).download_artifacts(run_id, PER_USER, tmp)
        except (MlflowException, OSError):
            return None
        with np.load(path) as saved:
            return saved["users"], saved["values"]


def trial_pruned(run_id: str) -> None:
    """Stopped by the pruner: KILLED, as MLflow has no state for a run cut short on purpose."""
    client = MlflowClient()
    client.set_tag(run_id, TRIAL_STATE, "PRUNED")
    client.set_terminated(run_id, "KILLED")


def trial_failed(run_id: str, exc: BaseException) -> None:
    """An error in the trial: FAILED, with the error's first 500 characters."""
    client = MlflowClient()
    client.set_tag(run_id, TRIAL_STATE, "FAIL")
    client.set_tag(run_id, "graphrec.error", f"{type(exc).__name__}: {exc}"[:500])
    client.set_terminated(run_id, "FAILED")


def trial_lost(run_id: str) -> None:
    """A trial another worker took too and finished first: this worker's run of it is deleted, so the
    study's every trial has one run."""
    MlflowClient().delete_run(run_id)


def trial_interrupted(run_id: str) -> None:
    """SIGTERM or Ctrl-C during the trial: the run ends KILLED with the process."""
    MlflowClient().set_terminated(run_id, "KILLED")


def tag_best_trial_retrain(run_id: str, parent_run_id: str, study_name: str) -> None:
    """The retrain of the best configuration nests under the study's run in MLflow's UI."""
    client = MlflowClient()
    client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
    client.set_tag(run_id, STUDY, study_name)
    client.set_tag(run_id, ROLE, "best-trial-retrain")


def tag_chosen_trial(parent_run_id: str, number: int, why: dict) -> None:
    """Which trial the search registers and why (recsys.search.choice.chosen_trial), on the study's run."""
    client = MlflowClient()
    client.set_tag(parent_run_id, "graphrec.chosen_trial", str(number))
    client.set_tag(parent_run_id, "graphrec.chosen_because", why["reason"][:500])
    for key in ("gain_over_recipe", "gain_se"):
        if key in why:
            client.log_metric(parent_run_id, key, why[key])
