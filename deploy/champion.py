"""Work done from a registered version: re-scoring it on today's data, and the embedding refresh."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from mlflow.tracking import MlflowClient

from deploy.pyfunc import RecommenderModel
from deploy.gates import canary_gate, embedding_gate, metric_gate
from deploy.registry import CHAMPION, PromotionDecision, alias_version, apply, decide, require_version
from deploy.snapshot import read_manifest, refresh_lock, snapshots, switch_current, verify, write_snapshot
from deploy.tracking import load_registered
from recsys.config import ConfigError, EvalConfig, PromotionConfig, RefreshConfig
from recsys.data.types import IndexedData
from recsys.metrics import evaluate


def align(model: RecommenderModel, data: IndexedData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's vectors re-indexed to `data`'s ids. Users it has never seen get a zero vector;
    items it has never seen are marked unavailable, so they are never ranked."""
    dim = model.user_vectors.shape[1]
    u_pos = pd.Index(model.user_ids).get_indexer(data.user_ids)
    i_pos = pd.Index(model.item_ids).get_indexer(data.item_ids)
    users = np.zeros((data.n_users, dim), dtype=np.float32)
    items = np.zeros((data.n_items, dim), dtype=np.float32)
    users[u_pos >= 0] = model.user_vectors[u_pos[u_pos >= 0]]
    items[i_pos >= 0] = model.item_vectors[i_pos[i_pos >= 0]]
    return users, items, i_pos >= 0


def score_version(name: str, version: str, data: IndexedData, split: str, eval_cfg: EvalConfig) -> dict[str, float]:
    model = load_registered(name, version)
    users, items, available = align(model, data)
    return evaluate(users, items, data.split(split), data.seen_before(split), eval_cfg.ks, eval_cfg.chunk_size,
                    item_available=available)


def promote_version(name: str, version: str, data: IndexedData, promotion: PromotionConfig, eval_cfg: EvalConfig,
                    challenger_metrics: Optional[dict] = None, force: Optional[str] = None) -> PromotionDecision:
    """Run the three gates for `version` against the current champion on `data`, record the
    decision on the version and move the aliases. `challenger_metrics` (this split's figures, as
    the flow's evaluation computed them) saves re-scoring a version just trained."""
    require_version(name, version)
    split = promotion.split
    if not len(data.split(split)):
        raise ConfigError(f"promotion.split={split} has no evaluation targets in this data")
    challenger = load_registered(name, version)
    users, items, available = align(challenger, data)
    metrics = challenger_metrics or evaluate(users, items, data.split(split), data.seen_before(split), eval_cfg.ks,
                                             eval_cfg.chunk_size, item_available=available)
    if promotion.metric not in metrics:
        raise ConfigError(f"promotion.metric={promotion.metric!r} is not computed; choose one of {sorted(metrics)}")
    champion = alias_version(name, CHAMPION)
    champion_value = None
    if champion is not None and champion != str(version):
        champion_value = score_version(name, champion, data, split, eval_cfg)[promotion.metric]
    gates = [
        metric_gate(promotion.metric, metrics[promotion.metric], champion_value, champion, promotion.tolerance),
        embedding_gate(challenger.user_ids, challenger.user_vectors, challenger.item_ids, challenger.item_vectors,
                       data.n_users, data.n_items, promotion.embedding),
        canary_gate(users, items, data.seen_before(split), available, promotion.canary),
    ]
    return apply(name, decide(str(version), gates, champion, force))


def refresh_snapshot(name: str, root: Path, data: IndexedData, fingerprint: str,
                     cfg: Optional[RefreshConfig] = None, reembed: Optional[Callable] = None,
                     version: Optional[str] = None) -> tuple[Path, bool, str]:
    """Write the champion's (or `version`'s) vectors as the CURRENT snapshot. Returns (folder,
    written, note). With `reembed` (bundle -> (ids, user vectors, item vectors)) an inductive
    model embeds today's users and items, new ones included; otherwise the vectors stored at
    training are written and the note says which users and items of the data have none.
    Nothing is written when CURRENT already holds the same vectors of this version on this data."""
    if version is not None:
        require_version(name, version)
    version = version or alias_version(name, CHAMPION)
    if version is None:
        raise RuntimeError(f"registered model {name!r} has no '{CHAMPION}' alias: nothing to refresh from")
    model = load_registered(name, version)
    mode = "reembedded" if reembed is not None and model.bundle is not None else "stored"
    current = read_manifest(root)
    if current and current["model_version"] == version and current["data_fingerprint"] == fingerprint \
            and current["model_name"] == name and current.get("vectors") == mode \
            and verify(root, current["name"]) is None:
        return Path(root) / current["name"], False, ""
    if mode == "reembedded":
        data, users, items = reembed(model.bundle)
        user_ids, item_ids, note = data.user_ids, data.item_ids, ""
    else:
        user_ids, users, item_ids, items = model.user_ids, model.user_vectors, model.item_ids, model.item_vectors
        note = _missing_note(name, version, model, data)
    everything = np.concatenate([data.train, data.valid, data.test])
    seen = pd.DataFrame({"user_id": data.user_ids[everything[:, 0]], "item_id": data.item_ids[everything[:, 1]]})
    folder = write_snapshot(root, name, version, user_ids, users, item_ids, items, seen, fingerprint, cfg,
                            extra={"vectors": mode})
    return folder, True, note


def _missing_note(name: str, version: str, model: RecommenderModel, data: IndexedData) -> str:
    new_users = int((pd.Index(model.user_ids).get_indexer(data.user_ids) < 0).sum())
    new_items = int((pd.Index(model.item_ids).get_indexer(data.item_ids) < 0).sum())
    if not new_users and not new_items:
        return ""
    family = MlflowClient().get_model_version(name, version).tags.get("graphrec.family", "?")
    return (f"champion {name} v{version} ({family}) has no vector for {new_users} users and {new_items} items "
            "of this data: they are not in the snapshot and appear after the next retrain")


def restore_snapshot(name: str, version: str, root: Path, cfg: Optional[RefreshConfig] = None) -> Optional[Path]:
    """Point CURRENT at the newest intact snapshot of `version`; None if none is left."""
    cfg = cfg or RefreshConfig()
    with refresh_lock(root, cfg.lock_timeout):
        for manifest in snapshots(root):
            if manifest["model_name"] == name and manifest["model_version"] == str(version) \
                    and verify(root, manifest["name"]) is None:
                switch_current(root, manifest["name"])
                return Path(root) / manifest["name"]
    return None
