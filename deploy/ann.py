"""The item index a snapshot serves from: faiss, inner product.

Small catalogues get an exact flat index; above `exact_below` items an HNSW graph (or IVF cells,
if configured). Every build measures its own recall@10 against exact search on a sample of the
snapshot's users, so the manifest says how approximate the approximate index is.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from recsys.config import AnnConfig


def _faiss(threads: Optional[int] = None):
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    return faiss


def resolved_kind(n_items: int, cfg: AnnConfig) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "exact" if n_items < cfg.exact_below else "hnsw"


def build_index(items: np.ndarray, cfg: AnnConfig, threads: Optional[int] = None):
    """(index, info) over `items` (n, d) float32."""
    faiss = _faiss(threads)
    items = np.ascontiguousarray(items, dtype=np.float32)
    n, d = items.shape
    kind = resolved_kind(n, cfg)
    t0 = time.perf_counter()
    info: dict = {"kind": kind, "items": int(n), "dim": int(d)}
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.hnsw.efSearch = cfg.ef_search
        info.update(m=cfg.hnsw_m, ef_construction=cfg.ef_construction, ef_search=cfg.ef_search)
    elif kind == "ivf":
        lists = cfg.ivf_lists or max(1, min(n // 39, int(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        train = items[rng.choice(n, size=min(n, lists * 64), replace=False)] if n > lists * 64 else items
        index.train(train)
        index.nprobe = min(cfg.nprobe, lists)
        info.update(lists=lists, nprobe=index.nprobe)
    else:
        raise ValueError(f"unknown ANN kind {kind!r}")
    index.add(items)
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    return index, info


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(item rows, scores), best first; -1 where fewer than k items exist."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    if hasattr(index, "hnsw") and index.hnsw.efSearch < k:
        index.hnsw.efSearch = k
    scores, rows = index.search(queries, k)
    return rows, scores


def recall_at(index, items: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k that the index returns, averaged over the queries."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = np.argpartition(-(queries @ np.asarray(items, dtype=np.float32).T), min(k, len(items) - 1), axis=1)[:, :k]
    found, _ = search(index, queries, k)
    hits = [len(np.intersect1d(a, b)) for a, b in zip(exact, found)]
    return float(np.mean(hits) / min(k, len(items)))


def save(index, path: Path) -> None:
    _faiss().write_index(index, str(path))


def load(path: Path, threads: Optional[int] = None):
    return _faiss(threads).read_index(str(path))
