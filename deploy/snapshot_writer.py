"""Writing embedding snapshots: one refresh at a time, whole or not at all.

SnapshotWriter holds an exclusive lock on the snapshot root (a second refresh waits
`refresh.lock_timeout` seconds, then refuses), first removes what a crashed refresh left behind,
writes chunk by chunk under a temporary name, fsyncs every file, renames the folder into place and
only then replaces CURRENT (write, fsync, rename, fsync the folder). A crash or a failed write at
any point leaves CURRENT naming a complete snapshot. Older snapshots beyond `keep` are removed
after the switch. The layout and the reader are deploy/snapshot.py.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deploy import ann
from deploy.errors import StoreFullError, store_full
from deploy.locks import FileLock
from deploy.snapshot import CURRENT, FORMAT, TMP, SnapshotError, current_name, file_sha256, snapshots
from recsys.config_ops import RefreshConfig

LOCK = ".refresh.lock"
KINDS = ("users", "items")
log = logging.getLogger("graphrec.snapshot")


class RefreshBusyError(RuntimeError):
    """Another refresh holds the snapshot lock."""


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


def _allocated_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A float32 .npy matrix to fill in place, its blocks reserved on disk now: a memory map over a
    sparse file turns a full disk into SIGBUS at the first write to a page without a block, which
    kills the process with no cleanup and no message; reserving turns it into ENOSPC here."""
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    return matrix


def _check_room(root: Path, n_users: int, n_items: int, dim: int) -> None:
    """Refuse before writing when the file system plainly lacks room: a snapshot holds its vectors
    twice (Parquet parts and .npy matrices) and the items once more in the ANN index."""
    need = 4 * dim * (2 * n_users + 3 * n_items) + 8 * n_users
    free = shutil.disk_usage(root).free
    if free < need:
        raise StoreFullError(28, f"no room for a snapshot of {n_users} users and {n_items} items in {root}: it "
                                 f"needs about {need / 2**20:.1f} MB, {free / 2**20:.1f} MB are free; free some "
                                 "space (or set stores.snapshots elsewhere) and run again")


@contextlib.contextmanager
def _full_disk_said(root: Path) -> Iterator[None]:
    """A full file system inside the block as StoreFullError (its path and free space named)."""
    try:
        yield
    except OSError as exc:
        full = store_full(exc, root, "writing a snapshot")
        if full is None:
            raise
        raise full from None


def _lock(root: Path, timeout: float) -> FileLock:
    """The snapshot root's lock; its holder is named in the file for the refresh that gives up."""
    path = root / LOCK

    def holder() -> str:
        return f"pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"

    def busy(note: str) -> RefreshBusyError:
        return RefreshBusyError(
            f"another refresh ({note or 'another process'}) is writing to {root}; waited {timeout:g} s. "
            "Run again when it has finished (CURRENT is untouched)")

    return FileLock(path, timeout, note=holder, busy=busy)


def refresh_lock(root: Path, timeout: float) -> FileLock:
    """The lock every writer of the snapshot root holds (a context manager)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    return _lock(Path(root), timeout)


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
                 n_users: int, n_items: int, dim: int, cfg: Optional[RefreshConfig] = None,
                 extra: Optional[dict] = None):
        self.root, self.cfg = Path(root), cfg or RefreshConfig()
        self.meta = {"model_name": model_name, "model_version": str(model_version),
                     "data_fingerprint": data_fingerprint, **(extra or {})}
        self.sizes, self.dim = {"users": int(n_users), "items": int(n_items)}, int(dim)
        self.filled, self.parts = {"users": 0, "items": 0}, {"users": 0, "items": 0}
        self.seen = (np.zeros(1, np.int64), np.zeros(0, np.int32))
        self.tmp: Optional[Path] = None
        self.folder: Optional[Path] = None
        self._lock = _lock(self.root, self.cfg.lock_timeout)

    def __enter__(self) -> "SnapshotWriter":
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock.__enter__()
        try:
            with _full_disk_said(self.root):
                clean_leftovers(self.root)
                _check_room(self.root, self.sizes["users"], self.sizes["items"], self.dim)
                self.tmp = self.root / f"{TMP}{uuid.uuid4().hex}"
                self.tmp.mkdir()
                self.matrices = {}
                for kind in KINDS:
                    (self.tmp / kind).mkdir()
                    self.matrices[kind] = _allocated_memmap(self.tmp / f"{kind}.npy", (self.sizes[kind], self.dim))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _work(self) -> Path:
        """The folder being written (only inside the `with` block)."""
        if self.tmp is None:
            raise RuntimeError("the snapshot writer is not open: use it as `with SnapshotWriter(...) as w:`")
        return self.tmp

    def _add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        start, n = self.filled[kind], len(ids)
        if start + n > self.sizes[kind]:
            raise ValueError(f"{kind}: {start + n} vectors written, the snapshot was opened for {self.sizes[kind]}")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (n, self.dim):
            raise ValueError(f"{kind}: chunk of shape {vectors.shape}, expected ({n}, {self.dim})")
        self.matrices[kind][start:start + n] = vectors
        tmp = self._work()
        _write_vectors(tmp / kind / f"part-{self.parts[kind]:05d}.parquet", ids, vectors)
        self.filled[kind] += n
        self.parts[kind] += 1

    def set_seen(self, user_rows: np.ndarray, item_rows: np.ndarray) -> None:
        """(user row, item row) pairs never to recommend, in this snapshot's row numbering."""
        user_rows, item_rows = np.asarray(user_rows, np.int64), np.asarray(item_rows, np.int64)
        order = np.argsort(user_rows, kind="stable")
        indptr = np.searchsorted(user_rows[order], np.arange(self.sizes["users"] + 1)).astype(np.int64)
        self.seen = (indptr, item_rows[order].astype(np.int32))

    def commit(self, switch: bool = True) -> Path:
        """The snapshot, complete and synced, renamed into place; CURRENT then names it unless
        `switch` is false (a snapshot staged for a champion that has not moved yet: see
        deploy/handover.py). A full file system raises StoreFullError; nothing is left behind."""
        with _full_disk_said(self.root):
            return self._commit(switch)

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """The next chunk of `kind` ("users" or "items"), in row order."""
        with _full_disk_said(self.root):
            self._add(kind, ids, vectors)

    def _commit(self, switch: bool) -> Path:
        for kind in KINDS:
            if self.filled[kind] != self.sizes[kind]:
                raise ValueError(f"{kind}: {self.filled[kind]} of {self.sizes[kind]} vectors written; not committing")
        if len(self.seen[0]) != self.sizes["users"] + 1:
            self.set_seen(np.zeros(0), np.zeros(0))
        tmp = self._work()
        np.save(tmp / "seen_indptr.npy", self.seen[0])
        np.save(tmp / "seen_items.npy", self.seen[1])
        for matrix in self.matrices.values():
            matrix.flush()
        self.matrices.clear()
        items = np.load(tmp / "items.npy", mmap_mode="r")
        users = np.load(tmp / "users.npy", mmap_mode="r")
        info = {"kind": "none", "items": 0}
        if len(items):
            index, info = ann.build_index(items, self.cfg.ann, self.cfg.threads)
            if len(users):
                rng = np.random.default_rng(0)
                size = min(self.cfg.ann.recall_sample, len(users))
                sample = np.sort(rng.choice(len(users), size=size, replace=False))
                info["recall@10"] = round(ann.recall_at(index, items, users[sample], 10), 4)
                info["recall_sample"] = int(len(sample))
            ann.save(index, tmp / "items.faiss")
            del index
        created = datetime.now(timezone.utc)
        name = f"{self.meta['model_name']}-v{self.meta['model_version']}-{created:%Y%m%dT%H%M%S%fZ}"
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format": FORMAT, "name": name, **self.meta, "created": created.isoformat(),
            "counts": {"users": self.sizes["users"], "items": self.sizes["items"], "dim": self.dim,
                       "seen": int(len(self.seen[1])), "parts": dict(self.parts)},
            "ann": info,
            "bytes": sum((tmp / f).stat().st_size for f in files),
            "checksums": {f: file_sha256(tmp / f) for f in files},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for f in (*files, "manifest.json"):
            _fsync(tmp / f)
        for folder in (tmp / "users", tmp / "items", tmp):
            _fsync(folder)
        os.rename(tmp, self.root / name)
        self.tmp = None
        _fsync(self.root)
        self.folder = self.root / name
        if switch:
            switch_current(self.root, name)
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
                   cfg: Optional[RefreshConfig] = None, extra: Optional[dict] = None, switch: bool = True) -> Path:
    """A whole snapshot from in-memory matrices; `seen` has user_id / item_id columns. Returns
    the snapshot folder, which CURRENT now names (unless `switch` is false: staged)."""
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
        return w.commit(switch)


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


def prune(root: Path, keep: int) -> list[str]:
    """Remove snapshots beyond the newest `keep`; never the one CURRENT names."""
    current = current_name(root)
    removed = []
    for manifest in snapshots(root)[keep:]:
        if manifest["name"] != current:
            shutil.rmtree(Path(root) / manifest["name"], ignore_errors=True)
            removed.append(manifest["name"])
    return removed

