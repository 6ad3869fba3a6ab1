"""Per-user splits of interactions into train / valid / test.

The split is made on unique (user, item) pairs, so that every event of a pair (view, click,
apply) lands in the same split and no evaluation target leaks into training through another
event type. Temporal: each user's last pairs (by first timestamp) are held out; random: a
seeded shuffle per user. Users with fewer than three pairs stay entirely in training.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.ids import column_codes

SPLITS = ("train", "valid", "test")


def assign_split(
    interactions: pd.DataFrame,
    kind: str = "temporal",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """A `split` column (a categorical of train / valid / test) by user, as the module says."""
    if kind not in ("temporal", "random"):
        raise ValueError(f"unknown split kind {kind!r}; use 'temporal' or 'random'")
    if kind == "temporal" and "timestamp" not in interactions:
        raise ValueError("a temporal split needs a 'timestamp' column; use split.kind=random")
    users, _ = column_codes(interactions["user_id"])
    items, item_values = column_codes(interactions["item_id"])
    complete = (users >= 0) & (items >= 0)  # a row without an id has no pair and no split
    n_items = max(len(item_values), 1)
    # Pairs numbered in the order of their first row, as groupby(sort=False) would.
    pair_of_row, keys = pd.factorize(users[complete].astype(np.int64) * n_items + items[complete])
    pair_user, pair_item = keys // n_items, keys % n_items
    if kind == "temporal":
        first_seen = _first_per_pair(interactions["timestamp"].to_numpy()[complete], pair_of_row, len(keys))
        # ties in time go by item id (its value's order, not the code's)
        order = _order_by(pair_user, first_seen, _value_rank(item_values)[pair_item])
    else:
        draw = np.random.default_rng(seed).random(len(keys))
        order = np.lexsort((draw, pair_user))
    sorted_users = pair_user[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    n = np.repeat(sizes, sizes)
    n_test = np.floor(n * test_fraction).astype(int)
    n_valid = np.floor(n * valid_fraction).astype(int)
    # at least one held-out pair where the fraction asks for any and the user has three or more
    n_test = np.where((n >= 3) & (test_fraction > 0), np.maximum(n_test, 1), 0)
    n_valid = np.where((n >= 3) & (valid_fraction > 0), np.maximum(n_valid, 1), 0)
    label = np.zeros(len(order), dtype=np.int8)  # codes into SPLITS: train, valid, test
    label[rank >= n - n_test] = 2
    label[(rank >= n - n_test - n_valid) & (rank < n - n_test)] = 1
    pair_label = np.empty(len(order), dtype=np.int8)
    pair_label[order] = label
    codes = np.full(len(interactions), -1, dtype=np.int8)  # -1: no pair, no split (null)
    codes[complete] = pair_label[pair_of_row]
    out = interactions.drop(columns=["split"], errors="ignore").reset_index(drop=True)
    out["split"] = pd.Categorical.from_codes(codes, categories=list(SPLITS))
    return out


def carve_validation(interactions: pd.DataFrame, valid_fraction: float, seed: int = 0) -> pd.DataFrame:
    """A source that brings only train and test (LightGCN's train.txt / test.txt, a user's files with
    a fixed test) gets a validation split from its training rows: per user, a seeded random share
    of the training pairs (assign_split's rule: users with three or more pairs give at least one).
    Test rows are untouched, so test data never chooses anything."""
    train = (interactions["split"] == "train").to_numpy()
    carved = assign_split(interactions.loc[train, ["user_id", "item_id"]], "random", valid_fraction, 0.0, seed)
    codes = pd.Categorical(interactions["split"], categories=list(SPLITS)).codes.copy()
    codes[train] = carved["split"].cat.codes.to_numpy()
    out = interactions.reset_index(drop=True)
    out["split"] = pd.Categorical.from_codes(codes, categories=list(SPLITS))
    return out


def _first_per_pair(times: np.ndarray, pair: np.ndarray, n_pairs: int) -> np.ndarray:
    """The earliest time of each pair, missing times skipped (NaN where a pair has none), as
    groupby(pair).min() gives it, by one unbuffered pass (ufunc.at) instead of a hash groupby."""
    if times.dtype.kind in "iu":
        first = np.full(n_pairs, np.iinfo(times.dtype).max, dtype=times.dtype)
        np.minimum.at(first, pair, times)
        return first
    if times.dtype.kind == "f":
        first = np.full(n_pairs, np.inf)
        np.fmin.at(first, pair, times)  # fmin skips NaN
        first[np.isinf(first)] = np.nan  # a pair without a time (or only infinite ones)
        return first
    return pd.Series(times).groupby(pair).min().to_numpy()


def _order_by(user: np.ndarray, time: np.ndarray, item_rank: np.ndarray) -> np.ndarray:
    """Pairs ordered by (user, time, item rank): one argsort of the three packed into an int64 when
    their ranges fit in 63 bits (integer times), else np.lexsort. The keys are unique per pair, so
    the order is the same either way."""
    if time.dtype.kind in "iu" and len(time):
        span = int(time.max()) - int(time.min())
        widths = [int(user.max()).bit_length(), span.bit_length(), int(item_rank.max()).bit_length()]
        if sum(widths) <= 63:
            packed = ((user.astype(np.int64) << (widths[1] + widths[2]))
                      | ((time.astype(np.int64) - int(time.min())) << widths[2]) | item_rank.astype(np.int64))
            return np.argsort(packed)
    return np.lexsort((item_rank, time, user))


def _value_rank(values: pd.Index) -> np.ndarray:
    """Each distinct value's place in the values' sorted order (text order where types mix)."""
    try:
        order = np.argsort(np.asarray(values), kind="stable")
    except TypeError:
        order = np.argsort(np.asarray(values.astype(str)), kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank


def hold_out_cold(
    interactions: pd.DataFrame,
    user_fraction: float = 0.0,
    item_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Cold-start split: a fraction of users (and of items) leave training entirely; all their
    interactions become test targets. Returns the relabelled table and the held-out ids."""
    rng = np.random.default_rng(seed + 1)
    out = interactions.copy()
    held = []
    for col, fraction in (("user_id", user_fraction), ("item_id", item_fraction)):
        ids = pd.unique(out[col])
        chosen = rng.choice(ids, size=int(round(len(ids) * fraction)), replace=False) if fraction > 0 else ids[:0]
        out.loc[out[col].isin(chosen), "split"] = "test"
        held.append(np.asarray(chosen))
    return out, held[0], held[1]
