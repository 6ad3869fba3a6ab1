"""Node features from id tables: categorical attributes, multi-valued tags, numbers and text.

Columns are sorted into kinds by `infer_spec`:
  categorical  one-hot over the most frequent values (the rest share an 'other' slot)
  multi        multi-hot over '|'-separated tags (ML-100K genres)
  numeric      standardised (mean 0, std 1), missing values at 0
  text         all-MiniLM-L6-v2 sentence embeddings (recsys.text), cached by content
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from recsys.text import TextEncoder


@dataclass
class FeatureSpec:
    categorical: list[str] = field(default_factory=list)
    multi: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        return [*self.categorical, *self.multi, *self.numeric, *self.text]


def infer_spec(frame: pd.DataFrame, id_col: str, max_categories: int = 64, min_text_length: int = 24) -> FeatureSpec:
    spec = FeatureSpec()
    for col in frame.columns:
        if col == id_col:
            continue
        values = frame[col].dropna()
        if values.empty:
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            spec.numeric.append(col)
            continue
        # shares of rows, computed once per distinct value weighted by its rows (a million members
        # share a few hundred universities)
        counts = values.value_counts(sort=False)
        counts = counts[counts > 0]
        rows = counts.to_numpy()
        as_text = pd.Series(counts.index.astype(str), dtype=object).str
        many = len(counts) > max_categories
        wordy = _row_mean(as_text.contains(" ", regex=False), rows) > 0.5
        mean_length = _row_mean(as_text.len(), rows)
        if _row_mean(as_text.contains("|", regex=False), rows) > 0.2 and mean_length < min_text_length * 2:
            spec.multi.append(col)
        elif mean_length >= min_text_length or (many and wordy):
            spec.text.append(col)  # prose, or many distinct phrases (movie titles)
        else:
            spec.categorical.append(col)  # codes and short labels: the most frequent get one-hot slots
    return spec


def _row_mean(per_value: pd.Series, rows: np.ndarray) -> float:
    """The mean over rows of a figure given per distinct value (`rows`: each value's row count)."""
    return float((per_value.to_numpy().astype(np.int64) * rows).sum() / rows.sum())


@dataclass
class FeatureEncoder:
    """Learns vocabularies and scales on one table (`fit`), then encodes any table the same way,
    so that a node added after training gets features in the trained layout."""

    spec: FeatureSpec
    max_categories: int = 64
    vocab: dict[str, list[str]] = field(default_factory=dict)
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame) -> "FeatureEncoder":
        for col in self.spec.categorical:
            self.vocab[col] = _as_str(frame[col]).value_counts().index[: self.max_categories].tolist()
        for col in self.spec.multi:
            self.vocab[col] = sorted(frame[col].fillna("").astype(str).str.get_dummies(sep="|").columns)
        for col in self.spec.numeric:
            x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            std = float(np.nanstd(x))
            self.scale[col] = (float(np.nanmean(x)), std if std > 0 else 1.0)
        return self

    def to_plain(self) -> dict:
        """Lists, strings and numbers only (JSON), so a stored encoder is read back without pickle."""
        return {"spec": asdict(self.spec), "max_categories": self.max_categories,
                "vocab": {col: [str(v) for v in values] for col, values in self.vocab.items()},
                "scale": {col: [float(mean), float(std)] for col, (mean, std) in self.scale.items()}}

    @classmethod
    def from_plain(cls, plain: dict) -> "FeatureEncoder":
        return cls(FeatureSpec(**plain["spec"]), int(plain["max_categories"]),
                   {col: list(values) for col, values in plain["vocab"].items()},
                   {col: (float(mean), float(std)) for col, (mean, std) in plain["scale"].items()})

    def transform(self, frame: pd.DataFrame, text_encoder: Optional[TextEncoder] = None) -> np.ndarray:
        """(len(frame), dim) float32; dim = 0 when the spec names no column."""
        n = len(frame)
        blocks = [np.zeros((n, 0), dtype=np.float32)]
        for col in self.spec.categorical:
            vocab = self.vocab[col]
            codes = pd.Categorical(_as_str(frame[col]), categories=vocab).codes  # -1: other
            onehot = np.zeros((n, len(vocab) + 1), dtype=np.float32)
            onehot[np.arange(n), np.where(codes >= 0, codes, len(vocab))] = 1.0
            blocks.append(onehot)
        for col in self.spec.multi:
            tags = frame[col].fillna("").astype(str).str.get_dummies(sep="|")
            blocks.append(tags.reindex(columns=self.vocab[col], fill_value=0).to_numpy(dtype=np.float32))
        for col in self.spec.numeric:
            mean, std = self.scale[col]
            x = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            blocks.append(np.nan_to_num((x - mean) / std).astype(np.float32)[:, None])
        if self.spec.text:
            encoder = text_encoder or TextEncoder()
            for col in self.spec.text:
                blocks.append(encoder.encode(frame[col].fillna("").astype(str).tolist()))
        return np.concatenate(blocks, axis=1)


def _as_str(column: pd.Series) -> pd.Series:
    return column.astype(str).where(column.notna(), "<missing>")
