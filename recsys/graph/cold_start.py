"""Heuristic cold-start edges: give nodes without interactions neighbours they can borrow from.

* A cold user (no training interactions) is linked to warm users sharing attributes (university,
  title, company, ...); the weight is the number of shared attributes, ties broken towards the
  more active warm user, at most k per cold user.
* A cold item is linked to its k nearest warm items by cosine of their content vectors (e.g. text
  embeddings of the description), weighted by that cosine (negatives dropped).

Edges run warm -> cold (the cold node reads from its neighbours, never the reverse), as
(src, dst, weight) index arrays for build_graph's SIMILAR_USER / SIMILAR_ITEM edge types.

Both run in time linear in the number of nodes (bench/results/cold_start_scale.md):

* attribute_edges never matches a cold user against a whole value group (a university can have
  thousands of warm members). For each combination of up to `max_combination` attributes
  (university; university + title; ...) it keeps, per combination of values, only the
  `candidates` (default k) most active warm users holding it (ties: lower index), joins the cold
  users to those lists with array operations (no per-user loop) and counts the shared attributes
  of every candidate pair exactly: at most cold x combinations x candidates pairs, whatever the
  group sizes. This is exact, the same edges as matching every warm user, whenever
  candidates >= k and there are at most max_combination attributes: if warm user u is in a cold
  user's true top k sharing the attribute set S, every warm user holding S and more active than
  u (or as active, lower index) shares at least as much and ranks above u, so u is among the
  first k of S's list. With more attributes than max_combination it is approximate: a warm user
  whose shared set is larger than max_combination is found only through its sub-combinations,
  whose lists may be filled by more active users sharing fewer attributes.
* similarity_edges searches exactly (blocked cold x warm products) when there are at most
  `exact_below` cold or warm nodes, a cost linear in the other side; above that, a faiss HNSW
  graph over the warm vectors (approximate: recall of the exact k nearest is measured in
  bench/results/cold_start_scale.md and tests/test_cold_start_scale.py; the build is multi-threaded, so
  near-ties may resolve differently between runs).
"""
from __future__ import annotations

from itertools import combinations
from typing import Optional

import numpy as np
import pandas as pd

from recsys.data.ids import text_codes


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
    candidates: Optional[int] = None,
    max_combination: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """attributes: one row per node (aligned with node index), one column per attribute.

    Values match as text (1 and "1" are the same value); missing values match nothing. Edges are
    ordered by cold node, then shared attributes (descending), warm activity (descending), warm
    index. `candidates` (default k): warm users considered per combination of values, the most
    active first; combinations of up to `max_combination` attributes. Exact when candidates >= k
    and there are at most max_combination attributes (see the module docstring).
    """
    is_cold = np.asarray(is_cold, dtype=bool)
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    if len(cold) == 0 or len(warm) == 0 or attributes.shape[1] == 0:
        return _empty()
    m = candidates if candidates is not None else k
    if m < 1 or max_combination < 1:
        raise ValueError("candidates and max_combination must be at least 1")
    n = len(is_cold)
    activity = np.asarray(activity)
    # warm users most active first, then by index: every candidate list is a prefix of this order
    by_activity = warm[np.argsort(-activity[warm].astype(np.float64), kind="stable")]
    codes = [text_codes(attributes[col]) for col in attributes.columns]
    keys = []
    for size in range(1, min(max_combination, len(codes)) + 1):
        for subset in combinations(codes, size):
            keys.extend(_join_candidates(_combined_codes(subset), cold, by_activity, m, n))
    if not keys:
        return _empty()
    pairs = np.unique(np.concatenate(keys))
    pair_cold, pair_warm = pairs // n, pairs % n
    shared = np.zeros(len(pairs), dtype=np.int64)
    for code in codes:  # every shared attribute counts, not only those of the combination that found the pair
        a = code[pair_cold]
        shared += (a >= 0) & (a == code[pair_warm])
    # order by cold, shared (descending), then the warm user's place in by_activity, as one int64 key
    place = np.empty(n, dtype=np.int64)
    place[by_activity] = np.arange(len(by_activity))
    width = len(codes) + 1
    if n * width * len(by_activity) < 2**62:  # one distinct key per pair
        order = np.argsort((pair_cold * width + (len(codes) - shared)) * len(by_activity) + place[pair_warm])
    else:
        order = np.lexsort((place[pair_warm], -shared, pair_cold))
    pair_cold, pair_warm, shared = pair_cold[order], pair_warm[order], shared[order]
    keep = _rank_in_runs(pair_cold) < k
    return pair_warm[keep], pair_cold[keep], shared[keep].astype(np.float32)


def _join_candidates(code: np.ndarray, cold: np.ndarray, by_activity: np.ndarray, m: int, n: int) -> list:
    """cold * n + warm for each cold user and the first m warm users (in by_activity order) of its value."""
    cand, cand_code = _first_per_value(by_activity, code[by_activity], m)
    if len(cand) == 0:
        return []
    counts = np.bincount(cand_code, minlength=int(code.max()) + 1)
    starts = np.cumsum(counts) - counts
    c_code = code[cold]
    has = c_code >= 0
    c_nodes, c_code = cold[has], c_code[has]
    per = counts[c_code]
    total = int(per.sum())
    if total == 0:
        return []
    # each cold user's slice of `cand` (the candidates of its value), flattened
    offsets = np.repeat(starts[c_code] - (np.cumsum(per) - per), per) + np.arange(total)
    return [np.repeat(c_nodes.astype(np.int64), per) * n + cand[offsets]]


def similarity_edges(
    vectors: np.ndarray,
    is_cold: np.ndarray,
    k: int = 10,
    chunk_size: int = 1024,
    exact_below: int = 4096,
    hnsw_m: int = 16,
    ef_construction: int = 40,
    ef_search: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cold node's k nearest warm nodes by cosine (positive cosines only).

    Exact when there are at most `exact_below` cold or warm nodes; otherwise a faiss HNSW index
    (`hnsw_m` links per node, `ef_construction`, `ef_search` at least k) over the warm vectors.
    """
    is_cold = np.asarray(is_cold, dtype=bool)
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    if len(cold) == 0 or len(warm) == 0:
        return _empty()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kk = min(k, len(warm))
    if min(len(cold), len(warm)) <= exact_below:
        return _exact_neighbours(unit, cold, warm, kk, chunk_size)
    return _hnsw_neighbours(unit, cold, warm, kk, hnsw_m, ef_construction, ef_search)


def _exact_neighbours(unit, cold, warm, kk, chunk_size):
    warm_t = np.ascontiguousarray(unit[warm].T)
    src, dst, w = [], [], []
    for start in range(0, len(cold), chunk_size):
        rows = cold[start:start + chunk_size]
        sims = unit[rows] @ warm_t
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, axis=1)
        keep = top_sims > 0
        src.append(warm[top[keep]])
        dst.append(np.repeat(rows, kk).reshape(-1, kk)[keep])
        w.append(top_sims[keep])
    return (np.concatenate(src).astype(np.int64), np.concatenate(dst).astype(np.int64),
            np.concatenate(w).astype(np.float32))


def _hnsw_neighbours(unit, cold, warm, kk, hnsw_m, ef_construction, ef_search):
    import faiss

    unit = unit.astype(np.float32, copy=False)
    index = faiss.IndexHNSWFlat(unit.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.add(np.ascontiguousarray(unit[warm]))
    index.hnsw.efSearch = max(ef_search, kk)
    sims, top = index.search(np.ascontiguousarray(unit[cold]), kk)
    keep = (top >= 0) & (sims > 0)
    return (warm[top[keep]].astype(np.int64), np.repeat(cold, kk).reshape(-1, kk)[keep].astype(np.int64),
            sims[keep].astype(np.float32))


def _combined_codes(codes: tuple) -> np.ndarray:
    """One code per row for a combination of attributes: equal when every value is, -1 if any is missing."""
    combined = codes[0]
    for code in codes[1:]:
        valid = (combined >= 0) & (code >= 0)
        joined = np.full(len(code), -1, dtype=np.int64)
        joined[valid] = pd.factorize(combined[valid] * (int(code.max()) + 1) + code[valid])[0]
        combined = joined
    return combined.astype(np.int64)


def _first_per_value(nodes: np.ndarray, code: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The first m nodes of each value (in the given order), grouped by value: (nodes, value codes).

    No sort: each node's rank within its value (a hashed cumulative count), then a counting placement."""
    has = code >= 0
    nodes, code = nodes[has], code[has]
    rank = pd.Series(code).groupby(code, sort=False).cumcount().to_numpy()
    keep = rank < m
    nodes, code, rank = nodes[keep], code[keep], rank[keep]
    counts = np.bincount(code)
    place = (np.cumsum(counts) - counts)[code] + rank
    grouped_nodes = np.empty_like(nodes)
    grouped_nodes[place] = nodes
    grouped_code = np.empty_like(code)
    grouped_code[place] = code
    return grouped_nodes, grouped_code


def _rank_in_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal keys (keys sorted)."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    lengths = np.diff(np.concatenate([starts, [len(sorted_keys)]]))
    return np.arange(len(sorted_keys)) - np.repeat(starts, lengths)


def _empty():
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
