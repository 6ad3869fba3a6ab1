"""Versioned embedding snapshots and the CURRENT pointer a recommender reads.

A snapshot is a folder:

    users/part-00000.parquet ...  id + vector, one part per chunk (for other readers: Spark, DuckDB)
    items/part-00000.parquet ...
    users.npy, items.npy          the same vectors as float32 matrices, memory-mapped when serving
    seen_indptr.npy, seen_items.npy  per user row, the item rows never to recommend (CSR)
    items.faiss                   the ANN index over items.npy
    manifest.json                 model, data fingerprint, counts, ANN figures, sha256 of every file

Writing (SnapshotWriter) holds an exclusive lock on the snapshot root (a second refresh waits,
then refuses), first removes what a crashed refresh left behind, writes chunk by chunk under a
temporary name, fsyncs every file, renames the folder into place and only then replaces CURRENT
(write, fsync, rename, fsync the folder). A crash or a failed write at any point leaves CURRENT
naming a complete snapshot. Older snapshots beyond `keep` are removed after the switch.

Reading (Snapshot.open) verifies the checksums of the snapshot CURRENT names; if they do not
match, it refuses that snapshot and serves the newest older one that does, and says so. A CURRENT
that is empty, unreadable or names no snapshot (while intact snapshots exist) is treated the same
way: the newest intact snapshot is served, with a warning naming the pointer's problem.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deploy import ann
from recsys.config import RefreshConfig

CURRENT = "CURRENT"
LOCK = ".refresh.lock"
TMP = ".tmp-"
FORMAT = 2
KINDS = ("users", "items")
log = logging.getLogger("graphrec.snapshot")


class SnapshotError(RuntimeError):
    """No usable snapshot (none written yet, or none that passes its checksums)."""


class RefreshBusyError(RuntimeError):
    """Another refresh holds the snapshot lock."""


class UnknownUserError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_vectors(path: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": pa.array(np.asarray(ids).astype(str)), "vector": column}), path)


def _read_ids(folder: Path) -> np.ndarray:
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        return np.zeros(0, dtype=object)
    return np.concatenate([pq.read_table(p, columns=["id"]).column("id").to_numpy(zero_copy_only=False)
                           for p in parts])


class _Lock:
    """An exclusive flock on the snapshot root, waiting up to `timeout` seconds."""

    def __init__(self, root: Path, timeout: float):
        self.path, self.timeout, self.handle = root / LOCK, timeout, None

    def __enter__(self) -> "_Lock":
        self.handle = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    self.handle.seek(0)
                    holder = self.handle.read().strip() or "another process"
                    self.handle.close()
                    raise RefreshBusyError(
                        f"another refresh ({holder}) is writing to {self.path.parent}; waited {self.timeout:g} s. "
                        "Run again when it has finished (CURRENT is untouched)") from None
                time.sleep(0.2)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.handle.truncate(0)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def refresh_lock(root: Path, timeout: float) -> _Lock:
    """The lock every writer of the snapshot root holds (a context manager)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return _Lock(Path(root), timeout)


def clean_leftovers(root: Path) -> list[str]:
    """Remove what a crashed refresh left: temporary folders and CURRENT.tmp files. Call only
    while holding the lock (nobody else is writing then)."""
    removed = []
    for path in Path(root).glob(f"{TMP}*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path.name)
    for path in Path(root).glob(f"{CURRENT}.tmp-*"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        log.warning("removed leftovers of an interrupted refresh: %s", ", ".join(removed))
    return removed


class SnapshotWriter:
    """Streams a snapshot to disk chunk by chunk:

        with SnapshotWriter(root, name, version, fingerprint, n_users, n_items, dim, cfg) as w:
            for ids, vectors in user_chunks: w.add("users", ids, vectors)
            for ids, vectors in item_chunks: w.add("items", ids, vectors)
            w.set_seen(user_rows, item_rows)
            folder = w.commit()
    """

    def __init__(self, root: Path, model_name: str, model_version: str, data_fingerprint: str,
                 n_users: int, n_items: int, dim: int, cfg: Optional[RefreshConfig] = None, extra: Optional[dict] = None):
        self.root, self.cfg = Path(root), cfg or RefreshConfig()
        self.meta = {"model_name": model_name, "model_version": str(model_version),
                     "data_fingerprint": data_fingerprint, **(extra or {})}
        self.sizes, self.dim = {"users": int(n_users), "items": int(n_items)}, int(dim)
        self.filled, self.parts = {"users": 0, "items": 0}, {"users": 0, "items": 0}
        self.seen = (np.zeros(1, np.int64), np.zeros(0, np.int32))
        self.tmp: Optional[Path] = None
        self.folder: Optional[Path] = None
        self._lock = _Lock(self.root, self.cfg.lock_timeout)

    def __enter__(self) -> "SnapshotWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            clean_leftovers(self.root)
            self.tmp = self.root / f"{TMP}{uuid.uuid4().hex}"
            self.tmp.mkdir()
            self.matrices = {}
            for kind in KINDS:
                (self.tmp / kind).mkdir()
                self.matrices[kind] = np.lib.format.open_memmap(
                    self.tmp / f"{kind}.npy", mode="w+", dtype=np.float32, shape=(self.sizes[kind], self.dim))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """The next chunk of `kind` ("users" or "items"), in row order."""
        start, n = self.filled[kind], len(ids)
        if start + n > self.sizes[kind]:
            raise ValueError(f"{kind}: {start + n} vectors written, the snapshot was opened for {self.sizes[kind]}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (n, self.dim):
            raise ValueError(f"{kind}: chunk of shape {vectors.shape}, expected ({n}, {self.dim})")
        self.matrices[kind][start:start + n] = vectors
        _write_vectors(self.tmp / kind / f"part-{self.parts[kind]:05d}.parquet", ids, vectors)
        self.filled[kind] += n
        self.parts[kind] += 1

    def set_seen(self, user_rows: np.ndarray, item_rows: np.ndarray) -> None:
        """(user row, item row) pairs never to recommend, in this snapshot's row numbering."""
        user_rows, item_rows = np.asarray(user_rows, np.int64), np.asarray(item_rows, np.int64)
        order = np.argsort(user_rows, kind="stable")
        indptr = np.searchsorted(user_rows[order], np.arange(self.sizes["users"] + 1)).astype(np.int64)
        self.seen = (indptr, item_rows[order].astype(np.int32))

    def commit(self) -> Path:
        for kind in KINDS:
            if self.filled[kind] != self.sizes[kind]:
                raise ValueError(f"{kind}: {self.filled[kind]} of {self.sizes[kind]} vectors written; not committing")
        if len(self.seen[0]) != self.sizes["users"] + 1:
            self.set_seen(np.zeros(0), np.zeros(0))
        np.save(self.tmp / "seen_indptr.npy", self.seen[0])
        np.save(self.tmp / "seen_items.npy", self.seen[1])
        for matrix in self.matrices.values():
            matrix.flush()
        self.matrices.clear()
        items = np.load(self.tmp / "items.npy", mmap_mode="r")
        users = np.load(self.tmp / "users.npy", mmap_mode="r")
        info = {"kind": "none", "items": 0}
        if len(items):
            index, info = ann.build_index(items, self.cfg.ann, self.cfg.threads)
            if len(users):
                rng = np.random.default_rng(0)
                sample = np.sort(rng.choice(len(users), size=min(self.cfg.ann.recall_sample, len(users)), replace=False))
                info["recall@10"] = round(ann.recall_at(index, items, users[sample], 10), 4)
                info["recall_sample"] = int(len(sample))
            ann.save(index, self.tmp / "items.faiss")
            del index
        created = datetime.now(timezone.utc)
        name = f"{self.meta['model_name']}-v{self.meta['model_version']}-{created:%Y%m%dT%H%M%S%fZ}"
        files = sorted(str(p.relative_to(self.tmp)) for p in self.tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT, "name": name, **self.meta, "created": created.isoformat(),
            "counts": {"users": self.sizes["users"], "items": self.sizes["items"], "dim": self.dim,
                       "seen": int(len(self.seen[1])), "parts": dict(self.parts)},
            "ann": info,
            "bytes": sum((self.tmp / f).stat().st_size for f in files),
            "checksums": {f: _sha256(self.tmp / f) for f in files},
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for f in (*files, "manifest.json"):
            _fsync(self.tmp / f)
        for folder in (self.tmp / "users", self.tmp / "items", self.tmp):
            _fsync(folder)
        os.rename(self.tmp, self.root / name)
        self.tmp = None
        _fsync(self.root)
        switch_current(self.root, name)
        self.folder = self.root / name
        prune(self.root, self.cfg.keep)
        return self.folder

    def __exit__(self, *exc) -> None:
        try:
            self.matrices = {}
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
        finally:
            self._lock.__exit__()


def _chunks(n: int, size: int) -> Iterable[slice]:
    return (slice(a, min(a + size, n)) for a in range(0, n, size))


def write_snapshot(root: Path, model_name: str, model_version: str, user_ids: np.ndarray, user_vectors: np.ndarray,
                   item_ids: np.ndarray, item_vectors: np.ndarray, seen: pd.DataFrame, data_fingerprint: str,
                   cfg: Optional[RefreshConfig] = None, extra: Optional[dict] = None) -> Path:
    """A whole snapshot from in-memory matrices; `seen` has user_id / item_id columns. Returns
    the snapshot folder, which CURRENT now names."""
    cfg = cfg or RefreshConfig()
    user_vectors, item_vectors = np.asarray(user_vectors), np.asarray(item_vectors)
    with SnapshotWriter(root, model_name, model_version, data_fingerprint, len(user_ids), len(item_ids),
                        user_vectors.shape[1], cfg, extra) as w:
        for kind, ids, vectors in (("users", user_ids, user_vectors), ("items", item_ids, item_vectors)):
            for part in _chunks(len(ids), cfg.chunk_rows):
                w.add(kind, np.asarray(ids)[part], vectors[part])
        u = pd.Index(np.asarray(user_ids).astype(str)).get_indexer(seen["user_id"].astype(str))
        i = pd.Index(np.asarray(item_ids).astype(str)).get_indexer(seen["item_id"].astype(str))
        keep = (u >= 0) & (i >= 0)
        w.set_seen(u[keep], i[keep])
        return w.commit()


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
    _fsync(root)


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


def prune(root: Path, keep: int) -> list[str]:
    """Remove snapshots beyond the newest `keep`; never the one CURRENT names."""
    current = current_name(root)
    removed = []
    for manifest in snapshots(root)[keep:]:
        if manifest["name"] != current:
            shutil.rmtree(Path(root) / manifest["name"], ignore_errors=True)
            removed.append(manifest["name"])
    return removed


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
        if _sha256(path) != digest:
            return f"snapshot {name}: {f} does not match its checksum"
    return None


class Snapshot:
    """A snapshot opened for serving: vectors memory-mapped, the ANN index loaded once on first
    use. Answers top-k for known users, never returning what they have already seen."""

    def __init__(self, root: Path, name: str, fallback_from: Optional[str] = None, problem: Optional[str] = None,
                 threads: Optional[int] = None):
        self.root, self.path, self.threads = Path(root), Path(root) / name, threads
        self.manifest = read_manifest(root, name)
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
            problem = _pointer_problem(root)
            good = next((m["name"] for m in snapshots(root) if verify(root, m["name"]) is None), None)
            if good is None:
                detail = "" if problem.endswith("is missing") else f" ({problem})"
                raise SnapshotError(f"no snapshot yet in {root}{detail}: run `graphrec retrain` "
                                    "(or `graphrec refresh`) first")
            log.error("%s; serving the newest intact snapshot %s", problem, good)
            return cls(root, good, fallback_from=CURRENT, problem=problem, threads=threads)
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
