"""Top-K by dot product, in numpy only (serving must not need torch)."""
from __future__ import annotations

from typing import Optional

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k largest entries per row, best first (ties: lower index first)."""
    k = min(k, scores.shape[1])
    if k == 0:
        empty = np.zeros((scores.shape[0], 0))
        return empty.astype(np.int64), empty
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)


def recommend(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    exclude: Optional[list[np.ndarray]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k items per user; `exclude[r]` lists item indices never returned for row r.

    A row holds fewer than k items when fewer remain: its tail is index -1 with score NaN. An
    excluded item, or one whose score is not finite, is never returned, however few are left."""
    scores = user_vectors.astype(np.float32) @ item_vectors.astype(np.float32).T
    masked = ~np.isfinite(scores)
    if exclude is not None:
        for row, items in enumerate(exclude):
            masked[row, np.asarray(items, dtype=np.int64)] = True
    scores[masked] = -np.inf
    idx, sc = top_k(scores, k)
    keep = ~np.take_along_axis(masked, idx, axis=1)
    # Masked entries sort last already (-inf); the stable sort keeps them last even among ties.
    order = np.argsort(~keep, axis=1, kind="stable")
    idx, sc, keep = (np.take_along_axis(a, order, axis=1) for a in (idx, sc, keep))
    return np.where(keep, idx, -1), np.where(keep, sc, np.nan)
