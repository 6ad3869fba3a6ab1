"""Versioned embedding snapshots and the CURRENT pointer a recommender reads.

A snapshot is a folder: users.parquet and items.parquet (id, vector), seen.parquet (the
(user, item) pairs a recommendation must not repeat) and manifest.json (model name and version,
data fingerprint, counts, sha256 of every file). It is written under a temporary name, every file
fsynced, then renamed into place; only then is CURRENT replaced (write CURRENT.tmp, fsync,
rename, fsync the folder). A crash at any point leaves CURRENT naming a complete snapshot.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.ranking import recommend

CURRENT = "CURRENT"
FILES = ("users.parquet", "items.parquet", "seen.parquet")


class SnapshotError(RuntimeError):
    """No usable snapshot (none written yet, or one that fails its checksums)."""


class UnknownUserError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_vectors(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    pq.write_table(pa.table({"id": pa.array(ids.astype(str)), "vector": column}), path)


def _read_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    vec = table.column("vector").combine_chunks()
    dim = vec.type.list_size
    return ids, vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


def write_snapshot(
    root: Path,
    model_name: str,
    model_version: str,
    user_ids: np.ndarray,
    user_vectors: np.ndarray,
    item_ids: np.ndarray,
    item_vectors: np.ndarray,
    seen: pd.DataFrame,
    data_fingerprint: str,
) -> Path:
    """Write a complete snapshot, then point CURRENT at it. Returns the snapshot folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc)
    name = f"{model_name}-v{model_version}-{created:%Y%m%dT%H%M%S%fZ}"
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write_vectors(tmp / "users.parquet", user_ids, user_vectors)
        _write_vectors(tmp / "items.parquet", item_ids, item_vectors)
        seen[["user_id", "item_id"]].astype(str).to_parquet(tmp / "seen.parquet", index=False)
        manifest = {
            "name": name,
            "model_name": model_name,
            "model_version": str(model_version),
            "data_fingerprint": data_fingerprint,
            "created": created.isoformat(),
            "counts": {"users": int(len(user_ids)), "items": int(len(item_ids)), "seen": int(len(seen)),
                       "dim": int(user_vectors.shape[1])},
            "checksums": {f: _sha256(tmp / f) for f in FILES},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for f in (*FILES, "manifest.json"):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, root / name)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    switch_current(root, name)
    return root / name


def switch_current(root: Path, name: str) -> None:
    root = Path(root)
    if not (root / name / "manifest.json").is_file():
        raise SnapshotError(f"cannot point CURRENT at {name}: it is not a complete snapshot")
    tmp = root / f"{CURRENT}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def current_name(root: Path) -> Optional[str]:
    pointer = Path(root) / CURRENT
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def read_manifest(root: Path, name: Optional[str] = None) -> Optional[dict]:
    name = name or current_name(root)
    if name is None:
        return None
    path = Path(root) / name / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Snapshot:
    """A loaded snapshot that answers top-k queries by exact dot product."""

    path: Path
    manifest: dict
    user_ids: np.ndarray
    user_vectors: np.ndarray
    item_ids: np.ndarray
    item_vectors: np.ndarray
    seen: dict[str, np.ndarray]

    @classmethod
    def open(cls, root: Path, verify: bool = True) -> "Snapshot":
        root = Path(root)
        name = current_name(root)
        if name is None:
            raise SnapshotError(f"no snapshot yet in {root}: run `graphrec retrain` first")
        path = root / name
        manifest = read_manifest(root, name)
        if manifest is None:
            raise SnapshotError(f"CURRENT names {name}, which has no manifest.json in {root}")
        if verify:
            for f, digest in manifest["checksums"].items():
                if not (path / f).is_file() or _sha256(path / f) != digest:
                    raise SnapshotError(f"snapshot {name}: {f} is missing or does not match its checksum")
        user_ids, user_vectors = _read_vectors(path / "users.parquet")
        item_ids, item_vectors = _read_vectors(path / "items.parquet")
        seen_df = pd.read_parquet(path / "seen.parquet")
        item_pos = pd.Index(item_ids)
        seen_df["pos"] = item_pos.get_indexer(seen_df["item_id"])
        seen = {u: g.to_numpy() for u, g in seen_df[seen_df["pos"] >= 0].groupby("user_id")["pos"]}
        return cls(path, manifest, user_ids, user_vectors, item_ids, item_vectors, seen)

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        user_id = str(user_id)
        if not hasattr(self, "_rows"):
            self._rows = pd.Index(self.user_ids)
        row = self._rows.get_indexer([user_id])[0]
        if row < 0:
            raise UnknownUserError(
                f"user {user_id!r} is not in snapshot {self.manifest['name']} ({len(self.user_ids)} users); "
                "a new user appears after the next retrain and refresh"
            )
        exclude = [self.seen.get(user_id, np.zeros(0, dtype=np.int64))] if exclude_seen else None
        idx, scores = recommend(self.user_vectors[row:row + 1], self.item_vectors, k, exclude)
        keep = idx[0] >= 0
        return pd.DataFrame({
            "rank": np.arange(1, keep.sum() + 1),
            "item_id": self.item_ids[idx[0][keep]],
            "score": scores[0][keep],
        })
