"""Today's data against the champion's: a file that passes every row-level check can still be the
wrong file (one user's log, a day's sample, a catalogue cut in half). Before anything trains, the
shape of today's interactions is compared with the profile recorded when the champion was
registered, and a drop or jump beyond the configured bounds stops the flow like failed validation.

A profile is small and plain: counts (JSON) and the 64-bit hashes of the active user and item ids
(an .npz without pickle), enough for "which share of the champion's users are still here"
without reading old data again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from recsys.config_ops import DataDriftConfig
from recsys.data.ids import text_codes
from validation.report import DataValidationError

PROFILE_VERSION = 1
QUANTILES = (0.1, 0.5, 0.9)
_HASH_KEY = "graphrec-profile"  # 16 bytes, as pandas' hash_array asks; fixed so hashes compare across runs


def id_hashes(ids) -> np.ndarray:
    """Sorted unique uint64 hashes of ids read as text (the form every loader indexes ids in).
    Only the distinct ids are converted and hashed: a log of 16M rows has 1M users."""
    distinct = pd.Series(pd.Series(ids).unique())
    text = np.asarray(distinct.astype(str).to_numpy(), dtype=object)
    return np.unique(pd.util.hash_array(text, hash_key=_HASH_KEY, categorize=False))


def rows_per_id(ids: pd.Series) -> np.ndarray:
    """Rows per distinct non-null id read as text (1 and "1" are one id), counted on integer codes."""
    codes = text_codes(ids)
    return np.bincount(codes[codes >= 0]).astype(np.float64)


@dataclass
class DataProfile:
    """What the drift check compares: counts, interactions per user, and id hashes."""

    name: str
    users: int  # users with at least one interaction
    items: int  # items with at least one interaction
    interactions: int  # rows
    catalogue_users: int  # rows of the id tables
    catalogue_items: int
    per_user: dict[str, float]  # p10 / p50 / p90 / max of rows per active user
    user_hashes: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.uint64))
    item_hashes: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.uint64))

    def figures(self) -> dict:
        return {"profile_version": PROFILE_VERSION, "name": self.name, "users": self.users, "items": self.items,
                "interactions": self.interactions, "catalogue_users": self.catalogue_users,
                "catalogue_items": self.catalogue_items, "per_user": self.per_user}

    @classmethod
    def from_parts(cls, figures: dict, user_hashes: np.ndarray, item_hashes: np.ndarray) -> "DataProfile":
        return cls(figures.get("name", "?"), int(figures["users"]), int(figures["items"]),
                   int(figures["interactions"]), int(figures.get("catalogue_users", 0)),
                   int(figures.get("catalogue_items", 0)), {k: float(v) for k, v in figures["per_user"].items()},
                   np.asarray(user_hashes, dtype=np.uint64), np.asarray(item_hashes, dtype=np.uint64))


def profile_data(data) -> DataProfile:
    """The profile of a RecData's interactions (all rows, whatever their split)."""
    inter = data.interactions
    per_user = rows_per_id(inter["user_id"])
    if len(per_user):
        qs = np.quantile(per_user, QUANTILES)
        dist = {f"p{int(q * 100)}": round(float(v), 3) for q, v in zip(QUANTILES, qs)}
        dist["max"] = float(per_user.max())
    else:
        dist = {f"p{int(q * 100)}": 0.0 for q in QUANTILES} | {"max": 0.0}
    user_hashes, item_hashes = id_hashes(inter["user_id"]), id_hashes(inter["item_id"])
    return DataProfile(data.name, len(user_hashes), len(item_hashes), len(inter), len(data.users), len(data.items),
                       dist, user_hashes, item_hashes)


@dataclass
class Figure:
    name: str
    champion: Optional[float]
    today: float
    bound: str
    passed: bool
    note: str = ""

    def line(self) -> str:
        champ = "-" if self.champion is None else _num(self.champion)
        return (f"{self.name}: today {_num(self.today)}, champion {champ} ({self.note}; bound {self.bound})"
                if self.note else f"{self.name}: today {_num(self.today)}, champion {champ} (bound {self.bound})")


def _num(value: float) -> str:
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"


@dataclass
class DriftReport:
    dataset: str
    champion: Optional[str]  # "v3" or None when there is nothing to compare with
    figures: list[Figure]
    skipped: str = ""  # why nothing was compared
    allowed: bool = False  # beyond the bounds, let through by promotion.data_drift.allow

    @property
    def failures(self) -> list[Figure]:
        return [f for f in self.figures if not f.passed]

    @property
    def success(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.skipped:
            return f"data drift check skipped: {self.skipped}"
        if self.success:
            return (f"data '{self.dataset}' is within the bounds of champion {self.champion}'s data "
                    f"({len(self.figures)} figures)")
        head = (f"data '{self.dataset}' differs from champion {self.champion}'s data beyond the bounds "
                f"({len(self.failures)} of {len(self.figures)} figures)")
        head += (": allowed by promotion.data_drift.allow (--allow-shrink), training anyway" if self.allowed
                 else ":")
        lines = [head] + [f"  - {f.line()}" for f in self.failures]
        if not self.allowed:
            lines.append("  If this data is right, run again with --allow-shrink "
                         "(or --set promotion.data_drift.allow=true); the override is recorded on the run.")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [f"# Data drift: {self.dataset} against champion {self.champion or '(none)'}", ""]
        if self.skipped:
            return "\n".join(out + [f"Skipped: {self.skipped}"])
        status = ("passed" if self.success else
                  f"**{len(self.failures)} of {len(self.figures)} figures beyond the bounds**"
                  + (" (allowed by promotion.data_drift.allow)" if self.allowed else ""))
        out += [f"Result: {status}", "", "| figure | champion | today | bound | ok |", "|---|---:|---:|---|---|"]
        for f in self.figures:
            champ = "" if f.champion is None else _num(f.champion)
            today = _num(f.today) + (f" ({f.note})" if f.note else "")
            out.append(f"| {f.name} | {champ} | {today} | {f.bound} | {'yes' if f.passed else 'NO'} |")
        if not self.success and not self.allowed:
            out += ["", "Nothing was trained or registered on this data. If it is right, run again with "
                        "`--allow-shrink` (recorded on the run)."]
        return "\n".join(out)


class DataDriftError(DataValidationError):
    """Today's data differs from the champion's beyond the bounds; carries the DriftReport."""


def compare_profiles(today: DataProfile, champion: Optional[DataProfile], champion_version: Optional[str],
                     cfg: DataDriftConfig, skipped: str = "") -> DriftReport:
    """Each figure of today's profile against the champion's; `skipped` says why there is none."""
    label = f"v{champion_version}" if champion_version else None
    if champion is None:
        return DriftReport(today.name, label, [], skipped or "no champion to compare with")
    figures: list[Figure] = []
    ratio_bound = f"ratio {cfg.min_ratio:g}..{cfg.max_ratio:g}"
    for name in ("users", "items", "interactions"):
        figures.append(_ratio(f"active {name}" if name != "interactions" else "interaction rows",
                              getattr(champion, name), getattr(today, name), cfg.min_ratio, cfg.max_ratio,
                              ratio_bound))
    for name, theirs, ours in (("users", champion.user_hashes, today.user_hashes),
                               ("items", champion.item_hashes, today.item_hashes)):
        if not len(theirs):
            continue
        kept = float(np.isin(theirs, ours, assume_unique=True).mean())
        figures.append(Figure(f"share of champion's {name} kept", 1.0, round(kept, 4), f">= {cfg.min_kept:g}",
                              kept >= cfg.min_kept, f"{int(round(kept * len(theirs)))} of {len(theirs)}"))
    per_user_bound = f"ratio {cfg.per_user_min_ratio:g}..{cfg.per_user_max_ratio:g}"
    for q in ("p50", "p90"):
        if q in champion.per_user and q in today.per_user:
            figures.append(_ratio(f"interactions per user {q}", champion.per_user[q], today.per_user[q],
                                  cfg.per_user_min_ratio, cfg.per_user_max_ratio, per_user_bound))
    return DriftReport(today.name, label, figures, allowed=cfg.allow)


def _ratio(name: str, champion: float, today: float, lo: float, hi: float, bound: str) -> Figure:
    if champion <= 0:
        return Figure(name, champion, today, bound, True, "champion's value is 0: not compared")
    ratio = today / champion
    return Figure(name, champion, today, bound, lo <= ratio <= hi, f"ratio {ratio:.4g}")


def raise_if_drifted(report: DriftReport) -> DriftReport:
    if not report.success and not report.allowed:
        raise DataDriftError(report)
    return report
