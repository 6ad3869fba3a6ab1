"""Work done from a registered version: re-scoring it on today's data, and the embedding refresh."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlflow.tracking import MlflowClient

from deploy.pyfunc import RecommenderModel
from deploy.registry import CHAMPION, alias_version
from deploy.snapshot import read_manifest, write_snapshot
from deploy.tracking import load_registered
from recsys.config import EvalConfig
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


def refresh_snapshot(name: str, root: Path, data: IndexedData, fingerprint: str) -> tuple[Path, bool, str]:
    """Write the champion's vectors as the CURRENT snapshot. Returns (folder, written, note);
    nothing is written when CURRENT already holds this champion version on this data. The note
    says plainly which users and items of the data the champion has no vector for."""
    version = alias_version(name, CHAMPION)
    if version is None:
        raise RuntimeError(f"registered model {name!r} has no '{CHAMPION}' alias: nothing to refresh from")
    model = load_registered(name, version)
    note = _missing_note(name, version, model, data)
    current = read_manifest(root)
    if current and current["model_version"] == version and current["data_fingerprint"] == fingerprint \
            and current["model_name"] == name:
        return Path(root) / current["name"], False, note
    everything = np.concatenate([data.train, data.valid, data.test])
    seen = pd.DataFrame({"user_id": data.user_ids[everything[:, 0]], "item_id": data.item_ids[everything[:, 1]]})
    folder = write_snapshot(root, name, version, model.user_ids, model.user_vectors, model.item_ids,
                            model.item_vectors, seen, fingerprint)
    return folder, True, note


def _missing_note(name: str, version: str, model: RecommenderModel, data: IndexedData) -> str:
    new_users = int((pd.Index(model.user_ids).get_indexer(data.user_ids) < 0).sum())
    new_items = int((pd.Index(model.item_ids).get_indexer(data.item_ids) < 0).sum())
    if not new_users and not new_items:
        return ""
    family = MlflowClient().get_model_version(name, version).tags.get("graphrec.family", "?")
    return (f"champion {name} v{version} ({family}) has no vector for {new_users} users and {new_items} items "
            "of this data: they are not in the snapshot and appear after the next retrain")
