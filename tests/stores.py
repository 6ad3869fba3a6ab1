"""What a test reads back from a store after a command: the registry's champion, what CURRENT
names and serves. (Shared by the tests that stop or kill commands part-way.)"""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from deploy.snapshot import Snapshot, current_name
from recsys.config import load_config


def registry(root: Path, snapshots: Path | None = None):
    cfg = load_config(None, [f"stores.root={root}"] + ([f"stores.snapshots={snapshots}"] if snapshots else []))
    uri = cfg.stores.resolved_tracking_uri()
    return MlflowClient(uri, registry_uri=uri), cfg


def state(root: Path, snapshots: Path | None = None) -> dict:
    """The champion and the snapshot CURRENT names; every recorded decision is whole."""
    client, cfg = registry(root, snapshots)
    name = cfg.stores.registered_model
    for v in client.search_model_versions(f"name='{name}'"):  # a decision is recorded whole, or not at all
        if "promotion.decision" in v.tags:
            assert {"promotion.reason", "promotion.decided_at"} <= set(v.tags), v.tags
    return {"champion": str(client.get_registered_model(name).aliases["champion"]),
            "CURRENT": current_name(cfg.stores.resolved_snapshots())}


def serves(root: Path, version: str, snapshots: Path | None = None) -> None:
    """CURRENT is intact, serves `version` and answers a top-5."""
    _, cfg = registry(root, snapshots)
    snap = Snapshot.open(cfg.stores.resolved_snapshots())
    assert snap.manifest["model_version"] == version and snap.fallback_from is None
    assert len(snap.recommend(str(snap.user_ids[0]), k=5)) == 5


def runs(root: Path) -> list:
    """The experiment's runs, newest first."""
    client, cfg = registry(root)
    exp = client.get_experiment_by_name(cfg.stores.experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]) if exp else []
