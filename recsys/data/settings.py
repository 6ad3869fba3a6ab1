"""The data section of the configuration (`data.*`): where the interactions come from and how they
are split. Defined with the data layer, which reads it; recsys/config.py assembles it into RunConfig."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from recsys.config_base import Section


class DayGrowth(Section):
    """What each day after day 0 changes in the synthetic network (shares of day 0's counts)."""
    new_members: float = Field(0.03, ge=0, lt=1, description="members who join each day")
    new_jobs: float = Field(0.03, ge=0, lt=1, description="jobs posted each day")
    gone_members: float = Field(0.01, ge=0, lt=1, description="members who leave each day, with their interactions")
    views_per_member: float = Field(2.0, ge=0, description="more jobs each member with interactions views a day, "
                                                           "on average")


class SyntheticConfig(Section):
    n_users: int = Field(2000, ge=10)
    n_items: int = Field(800, ge=10)
    n_universities: int = Field(12, ge=1)
    n_companies: int = Field(40, ge=1)
    mean_interactions: float = Field(18.0, gt=2)
    friends_per_user: float = Field(8.0, ge=0)
    cold_user_fraction: float = Field(0.05, ge=0, lt=1)
    cold_item_fraction: float = Field(0.05, ge=0, lt=1)
    seed: int = 0
    candidates: Optional[int] = Field(None, ge=10, description="views drawn from this many random jobs per block "
                                                                "of members (large catalogues)")
    day: int = Field(0, ge=0, description="the network this many days later (recsys/data/next_day.py): members "
                                          "gone and joined, jobs posted, more views, as `days` says")
    days: "DayGrowth" = Field(default_factory=lambda: DayGrowth())


class SplitConfig(Section):
    kind: Literal["temporal", "random"] = "temporal"
    valid_fraction: float = Field(0.1, ge=0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0, lt=0.5)
    cold_user_fraction: float = Field(0.0, ge=0, lt=0.5, description="users held out of training entirely")
    cold_item_fraction: float = Field(0.0, ge=0, lt=0.5, description="items held out of training entirely")
    seed: int = 0


class DataConfig(Section):
    source: Literal["synthetic", "gowalla", "ml-100k", "lastfm", "files"] = "synthetic"
    path: Optional[Path] = Field(None, description="folder of a gowalla / ml-100k / lastfm data set")
    interactions: Optional[Path] = Field(None, description="files: CSV or Parquet of interactions")
    users: Optional[Path] = None
    items: Optional[Path] = None
    social: Optional[Path] = None
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="files: rename map from your column names to user_id/item_id/timestamp/event; timestamps "
                    "may be Unix seconds, Unix milliseconds (numbers from 10^11 up) or ISO-8601 text",
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
