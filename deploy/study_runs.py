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
from pathlib import Path
from typing import Optional

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from deploy.tracking import configure, metric_key, start_run
from recsys.config import RunConfig

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
                     tags={STUDY: study_name, ROLE: "study", "graphrec.search_family": cfg.search.family})
    first = oldest()
    if first != mine:
        client.delete_run(mine)
    return first


def start_trial_run(cfg: RunConfig, data, parent_run_id: str, study_name: str, number: int) -> str:
    """A trial's child run, with the worker (host:pid) that trains it."""
    return start_run(cfg, data.summary(), data.fingerprint(), run_name=f"trial {number}",
                     parent_run_id=parent_run_id,
                     tags={STUDY: study_name, "graphrec.trial": str(number), ROLE: "trial",
                           "graphrec.worker": f"{socket.gethostname()}:{os.getpid()}"})


def trial_complete(run_id: str, objective: str, score: float, best_epoch: int) -> None:
    """The trial's best validation figure (the study's objective) and its epoch; FINISHED."""
    client = MlflowClient()
    client.log_metric(run_id, metric_key(f"best_valid_{objective}"), score)
    client.log_metric(run_id, "best_epoch", best_epoch)
    client.set_tag(run_id, TRIAL_STATE, "COMPLETE")
    client.set_terminated(run_id, "FINISHED")


def log_per_user(run_id: str, users: np.ndarray, values: np.ndarray) -> None:
    """A trial's objective per validation user (the users ranked, in order), as an artifact: what
    a paired comparison of two trials needs, readable from any worker that reaches the tracking store."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PER_USER).name
        np.savez_compressed(path, users=np.asarray(users, np.int64), values=np.asarray(values, np.float64))
        MlflowClient().log_artifact(run_id, str(path), str(Path(PER_USER).parent))


def load_per_user(run_id: Optional[str]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(users, values) that log_per_user stored on the run; None when it has none."""
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient().download_artifacts(run_id, PER_USER, tmp)
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
    """Which trial the search registers and why (flows.search.chosen_trial), on the study's run."""
    client = MlflowClient()
    client.set_tag(parent_run_id, "graphrec.chosen_trial", str(number))
    client.set_tag(parent_run_id, "graphrec.chosen_because", why["reason"][:500])
    for key in ("gain_over_recipe", "gain_se"):
        if key in why:
            client.log_metric(parent_run_id, key, why[key])
