"""Where a study lives: Optuna's RDB storage (SQLite under the store by default, or any SQLAlchemy URL
such as PostgreSQL), shared by every process working on the study, and the repair of trials a killed
process left running."""
from __future__ import annotations

import time
import warnings
from datetime import datetime, timedelta, timezone
from typing import Optional

import optuna
import sqlalchemy

from recsys.config import RunConfig
from recsys.search.study import build_study, enqueue_recipe


def study_storage(cfg: RunConfig) -> optuna.storages.RDBStorage:
    """The configured storage, with the trials' heartbeat (a killed worker's trial is failed after
    search.grace_seconds). Two workers starting at once may race to create the tables: retried."""
    s = cfg.search
    url = cfg.stores.resolved_optuna_storage()
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=s.heartbeat_seconds,
                                              grace_period=s.grace_seconds)
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def open_study(cfg: RunConfig, first: bool = False) -> optuna.Study:
    """The study on its storage, created if new, its dead trials failed. `first` (the search
    command's own process, not its workers): a new study gets the configured recipe as its first
    trial (search.first_trial_configured)."""
    # The heartbeat, trials added by hand and the matplotlib plots are marked experimental by Optuna;
    # graphrec relies on them knowingly, so the process that works on a study is not told each time.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = study_storage(cfg)
    study = build_study(cfg, storage)
    fail_unheard_trials(storage, study, cfg.search.grace_seconds or 2 * cfg.search.heartbeat_seconds)
    if first:
        enqueue_recipe(cfg, study)
    return study


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
