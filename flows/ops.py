"""Operations around the retrain flow: refresh only, promote by hand, roll back, and serving all
of them on schedules.

Each is a Prefect flow, so a run leaves its record (logs, a markdown artifact) in the same place
as the scheduled retrains, whether it was started by a schedule or by a person at the CLI.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.data_gates import check_drift
from flows.retrain import load_data, reconcile, refresh, serve_decision, validate, write_refresh
from flows.stopping import flow
from recsys.config import RunConfig

if TYPE_CHECKING:
    from deploy.registry import PromotionDecision


def _today(cfg: RunConfig):
    """Today's data, validated and split as the retrain flow splits it."""
    from recsys.data.loaders import with_split

    data = load_data(cfg)
    validate(data, cfg)
    return with_split(data, cfg.data)


def _snapshot_markdown(title: str, folder: Path, written: bool) -> str:
    from deploy.snapshot import read_manifest

    m = read_manifest(folder.parent, folder.name)
    if m is None:
        return f"# {title}\n\nSnapshot `{folder.name}` has no readable manifest.json"
    return "\n".join([
        f"# {title}", "", f"Snapshot `{folder.name}` ({'written' if written else 'unchanged'}), "
                          f"model {m['model_name']} v{m['model_version']}", "",
        "| users | items | vectors | ANN | ANN recall@10 | MB |", "|---:|---:|---|---|---:|---:|",
        f"| {m['counts']['users']} | {m['counts']['items']} | {m.get('vectors')} | {m['ann']['kind']} | "
        f"{m['ann'].get('recall@10', '')} | {m['bytes'] / 2**20:.1f} |"])


@flow(name="graphrec-refresh-chunks")
def refresh_chunks(cfg: RunConfig, data) -> tuple:
    """The refresh with its layer-wise chunks as tasks on this flow's task runner (Dask)."""
    from flows.runners import map_on_runner

    return write_refresh(data.indexed(), data.fingerprint(), cfg, data, map_on_runner)


@flow(name="graphrec-refresh", log_prints=True)
def refresh_flow(config: Optional[RunConfig] = None) -> dict:
    """Validate today's data and write the champion's vectors for it as a new snapshot; an
    inductive champion re-embeds new users and items. Nothing is trained."""
    cfg = config or RunConfig()
    reconcile(cfg)
    data = _today(cfg)
    check_drift(data, cfg)  # a wrong file must not replace CURRENT either (an inductive champion embeds it)
    if cfg.compute.runner == "dask":
        from flows.runners import task_runner

        folder, written = refresh_chunks.with_options(task_runner=task_runner(cfg.compute))(cfg, data)
    else:
        folder, written = refresh(data.indexed(), data.fingerprint(), cfg, data)
    create_markdown_artifact(markdown=_snapshot_markdown("graphrec refresh", folder, written),
                             key="refresh-summary", description=folder.name)
    return {"snapshot": str(folder), "written": written}


@task(cache_policy=NO_CACHE)
def gate(version: str, indexed, cfg: RunConfig, force: Optional[str]) -> PromotionDecision:
    from deploy.champion import promote_version
    from deploy.tracking import configure

    configure(cfg.stores)
    return promote_version(cfg.stores.registered_model, version, indexed, cfg.promotion, cfg.eval, force=force,
                           crown=False)


@flow(name="graphrec-promote", log_prints=True)
def promote_flow(version: str, config: Optional[RunConfig] = None, force: Optional[str] = None) -> dict:
    """Put `version` through the gates on today's data; `force` (a reason) overrides failed gates
    and is recorded. A promoted version's snapshot is written at once."""
    cfg = config or RunConfig()
    reconcile(cfg)
    data = _today(cfg)
    indexed = data.indexed()
    decision = gate(str(version), indexed, cfg, force)
    create_markdown_artifact(markdown=decision.to_markdown(), key="promotion-gates",
                             description=decision.reason[:250])
    out = {"decision": decision.as_dict(), "promoted": decision.promoted}
    if decision.promoted:
        folder, _ = serve_decision(decision, indexed, data.fingerprint(), cfg)
        out["snapshot"] = str(folder)
    return out


@task(cache_policy=NO_CACHE)
def rollback_target(cfg: RunConfig) -> tuple[str, str, Optional[Path]]:
    """(the champion, the version it replaced, that version's newest intact snapshot or None)."""
    from deploy.champion import intact_snapshot
    from deploy.registry import rollback_target as target
    from deploy.tracking import configure

    configure(cfg.stores)
    current, previous = target(cfg.stores.registered_model)
    return current, previous, intact_snapshot(cfg.stores.registered_model, previous, cfg.stores.resolved_snapshots())


@task(cache_policy=NO_CACHE)
def move_champion_back(cfg: RunConfig, current: str, previous: str, reason: str, staged: Path) -> None:
    from deploy.champion import roll_back

    roll_back(cfg.stores.registered_model, current, previous, reason, cfg.stores.resolved_snapshots(), staged,
              cfg.refresh)


@flow(name="graphrec-rollback", log_prints=True)
def rollback_flow(config: Optional[RunConfig] = None, reason: str = "") -> dict:
    """`champion` back to the version it replaced, and CURRENT back to that version's newest
    intact snapshot (written anew from today's data if none is left), as one outcome."""
    cfg = config or RunConfig()
    logger = get_run_logger()
    reconcile(cfg)
    undone, restored, folder = rollback_target(cfg)
    written = False
    if folder is None:
        logger.info(f"no intact snapshot of v{restored} is left: writing one from today's data")
        data = _today(cfg)
        folder, written = refresh(data.indexed(), data.fingerprint(), cfg, version=restored, staged=True)
    move_champion_back(cfg, undone, restored, reason, folder)
    create_markdown_artifact(
        markdown=f"# Rollback\n\nchampion v{undone} -> v{restored}. {reason}\n\n"
                 + _snapshot_markdown("snapshot", folder, written), key="rollback",
                 description=f"v{undone} -> v{restored}")
    return {"from": undone, "to": restored, "snapshot": str(folder)}


def deployments(cfg: RunConfig) -> list:
    """The retrain and refresh deployments, each on its cron schedule from the config. A retrain
    never overlaps the previous one (concurrency limit 1)."""
    from prefect.schedules import Cron

    from flows.retrain import retrain_flow

    s = cfg.schedule
    params = {"config": cfg.model_dump(mode="json")}
    out = [retrain_flow.to_deployment(name=f"{s.name}-retrain", schedule=Cron(s.retrain_cron, timezone=s.timezone),
                                      parameters=params, concurrency_limit=1,
                                      description="scheduled retraining: validate, train, gate, refresh")]
    if s.refresh_cron:
        cron = Cron(s.refresh_cron, timezone=s.timezone)
        out.append(refresh_flow.to_deployment(name=f"{s.name}-refresh", schedule=cron,
                                              parameters=params, concurrency_limit=1,
                                              description="re-embed new users and items with the champion"))
    return out
