"""Per-user splits of interactions into train / valid / test.

The split is made on unique (user, item) pairs, so that every event of a pair (view, click,
apply) lands in the same split and no evaluation target leaks into training through another
event type. Temporal: each user's last pairs (by first timestamp) are held out; random: a
seeded shuffle per user. Users with fewer than three pairs stay entirely in training.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def assign_split(
    interactions: pd.DataFrame,
    kind: str = "temporal",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    if kind not in ("temporal", "random"):
        raise ValueError(f"unknown split kind {kind!r}; use 'temporal' or 'random'")
    if kind == "temporal" and "timestamp" not in interactions:
        raise ValueError("a temporal split needs a 'timestamp' column; use split.kind=random")
    pairs = interactions.groupby(["user_id", "item_id"], sort=False, as_index=False)
    if kind == "temporal":
        pairs = pairs["timestamp"].min()
        pairs = pairs.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    else:
        pairs = pairs.size()[["user_id", "item_id"]]
        pairs["_r"] = np.random.default_rng(seed).random(len(pairs))
        pairs = pairs.sort_values(["user_id", "_r"], kind="stable")
    rank = pairs.groupby("user_id", sort=False).cumcount().to_numpy()
    n = pairs.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    n_test = np.floor(n * test_fraction).astype(int)
    n_valid = np.floor(n * valid_fraction).astype(int)
    # at least one held-out pair where the fraction asks for any and the user has three or more
    n_test = np.where((n >= 3) & (test_fraction > 0), np.maximum(n_test, 1), 0)
    n_valid = np.where((n >= 3) & (valid_fraction > 0), np.maximum(n_valid, 1), 0)
    label = np.full(len(pairs), "train", dtype=object)
    label[rank >= n - n_test] = "test"
    label[(rank >= n - n_test - n_valid) & (rank < n - n_test)] = "valid"
    pairs["split"] = label
    out = interactions.drop(columns=["split"], errors="ignore").merge(
        pairs[["user_id", "item_id", "split"]], on=["user_id", "item_id"], how="left"
    )
    return out


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
