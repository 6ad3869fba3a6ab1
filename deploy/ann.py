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

from recsys.config_ops import AnnConfig


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


def recall_at(index, items: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 128) -> float:
    """Share of the index's top-k whose exact score reaches the exact k-th best score, averaged
    over the queries (the ann-benchmarks definition: with tied scores, any of the tied items is a
    correct answer). Exact scores are computed `chunk` queries at a time."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    items = np.asarray(items, dtype=np.float32)
    k = min(k, len(items))
    found, _ = search(index, queries, k)
    hits = 0.0
    for a in range(0, len(queries), chunk):
        scores = queries[a:a + chunk] @ items.T
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]
        got = np.take_along_axis(scores, np.maximum(found[a:a + chunk], 0), axis=1)
        hits += ((got >= kth - 1e-5 * np.abs(kth)) & (found[a:a + chunk] >= 0)).sum()
    return float(hits / (len(queries) * k))


def save(index, path: Path) -> None:
    """Written from Python, so that a failed write is an OSError with its errno (faiss's own writer
    reports a full disk as a RuntimeError without one)."""
    data = _faiss().serialize_index(index)
    with open(path, "wb") as fh:
        fh.write(memoryview(data))


def load(path: Path, threads: Optional[int] = None):
    return _faiss(threads).read_index(str(path))
