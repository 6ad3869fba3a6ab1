"""Heuristic cold-start edges: give nodes without interactions neighbours they can borrow from.

* A cold user (no training interactions) is linked to warm users sharing attributes (university,
  title, company, ...); the weight is the number of shared attributes, ties broken towards the
  more active warm user, at most k per cold user.
* A cold item is linked to its k nearest warm items by cosine of their content vectors (e.g. text
  embeddings of the description), weighted by that cosine (negatives dropped).

Edges run warm -> cold (the cold node reads from its neighbours, never the reverse), as
(src, dst, weight) index arrays for build_graph's SIMILAR_USER / SIMILAR_ITEM edge types.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def cold_nodes(n: int, train_index: np.ndarray) -> np.ndarray:
    """Boolean mask of nodes that never occur in training."""
    seen = np.zeros(n, dtype=bool)
    seen[train_index] = True
    return ~seen


def attribute_edges(
    attributes: pd.DataFrame,
    is_cold: np.ndarray,
    activity: np.ndarray,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attributes: one row per node (aligned with node index), one column per attribute."""
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    if len(cold) == 0 or len(warm) == 0 or attributes.shape[1] == 0:
        return _empty()
    pairs = []
    for col in attributes.columns:
        values = attributes[col].astype(str).where(attributes[col].notna(), None).to_numpy()
        warm_by_value = pd.Series(warm).groupby(values[warm]).apply(np.asarray).to_dict()
        for c in cold:
            match = warm_by_value.get(values[c]) if values[c] is not None else None
            if match is not None:
                pairs.append(np.stack([np.full(len(match), c), match], axis=1))
    if not pairs:
        return _empty()
    pairs = np.concatenate(pairs)
    frame = pd.DataFrame({"cold": pairs[:, 0], "warm": pairs[:, 1]})
    frame = frame.groupby(["cold", "warm"], sort=False).size().rename("shared").reset_index()
    frame["activity"] = activity[frame["warm"].to_numpy()]
    frame = frame.sort_values(["cold", "shared", "activity", "warm"], ascending=[True, False, False, True])
    frame = frame.groupby("cold", sort=False).head(k)
    return (frame["warm"].to_numpy(np.int64), frame["cold"].to_numpy(np.int64),
            frame["shared"].to_numpy(np.float32))


def similarity_edges(
    vectors: np.ndarray,
    is_cold: np.ndarray,
    k: int = 10,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    if len(cold) == 0 or len(warm) == 0:
        return _empty()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kk = min(k, len(warm))
    src, dst, w = [], [], []
    for start in range(0, len(cold), chunk_size):
        rows = cold[start:start + chunk_size]
        sims = unit[rows] @ unit[warm].T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, axis=1)
        keep = top_sims > 0
        src.append(warm[top[keep]])
        dst.append(np.repeat(rows, kk).reshape(-1, kk)[keep])
        w.append(top_sims[keep])
    return (np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64),
            np.concatenate(w).astype(np.float32))


def _empty():
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
