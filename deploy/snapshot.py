"""Embedding snapshots as a recommender reads them: the folder layout, the CURRENT pointer, the
manifests and their checksums, and `Snapshot`, which serves top-k from one. (Writing a snapshot,
under the refresh lock, is deploy/snapshot_writer.py.)

A snapshot is a folder:

    users/part-00000.parquet ...  id + vector, one part per chunk (for other readers: Spark, DuckDB)
    items/part-00000.parquet ...
    users.npy, items.npy          the same vectors as float32 matrices, memory-mapped when serving
    seen_indptr.npy, seen_items.npy  per user row, the item rows never to recommend (CSR)
    items.faiss                   the ANN index over items.npy
    manifest.json                 model, data fingerprint, counts, ANN figures, sha256 of every file

Reading (Snapshot.open) verifies the checksums of the snapshot CURRENT names; if they do not
match, it refuses that snapshot and serves the newest older one that does, and says so. A CURRENT
that is empty, unreadable or names no snapshot (while intact snapshots exist) is treated the same
way: the newest intact snapshot is served, with a warning naming the pointer's problem.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from deploy import ann

CURRENT = "CURRENT"
TMP = ".tmp-"
FORMAT = 2
log = logging.getLogger("graphrec.snapshot")


class SnapshotError(RuntimeError):
    """No usable snapshot (none written yet, or none that passes its checksums)."""


class UnknownUserError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def file_sha256(path: Path) -> str:
    """The checksum a manifest keeps per file (read in 1 MiB blocks: snapshots are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_ids(folder: Path) -> np.ndarray:
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return np.zeros(0, dtype=object)
    return np.concatenate([pq.read_table(p, columns=["id"]).column("id").to_numpy(zero_copy_only=False)
                           for p in parts])


def current_name(root: Path) -> Optional[str]:
    """The snapshot CURRENT names; None when there is no CURRENT or it is empty. Bytes that are
    not UTF-8 are kept as replacement characters (such a name matches no snapshot)."""
    pointer = Path(root) / CURRENT
    try:
        raw = pointer.read_bytes()
    except OSError:
        return None
    return raw.decode("utf-8", errors="replace").strip() or None


def _pointer_problem(root: Path) -> str:
    """Why CURRENT names no snapshot: missing, empty, unreadable."""
    pointer = Path(root) / CURRENT
    if not pointer.exists():
        return f"{pointer} is missing"
    if not pointer.is_file():
        return f"{pointer} is not a file"
    try:
        pointer.read_bytes()
    except OSError as exc:
        return f"{pointer} cannot be read ({exc.strerror})"
    return f"{pointer} is empty"


def read_manifest(root: Path, name: Optional[str] = None) -> Optional[dict]:
    name = name or current_name(root)
    if name is None:
        return None
    path = Path(root) / name / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def snapshots(root: Path) -> list[dict]:
    """Manifests of the complete snapshots under root, newest first."""
    found = []
    for path in Path(root).glob("*/manifest.json"):
        if path.parent.name.startswith(TMP):
            continue
        manifest = read_manifest(root, path.parent.name)
        if manifest and manifest.get("format") == FORMAT:
            found.append(manifest)
    return sorted(found, key=lambda m: m["created"], reverse=True)


def verify(root: Path, name: str) -> Optional[str]:
    """None if every file of the snapshot matches its checksum, else what is wrong."""
    manifest = read_manifest(root, name)
    if manifest is None:
        return f"snapshot {name} has no readable manifest.json"
    if manifest.get("format") != FORMAT:
        return f"snapshot {name} is in an older format ({manifest.get('format', 1)}); run a refresh"
    for f, digest in manifest["checksums"].items():
        path = Path(root) / name / f
        if not path.is_file():
            return f"snapshot {name}: {f} is missing"
        if file_sha256(path) != digest:
            return f"snapshot {name}: {f} does not match its checksum"
    return None


class Snapshot:
    """A snapshot opened for serving: vectors memory-mapped, the ANN index loaded once on first
    use. Answers top-k for known users, never returning what they have already seen."""

    def __init__(self, root: Path, name: str, fallback_from: Optional[str] = None, problem: Optional[str] = None,
                 threads: Optional[int] = None):
        self.root, self.path, self.threads = Path(root), Path(root) / name, threads
        manifest = read_manifest(root, name)
        if manifest is None:
            raise SnapshotError(f"snapshot {name} in {root} has no readable manifest.json")
        self.manifest: dict = manifest
        self.fallback_from, self.problem = fallback_from, problem
        self.user_vectors = np.load(self.path / "users.npy", mmap_mode="r")
        self.item_vectors = np.load(self.path / "items.npy", mmap_mode="r")
        self._seen_ptr = np.load(self.path / "seen_indptr.npy", mmap_mode="r")
        self._seen_items = np.load(self.path / "seen_items.npy", mmap_mode="r")
        self._user_index: Optional[pd.Index] = None
        self._item_ids: Optional[np.ndarray] = None
        self._index = None

    @classmethod
    def open(cls, root: Path, verify_files: bool = True, threads: Optional[int] = None) -> "Snapshot":
        root = Path(root)
        name = current_name(root)
        if name is None:
            pointer = _pointer_problem(root)
            good = next((m["name"] for m in snapshots(root) if verify(root, m["name"]) is None), None)
            if good is None:
                detail = "" if pointer.endswith("is missing") else f" ({pointer})"
                raise SnapshotError(f"no snapshot yet in {root}{detail}: run `graphrec retrain` "
                                    "(or `graphrec refresh`) first")
            log.error("%s; serving the newest intact snapshot %s", pointer, good)
            return cls(root, good, fallback_from=CURRENT, problem=pointer, threads=threads)
        problem: Optional[str]
        if "/" in name or "\x00" in name or name in (".", ".."):
            problem = f"{root / CURRENT} names {name[:80]!r}, which is not a snapshot name"
        else:
            problem = verify(root, name) if verify_files else (
                None if read_manifest(root, name) else f"snapshot {name} has no readable manifest.json")
        if problem is None:
            return cls(root, name, threads=threads)
        older = [m["name"] for m in snapshots(root) if m["name"] != name]
        good = next((n for n in older if verify(root, n) is None), None)
        if good is None:
            raise SnapshotError(f"{problem}; refused, and no older snapshot in {root} passes its checksums. "
                                "Run a refresh to write a new one")
        log.error("%s; refused: serving the previous snapshot %s", problem, good)
        return cls(root, good, fallback_from=name, problem=problem, threads=threads)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def user_ids(self) -> pd.Index:
        if self._user_index is None:
            self._user_index = pd.Index(_read_ids(self.path / "users"))
        return self._user_index

    @property
    def item_ids(self) -> np.ndarray:
        if self._item_ids is None:
            self._item_ids = _read_ids(self.path / "items")
        return self._item_ids

    @property
    def index(self):
        if self._index is None and (self.path / "items.faiss").is_file():
            self._index = ann.load(self.path / "items.faiss", self.threads)
        return self._index

    def rows(self, user_ids: Iterable[str]) -> np.ndarray:
        asked = [str(u) for u in user_ids]
        rows = self.user_ids.get_indexer(asked)
        if (rows < 0).any():
            missing = [u for u, r in zip(asked, rows) if r < 0][:5]
            raise UnknownUserError(
                f"user {missing[0]!r} is not in snapshot {self.name} ({len(self.user_ids)} users)"
                + (f" (nor {missing[1:]})" if len(missing) > 1 else "")
                + "; a new user appears after the next refresh")
        return rows

    def seen(self, row: int) -> np.ndarray:
        return np.asarray(self._seen_items[self._seen_ptr[row]:self._seen_ptr[row + 1]])

    def recommend_rows(self, rows: np.ndarray, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(item rows, scores) per user row, -1 / NaN padded."""
        rows = np.asarray(rows)
        out_idx = np.full((len(rows), k), -1, dtype=np.int64)
        out_scores = np.full((len(rows), k), np.nan, dtype=np.float32)
        if self.index is None or not len(rows):
            return out_idx, out_scores
        seen = [self.seen(r) if exclude_seen else np.zeros(0, np.int32) for r in rows]
        extra = max(len(s) for s in seen)
        found, scores = ann.search(self.index, self.user_vectors[rows], k + extra)
        for j, s in enumerate(seen):
            keep = (found[j] >= 0) & ~np.isin(found[j], s)
            got = found[j][keep][:k]
            out_idx[j, :len(got)] = got
            out_scores[j, :len(got)] = scores[j][keep][:k]
        return out_idx, out_scores

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        idx, scores = self.recommend_rows(self.rows([user_id]), k, exclude_seen)
        keep = idx[0] >= 0
        return pd.DataFrame({"rank": np.arange(1, keep.sum() + 1), "item_id": self.item_ids[idx[0][keep]],
                             "score": scores[0][keep]})
