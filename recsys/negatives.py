"""Negative samplers: `sample(users, pos_items, model_state) -> neg_items`, vectorised.

Only the uniform sampler exists so far; harder ones share this interface.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


class PositiveSet:
    """Membership test for (user, item) pairs via a sorted array of keys user * n_items + item."""

    def __init__(self, pairs: np.ndarray, n_items: int):
        self.n_items = n_items
        self.keys = np.unique(pairs[:, 0].astype(np.int64) * n_items + pairs[:, 1])

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.n_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)


class UniformNegatives:
    """Items drawn uniformly from the catalogue, redrawn while they are the user's positives."""

    def __init__(self, n_items: int, train_pairs: np.ndarray, seed: int = 0, max_redraws: int = 20):
        self.n_items = n_items
        self.positives = PositiveSet(train_pairs, n_items)
        self.rng = np.random.default_rng(seed)
        self.max_redraws = max_redraws

    def sample(self, users: np.ndarray, pos_items: Optional[np.ndarray] = None, model_state: Any = None) -> np.ndarray:
        neg = self.rng.integers(self.n_items, size=len(users))
        bad = self.positives.contains(users, neg)
        for _ in range(self.max_redraws):
            if not bad.any():
                break
            idx = np.flatnonzero(bad)
            neg[idx] = self.rng.integers(self.n_items, size=len(idx))
            bad[idx] = self.positives.contains(users[idx], neg[idx])
        return neg
