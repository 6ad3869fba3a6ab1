"""The one data type every loader returns, and its integer-indexed form for training.

`RecData` keeps the raw tables (external ids, any dtype) so that validation can see exactly what
came in. `RecData.indexed()` maps ids to contiguous integers and yields unique (user, item) pairs
per split: the form the graph, the models and the metrics work on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from recsys.data.ids import column_codes, positions, text_hashes

SPLITS = ("train", "valid", "test")


@dataclass
class RecData:
    """A data set's tables. Every step that changes them makes a new RecData (the tables of one are
    never changed in place), so its fingerprint is computed once."""
    name: str
    users: pd.DataFrame  # column user_id, then optional features
    items: pd.DataFrame  # column item_id, then optional features
    interactions: pd.DataFrame  # user_id, item_id, optional timestamp / event / split
    social: Optional[pd.DataFrame] = None  # src, dst (user ids); one row per friendship
    meta: dict = field(default_factory=dict)
    _fingerprint: Optional[str] = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """A content hash of ids and interactions: same data, same fingerprint. Ids count by their
        text (1 and "1" are the same id, as in `indexed`), whatever their dtype (object, categorical);
        other columns by value (a number's bits, a string's text). Each row's hash is the same as
        pandas' hash of the row; the multiset of row hashes is hashed, so row order does not count."""
        if self._fingerprint is None:
            self._fingerprint = self._hashed()
        return self._fingerprint

    def _hashed(self) -> str:
        from pandas.core.util.hashing import combine_hash_arrays

        h = hashlib.sha256()
        for frame, cols in (
            (self.users, ["user_id"]),
            (self.items, ["item_id"]),
            (self.interactions, [c for c in ("user_id", "item_id", "timestamp", "split") if c in self.interactions]),
            (self.social, ["src", "dst"]),
        ):
            if frame is None:
                h.update(b"none")
                continue
            hashes = (_value_hashes(frame[c], as_text=c in ID_COLUMNS) for c in cols)
            hashed = combine_hash_arrays(hashes, len(cols))
            h.update(np.sort(hashed).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        counts = self.interactions["split"].value_counts().to_dict() if "split" in self.interactions else {}
        counts = {k: v for k, v in counts.items() if v}  # a categorical counts its unused categories too
        return {
            "users": len(self.users),
            "items": len(self.items),
            "interactions": len(self.interactions),
            "social_edges": 0 if self.social is None else len(self.social),
            **{f"rows_{k}": int(v) for k, v in counts.items()},
            **self.meta,  # how the split was made where graphrec made part of it (with_split)
        }

    def indexed(self) -> "IndexedData":
        """Ids (compared as text) -> positions in the id tables; every per-row step works on integer
        codes (`recsys.data.ids`), so an id column costs one lookup per distinct id."""
        user_ids = self.users["user_id"].astype(str).to_numpy()
        item_ids = self.items["item_id"].astype(str).to_numpy()
        uidx = pd.Index(user_ids)
        iidx = pd.Index(item_ids)
        inter = self.interactions
        u = positions(inter["user_id"], uidx)
        i = positions(inter["item_id"], iidx)
        if (u < 0).any() or (i < 0).any():
            raise ValueError("interactions name ids missing from the id tables; validate the data first")
        if "split" in inter:
            split_codes, split_names = column_codes(inter["split"])
        else:
            split_codes, split_names = np.zeros(len(inter), dtype=np.int8), pd.Index(["train"])
        pairs = {}
        for name in SPLITS:
            mask = np.isin(split_codes, np.flatnonzero(split_names == name))
            pairs[name] = _unique_pairs(u[mask], i[mask], len(item_ids))
        # A pair seen in training is not a target of evaluation.
        train_keys = pairs["train"][:, 0] * len(item_ids) + pairs["train"][:, 1]
        for name in ("valid", "test"):
            keys = pairs[name][:, 0] * len(item_ids) + pairs[name][:, 1]
            pairs[name] = pairs[name][~np.isin(keys, train_keys)]
        social = np.zeros((0, 2), dtype=np.int64)
        if self.social is not None and len(self.social):
            s = positions(self.social["src"], uidx)
            d = positions(self.social["dst"], uidx)
            keep = (s >= 0) & (d >= 0) & (s != d)
            social = np.stack([s[keep], d[keep]], axis=1).astype(np.int64)
        return IndexedData(user_ids, item_ids, pairs["train"], pairs["valid"], pairs["test"], social)


ID_COLUMNS = ("user_id", "item_id", "src", "dst")


def _value_hashes(col: pd.Series, as_text: bool) -> np.ndarray:
    if as_text or not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        return text_hashes(col)
    numpy_dtype = isinstance(col.dtype, np.dtype)
    return pd.util.hash_array(col.to_numpy() if numpy_dtype else col.to_numpy(dtype=np.float64, na_value=np.nan))


def _unique_pairs(u: np.ndarray, i: np.ndarray, n_items: int) -> np.ndarray:
    keys = np.unique(u.astype(np.int64) * n_items + i.astype(np.int64))
    return np.stack([keys // n_items, keys % n_items], axis=1)


@dataclass
class IndexedData:
    user_ids: np.ndarray  # external ids as strings, position = index
    item_ids: np.ndarray
    train: np.ndarray  # (n, 2) int64 unique (user, item) pairs
    valid: np.ndarray
    test: np.ndarray
    social: np.ndarray  # (m, 2) int64 user pairs

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def split(self, name: str) -> np.ndarray:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]

    def seen_before(self, name: str) -> np.ndarray:
        """Pairs to mask when ranking for split `name`: everything the user had before it."""
        if name == "valid":
            return self.train
        if name == "test":
            return np.concatenate([self.train, self.valid])
        return np.zeros((0, 2), dtype=np.int64)
