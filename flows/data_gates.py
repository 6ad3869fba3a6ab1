"""Tasks of the retraining flow that compare today's data with the champion's: the drift check
before anything trains, and the record of today's profile on the run (what the next retrain
compares with, and the evaluation users the next metric gate scores on)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from recsys.config import RunConfig
from recsys.data.types import RecData

if TYPE_CHECKING:
    from validation.drift import DataProfile, DriftReport


@dataclass
class DriftCheck:
    profile: DataProfile  # today's data
    report: DriftReport


@task(cache_policy=NO_CACHE)
def check_drift(data: RecData, cfg: RunConfig) -> DriftCheck:
    """Today's profile against the champion's; beyond the bounds: DataDriftError (exit 3) with the
    report, unless promotion.data_drift.allow lets it through."""
    from validation.drift import compare_profiles, profile_data, raise_if_drifted

    logger = get_run_logger()
    today = profile_data(data)
    drift = cfg.promotion.data_drift
    if drift.enabled:
        champion, version, why = _read_champion(cfg)
    else:
        champion, version, why = None, None, "promotion.data_drift.enabled=false"
    report = compare_profiles(today, champion, version, drift, why)
    create_markdown_artifact(markdown=report.to_markdown(), key="data-drift",
                             description=report.summary().splitlines()[0][:250])
    if report.skipped:
        logger.info(report.summary())
    elif not report.success and report.allowed:
        logger.warning(report.summary())
    return DriftCheck(today, raise_if_drifted(report))


def _read_champion(cfg: RunConfig):
    """The champion's profile; a store that fails is said plainly (nothing has started yet)."""
    from deploy.champion import champion_profile
    from deploy.errors import tracking_store_failure

    with tracking_store_failure(cfg.stores, "reading the champion's data profile",
                                "Nothing was trained or registered; run again when the store is reachable"):
        return champion_profile(cfg.stores)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def record_profile(run_id: str, check: DriftCheck, prepared, cfg: RunConfig) -> None:
    from deploy.profile import record_profile as record
    from deploy.profile import reference_sample, tag_drift

    split = cfg.promotion.split
    indexed = prepared.indexed
    reference = reference_sample(indexed, split, cfg.promotion.reference) if len(indexed.split(split)) else None
    record(run_id, check.profile, reference)
    tag_drift(run_id, check.report)
