"""The retraining flow: validate -> build graph -> train -> evaluate -> register -> promote -> refresh.

Each task is a few lines calling recsys/, validation/ and deploy/. I/O tasks retry; a data
validation failure does not (the data will not fix itself): it publishes its report as a markdown
artifact and fails the flow before anything is trained or registered.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.data_gates import DriftCheck, check_drift, record_profile
from flows.phases import Phases
from flows.stopping import flow
from recsys.config import RunConfig
from recsys.data.types import IndexedData, RecData

if TYPE_CHECKING:  # torch and DGL load when a task runs, not when the CLI starts
    from pathlib import Path

    from deploy.registry import PromotionDecision
    from recsys.prepare import Prepared
    from recsys.trained import Trained
    from validation.report import ValidationReport


def _transient(task, task_run, state) -> bool:
    """Retry I/O hiccups, not input that is wrong (a missing or empty file stays wrong) nor a full disk."""
    from deploy.errors import RegistryError, StoreFullError
    from recsys.data.loaders import DataLoadError

    try:
        state.result()
    except (DataLoadError, RegistryError, FileNotFoundError, ValueError, StoreFullError):  # ConfigError: a ValueError
        return False
    except Exception:
        return True
    return False


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def load_data(cfg: RunConfig) -> RecData:
    from recsys.data.loaders import load_data as load

    return load(cfg.data)


@task(cache_policy=NO_CACHE)
def validate(data: RecData, cfg: RunConfig) -> ValidationReport:
    from validation.data import raise_if_failed, validate_data

    needs_time = cfg.data.split.kind == "temporal" and "split" not in data.interactions
    report = validate_data(data, cfg.validation, require_timestamp=needs_time)
    create_markdown_artifact(markdown=report.to_markdown(), key="data-validation",
                             description=report.summary().splitlines()[0])
    for check in report.warnings:  # the data passes; the user still hears of it
        get_run_logger().warning(f"data validation: {check.line()}")
    return raise_if_failed(report)


@task(cache_policy=NO_CACHE)
def build_graph(data: RecData, cfg: RunConfig) -> Prepared:
    from recsys.prepare import prepare

    return prepare(data, cfg)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def start_run(cfg: RunConfig, data: RecData) -> str:
    from deploy.tracking import start_run as start

    return start(cfg, data.summary(), data.fingerprint(), data=data)


@task(cache_policy=NO_CACHE)
def train(prepared, cfg: RunConfig, run_id: str, drift: Optional[DriftCheck] = None) -> Trained:
    """The family's whole training (recsys/families.py), from the champion or from scratch
    (train.start, recsys/warm.py), in this process or on Ray workers (compute.trainer); every
    stage's epochs go to the MLflow run, and how it started too."""
    from deploy.warm_store import record_start
    from recsys.warm import choose

    state, why = _champion_state(cfg)
    failures = drift.report.failures if drift is not None and not drift.report.success else []
    warm, why = choose(cfg.train, state, why, "; ".join(f.line() for f in failures))
    if cfg.compute.trainer == "ray":
        from deploy.ray_train import train_on_ray

        trained = train_on_ray(prepared, cfg, run_id, warm, why, get_run_logger().info)
    else:
        trained = _train_here(prepared, cfg, run_id, warm, why)
    if trained.start is not None:
        record_start(run_id, trained.start)
    return trained


def _train_here(prepared, cfg: RunConfig, run_id: str, warm, why: str) -> Trained:
    """In this process, going on from the state an interrupted run of the same training kept (deploy/resume.py)."""
    from mlflow import MlflowClient

    from deploy.resume import loop_checkpoint, resumed_line
    from deploy.tracking import EpochLogger
    from recsys.fit import train as train_family
    from recsys.train_state import keeping

    logger = get_run_logger()
    checkpoint = loop_checkpoint(cfg, prepared.data.fingerprint(), None if warm is None else str(warm.version))
    with keeping(checkpoint):
        trained = train_family(prepared, cfg, lambda stage: [EpochLogger(run_id, prefix=stage)], logger.info,
                               warm=warm, why=why)
    if checkpoint is not None:
        for note in checkpoint.notes:
            logger.warning(note)
        if checkpoint.resumed:
            MlflowClient().set_tag(run_id, "graphrec.resumed", resumed_line(checkpoint))
        checkpoint.clear()
    return trained


def _champion_state(cfg: RunConfig):
    """(the champion's warm-start state or None, why none); nothing is read for train.start=scratch."""
    if cfg.train.start == "scratch":
        return None, "train.start=scratch"
    from deploy.errors import tracking_store_failure
    from deploy.warm_store import champion_warm_state

    with tracking_store_failure(cfg.stores, "reading the champion's warm-start state",
                                "Nothing was trained or registered; run again when the store is reachable"):
        return champion_warm_state(cfg.stores.registered_model)


@task(cache_policy=NO_CACHE)
def evaluate(trained: Trained, prepared, cfg: RunConfig, run_id: str) -> dict[str, dict[str, float]]:
    """Validation and test metrics; test again for warm and cold users apart when there are cold
    users with test targets (a cold-start split). After a refit (train.refit), validation is the
    model chosen on it (the refit one trained on it) and test the refit model, which serves."""
    from deploy.study_runs import log_per_user
    from deploy.tracking import log_results
    from recsys.device import resolve_device
    from recsys.metrics import means, ranked_users
    from recsys.train import evaluate_model, evaluate_model_per_user

    indexed, device = prepared.indexed, resolve_device(cfg.compute.device)
    judged = {"valid": trained.selection or trained, "test": trained}
    metrics = {}
    if len(indexed.split("valid")):  # per user too: a search may take this run as its recipe's trial
        users, values = evaluate_model_per_user(judged["valid"].model, judged["valid"].graph, indexed, "valid",
                                                cfg.eval, device=device)
        metrics["valid"] = means(users, values)
        log_per_user(run_id, users, values[cfg.train.monitor])
    if len(indexed.split("test")):
        metrics["test"] = evaluate_model(trained.model, trained.graph, indexed, "test", cfg.eval, device=device)
    cold_with_targets = prepared.cold_users[indexed.test[:, 0]].any() if len(indexed.test) else False
    if cold_with_targets:
        for name, mask in (("test_warm", ~prepared.cold_users), ("test_cold", prepared.cold_users)):
            metrics[name] = evaluate_model(trained.model, trained.graph, indexed, "test", cfg.eval, user_mask=mask,
                                           device=device)
    r = (trained.selection or trained).result
    ranked = {f"eval_users_{s}": len(ranked_users(indexed.split(s), indexed.n_users, max_users=cfg.eval.max_users,
                                                  sample_seed=cfg.eval.seed))
              for s in metrics if s in ("valid", "test")}
    figures = {"best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "train_seconds": r.seconds,
               "batch_size_used": r.batch_size, **ranked}
    if trained.selection is not None:
        figures.update(refit_seconds=trained.result.seconds, refit_batch_size_used=trained.result.batch_size)
    log_results(run_id, r.history, metrics, figures, {**r.recipe, **trained.result.recipe})
    if trained.heads is not None:
        from deploy.tracking import log_multitask

        log_multitask(run_id, trained.heads, cfg.model.mmoe.head)
    return metrics


def _registry_change(cfg: RunConfig, action: str):
    """A failure of the tracking store while the registry changes, said plainly: nothing moved."""
    from deploy.errors import tracking_store_failure

    return tracking_store_failure(cfg.stores, action, "The champion, its aliases and the CURRENT snapshot are "
                                  "unchanged; run again when the store is reachable")


@task(cache_policy=NO_CACHE)
def register(trained: Trained, prepared, cfg: RunConfig, run_id: str) -> str:
    from deploy.tracking import log_and_register_model, name_run_for_version
    from deploy.warm_store import record_warm_state, start_tags
    from recsys.device import embed_on, resolve_device
    from recsys.families import family
    from recsys.inductive import Bundle

    model, indexed = trained.model, trained.indexed or prepared.indexed
    model.eval()
    device = resolve_device(cfg.compute.device)
    users, items = embed_on(model, trained.graph, device)
    gate = None
    if trained.selection is not None:  # refit: the gates judge the model chosen on validation
        trained.selection.model.eval()
        gate = [v.detach().cpu().numpy() for v in embed_on(trained.selection.model, trained.selection.graph, device)]
    bundle = None
    if model.inductive:
        g = trained.graph
        bundle = Bundle(cfg.model.model_dump(), model.state_dict(), indexed, g.use_social, g.user_features,
                        g.item_features, prepared.user_encoder, prepared.item_encoder)
    tags = {"graphrec.family": cfg.model.family, "graphrec.inductive": str(model.inductive).lower(),
            "graphrec.refit": str(gate is not None).lower()}
    if trained.start is not None:
        tags.update(start_tags(trained.start))
    with _registry_change(cfg, "registering the model"):
        # detached: a family may return its tables themselves (mf: the embedding weights, which require grad)
        version = log_and_register_model(run_id, cfg.stores.registered_model, indexed.user_ids,
                                         users.detach().cpu().numpy(), indexed.item_ids, items.detach().cpu().numpy(),
                                         indexed.train, tags, bundle, gate)
        name_run_for_version(run_id, version)
        start = trained.start
        record_warm_state(run_id, trained.warm_model(), family(cfg.model.family).trained_model(cfg.model).name,
                          cfg.model.model_dump(), prepared.indexed.user_ids, prepared.indexed.item_ids,
                          start.chain if start is not None and start.mode == "champion" else 0,
                          (trained.selection or trained).stages)
        return version


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def promote(version: str, metrics: dict, indexed: IndexedData, cfg: RunConfig) -> PromotionDecision:
    """Metric, embedding and canary gates; the decision goes to the version's tags and to a
    Prefect artifact. A promoted version takes `champion` later, in `crown`, with its snapshot."""
    from deploy.champion import promote_version

    with _registry_change(cfg, "gating and moving aliases"):  # a split without targets: ConfigError from there
        decision = promote_version(cfg.stores.registered_model, version, indexed, cfg.promotion, cfg.eval,
                                   challenger_metrics=metrics.get(cfg.promotion.split), crown=False)
    create_markdown_artifact(markdown=decision.to_markdown(), key="promotion-gates",
                             description=decision.reason[:250])
    return decision


def write_refresh(indexed: IndexedData, fingerprint: str, cfg: RunConfig, data: Optional[RecData] = None,
                  map_chunks=None, version: Optional[str] = None, staged: bool = False) -> tuple[Path, bool]:
    """The champion's (or `version`'s) vectors as the CURRENT snapshot (`staged`: written whole but
    not switched to; `crown` does that). Given today's `data`, an inductive champion re-embeds
    every user and item of it (new ones included, `map_chunks` running the chunks) instead of
    writing its stored vectors. Returns (folder, written)."""
    from deploy.champion import refresh_snapshot
    from deploy.tracking import configure

    configure(cfg.stores)
    reembed = None
    if data is not None:
        from recsys.serving import reembed as embed

        def reembed(bundle):
            return embed(bundle, data, cfg, map_chunks)

    folder, written, missing = refresh_snapshot(cfg.stores.registered_model, cfg.stores.resolved_snapshots(),
                                                indexed, fingerprint, cfg.refresh, reembed,
                                                version or cfg.refresh.version, switch=not staged)
    if missing:
        get_run_logger().warning(missing)
    return folder, written


refresh = task(name="refresh", retries=2, retry_delay_seconds=2, retry_condition_fn=_transient,
               cache_policy=NO_CACHE)(write_refresh)


@task(cache_policy=NO_CACHE)
def crown(decision, staged, cfg: RunConfig) -> None:
    """The promoted version becomes champion and its staged snapshot CURRENT, as one outcome."""
    from deploy.champion import crown as take

    with _registry_change(cfg, "moving the champion alias"):
        take(cfg.stores.registered_model, decision, cfg.stores.resolved_snapshots(), staged, cfg.refresh)


@task(cache_policy=NO_CACHE)
def reconcile(cfg: RunConfig) -> None:
    """Champion and CURRENT brought back into agreement if an earlier command was stopped between
    moving one and the other (deploy/handover.py); said in the log when it happens."""
    from deploy.champion import reconcile_serving
    from deploy.tracking import configure

    configure(cfg.stores)
    done = reconcile_serving(cfg.stores.registered_model, cfg.stores.resolved_snapshots(), cfg.refresh)
    if done:
        get_run_logger().warning(done)


def serve_decision(decision, indexed: IndexedData, fingerprint: str, cfg: RunConfig, phases=None):
    """After the gates: a promoted version's snapshot, staged, then champion and CURRENT moved
    together; otherwise the champion's snapshot for today's data. Returns (folder or None, written)."""
    run = phases.run if phases is not None else (lambda name, fn, *a, **k: fn(*a, **k))
    pinned = cfg.refresh.version
    if decision.promoted and not pinned:
        staged, written = run("refresh", refresh, indexed, fingerprint, cfg, version=decision.version, staged=True)
        run("crown", crown, decision, staged, cfg)
        return staged, written
    if decision.promoted:
        run("crown", crown, decision, None, cfg)
    if decision.promoted or decision.previous_champion or pinned:
        return run("refresh", refresh, indexed, fingerprint, cfg)
    return None, False


def _summary_markdown(cfg, metrics, decision, run_url, snapshot, written) -> str:
    ks = cfg.eval.ks
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision", "hit")]
    lines = ["# graphrec retrain", "", f"MLflow run: [{run_url}]({run_url})", "",
             "| split | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for split, m in metrics.items():
        lines.append(f"| {split} | " + " | ".join(f"{m[n]:.4f}" for n in names) + " |")
    verdict = "promoted to champion" if decision.promoted else "kept as challenger (champion unchanged)"
    lines += ["", f"**Model version {decision.version}: {verdict}.** {decision.reason}", "",
              f"Snapshot: `{snapshot.name}` ({'written' if written else 'unchanged'})" if snapshot else
              "Snapshot: none (no champion yet)"]
    return "\n".join(lines)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def log_phases(run_id: str, seconds: dict[str, float], peak_rss_mb: dict[str, float]) -> None:
    from deploy.tracking import log_phase_figures

    log_phase_figures(run_id, seconds, peak_rss_mb)


@flow(name="graphrec-retrain", log_prints=True)
def retrain_flow(config: Optional[RunConfig] = None) -> dict:
    cfg = config or RunConfig()
    logger = get_run_logger()
    phases = Phases()
    reconcile(cfg)
    data = phases.run("load", load_data, cfg)
    report = phases.run("validate", validate, data, cfg)
    drift = phases.run("drift", check_drift, data, cfg)  # today's data against the champion's, before training
    prepared = phases.run("build_graph", build_graph, data, cfg)
    data, indexed = prepared.data, prepared.indexed
    logger.info(f"data {data.name}: {data.summary()}")
    run_id = phases.run("start_run", start_run, cfg, data)
    from deploy.runs import ended_with_outcome
    from flows.stopping import stop_requested

    with ended_with_outcome(run_id, interrupted=stop_requested):  # FAILED on an error, KILLED when stopped
        phases.run("record_profile", record_profile, run_id, drift, prepared, cfg)
        trained = phases.run("train", train, prepared, cfg, run_id, drift)
        metrics = phases.run("evaluate", evaluate, trained, prepared, cfg, run_id)
        version = phases.run("register", register, trained, prepared, cfg, run_id)
        decision = phases.run("promote", promote, version, metrics, indexed, cfg)
        snapshot, written = serve_decision(decision, indexed, data.fingerprint(), cfg, phases)
        if snapshot is None:  # the model's first version failed its gates: no champion, so nothing serves yet
            logger.warning(f"version {version} failed the promotion gates and the model has no champion yet: "
                           "no snapshot written (the version's tags name the failed gate; "
                           "graphrec promote --force --reason promotes it)")
        log_phases(run_id, dict(phases), dict(phases.peak_rss_mb))  # phase_<name>_seconds, _peak_rss_mb

    from deploy.tracking import run_link

    url = run_link(run_id, cfg.stores)
    create_markdown_artifact(markdown=_summary_markdown(cfg, metrics, decision, url, snapshot, written),
                             key="retrain-summary", description=decision.reason)
    logger.info(f"version {version}: {decision.reason}; snapshot {snapshot.name if snapshot else 'none'}")
    return {"run_id": run_id, "version": version, "promoted": decision.promoted, "metrics": metrics,
            "decision": decision.as_dict(), "snapshot": str(snapshot) if snapshot else None, "run_url": url,
            "phase_seconds": dict(phases), "phase_peak_rss_mb": dict(phases.peak_rss_mb),
            "refit_epochs": trained.result.recipe.get("refit_epochs"),
            "data_warnings": [check.line() for check in report.warnings]}
