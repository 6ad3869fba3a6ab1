"""Tabular rows for the multi-task heads, and the Census-Income data they are checked on.

A Rows holds an input matrix x (n, d) and a label matrix y (n, tasks) in {0, 1}, NaN where a row
carries no label for a task. `tabular_rows` turns data frames into Rows (numeric columns scaled,
the rest one-hot, fitted on the training frame); `load_census` reads the UCI Census-Income (KDD)
file with the MMoE paper's two labels (income over 50K, never married). The benchmarks and the
MMoE family both read their rows from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd


@dataclass
class Rows:
    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n, tasks) float32, NaN = not labelled

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> "Rows":
        return Rows(self.x[index], self.y[index])


def split_rows(n: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> list[np.ndarray]:
    """A seeded random partition of range(n) by fractions (train, valid, test)."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] * n).astype(int)
    return np.split(order, cuts)


CENSUS_COLUMNS = [
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour", "hs_college",
    "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin", "sex", "union_member",
    "unemp_reason", "full_or_part_emp", "capital_gains", "capital_losses", "stock_dividends", "tax_filer_stat",
    "region_prev_res", "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18", "country_father",
    "country_mother", "country_self", "citizenship", "own_or_self", "vet_question", "vet_benefits",
    "weeks_worked", "year", "income_50k",
]
CENSUS_NUMERIC = ["age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp",
                  "weeks_worked"]
CENSUS_TASKS = ["income_50k", "never_married"]


def load_census(path: Path) -> pd.DataFrame:
    """The UCI Census-Income (KDD) file as a frame with the MMoE paper's two labels as 0/1 columns:
    income over 50K, and marital status 'Never married'. The marital column is dropped from the
    inputs (it is a label) and so is the sampling weight."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point to census-income.test (see ../shared/data/README.md)")
    frame = pd.read_csv(path, header=None, names=CENSUS_COLUMNS, sep=",", skipinitialspace=True,
                        na_values="?", keep_default_na=False)
    if frame.shape[1] != len(CENSUS_COLUMNS) or frame["income_50k"].isna().any():
        raise ValueError(f"{path}: expected {len(CENSUS_COLUMNS)} comma-separated columns with an income label")
    frame["income_50k"] = frame["income_50k"].str.startswith("50000+").astype(np.float32)
    frame["never_married"] = (frame["marital_stat"] == "Never married").astype(np.float32)
    return frame.drop(columns=["marital_stat", "instance_weight"])


class TabularEncoder:
    """One-hot for categorical columns (values seen in training; others map to no column),
    log1p + standardisation for numeric ones, both fitted on the training rows only."""

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str]):
        self.numeric, self.categorical = list(numeric), list(categorical)

    def fit(self, frame: pd.DataFrame) -> "TabularEncoder":
        num = self._numeric(frame)
        self.mean, self.std = num.mean(0), num.std(0) + 1e-6
        self.levels = {c: sorted(frame[c].astype(str).unique()) for c in self.categorical}
        return self

    def _numeric(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.numeric].to_numpy(dtype=np.float64) if self.numeric else np.zeros((len(frame), 0))
        return np.sign(values) * np.log1p(np.abs(np.nan_to_num(values)))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [(self._numeric(frame) - self.mean) / self.std]
        for c in self.categorical:
            codes = pd.Categorical(frame[c].astype(str), categories=self.levels[c]).codes
            onehot = np.zeros((len(frame), len(self.levels[c])), dtype=np.float32)
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32)


def tabular_rows(frames: Sequence[pd.DataFrame], labels: Sequence[str],
                 numeric: Optional[Sequence[str]] = None) -> list[Rows]:
    """Encode frames (the first is the training split) into Rows. Columns not named as labels are
    inputs: `numeric` ones (default: float columns) are scaled, every other one is one-hot."""
    first = frames[0]
    missing = [c for c in labels if c not in first.columns]
    if missing:
        raise ValueError(f"label column(s) {missing} not in the data; columns are {list(first.columns)}")
    inputs = [c for c in first.columns if c not in labels]
    if numeric is None:
        numeric = [c for c in inputs if pd.api.types.is_float_dtype(first[c])]
    encoder = TabularEncoder(numeric, [c for c in inputs if c not in numeric]).fit(first)
    return [Rows(encoder.transform(f), f[list(labels)].to_numpy(dtype=np.float32)) for f in frames]
