"""The sub-sections of `train`: the negatives a ranking loop draws and a warm start's settings, and
the `auto` marker of settings a family's recipe gives. Kept apart from recsys/config.py, which
assembles them into TrainConfig."""
from __future__ import annotations

from typing import Callable, Final, Literal, Optional, Union

from pydantic import Field, field_validator

from recsys.config_base import Section

AUTO: Final = "auto"  # a training setting the family's recipe gives (recsys/recipe.py), else recsys.config.GENERIC


def recipe_value(value, allowed: Callable[[float], bool], what: str):
    """`value` if it is `auto`, None or `allowed`; else the error pydantic reports with the key."""
    if value in (AUTO, None) or allowed(value):
        return value
    raise ValueError(f"must be auto or {what}")


class NegativesConfig(Section):
    kind: Literal["auto", "uniform", "popularity", "in_batch", "model", "ppr"] = Field(
        AUTO, description="auto: the family's recipe (see `graphrec families`), else uniform")
    per_positive: Union[Literal["auto"], int] = Field(
        AUTO, description="negatives drawn per positive (ppr: set by its curriculum); auto: the family's recipe "
                          "(see `graphrec families`), else 1")
    popularity_exponent: float = Field(0.75, ge=0)
    candidates: Union[Literal["auto"], int] = Field(
        "auto", description="model: uniform candidates scored per positive, the hardest kept (the hardness); auto: "
                            "from the log's density (recsys.negatives.auto_candidates)")
    temperature: Optional[float] = Field(None, gt=0, description="model: None keeps the hardest candidate")
    max_score_percentile: Optional[float] = Field(None, gt=0, le=100, description="model: false-negative guard")
    refresh_every: int = Field(10, ge=1, description="model: batches between score refreshes")
    band: list[float] = Field(default_factory=lambda: [0.05, 0.12], description="ppr: rank band, catalogue fractions")
    pool_size: int = Field(32, ge=1)
    ppr_alpha: float = Field(0.15, gt=0, lt=1)
    ppr_iterations: int = Field(10, ge=1)
    curriculum: bool = True
    max_hard: int = Field(3, ge=0)

    @field_validator("per_positive", "candidates")
    @classmethod
    def _count(cls, value):
        if value != AUTO and value < 1:
            raise ValueError("must be auto or a positive integer")
        return value

    @field_validator("band")
    @classmethod
    def _band(cls, band: list[float]) -> list[float]:
        if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
            raise ValueError("band must be [low, high] with 0 <= low < high <= 1 (fractions of the catalogue)")
        return band


class WarmConfig(Section):
    """How a warm start (train.start: champion, or auto choosing the champion) seeds and trains the model."""
    new_rows: Literal["neighbours", "init"] = Field(
        "neighbours", description="users and items the champion never saw: the mean of their neighbours' carried "
                                  "rows, or the usual initialisation")
    shrink: Union[Literal["auto"], float] = Field(
        AUTO, description="carried values are scaled by this and the fresh initialisation times `perturb` added "
                          "(shrink and perturb; 1 and 0: a plain copy); auto: the family's recipe (see `graphrec "
                          "families`), else 0.3")
    perturb: Union[Literal["auto"], float] = Field(AUTO, description="auto: the family's recipe, else 0.1")
    lr: Union[Literal["auto"], float] = Field(
        AUTO, description="the first `lr_epochs` epochs train at train.lr x this, then at train.lr (the carried "
                          "values, shrunk, need the larger steps to grow back); auto: the family's recipe, else 1")
    lr_epochs: Union[Literal["auto"], int] = Field(AUTO, description="auto: the family's recipe, else 0")
    patience: Union[Literal["auto"], int, None] = Field(
        AUTO, description="evaluations without improvement before a warm start stops (it starts near its best, so "
                          "a scratch run's patience mostly trains past it); null: train.patience; auto: the "
                          "family's recipe, else null")

    eval_every: Union[Literal["auto"], int, None] = Field(
        AUTO, description="epochs between a warm start's validations (it peaks within a few epochs of the champion, "
                          "which a sparser cadence steps past; patience counts validations, so it also sets how "
                          "long a warm run goes on past its best); null: train.eval_every; auto: the family's "
                          "recipe, else 1")

    @field_validator("shrink", "perturb", "lr", "lr_epochs", "patience", "eval_every")
    @classmethod
    def _recipe_value(cls, value, info):
        allowed, what = {"shrink": (lambda v: 0 < v <= 1, "a number above 0, at most 1"),
                         "perturb": (lambda v: 0 <= v <= 1, "a number from 0 to 1"),
                         "lr": (lambda v: v > 0, "a number above 0"),
                         "lr_epochs": (lambda v: v >= 0 and int(v) == v, "an integer of 0 or more"),
                         "patience": (lambda v: v >= 1 and int(v) == v, "null or a positive integer"),
                         "eval_every": (lambda v: v >= 1 and int(v) == v, "null or a positive integer"),
                         }[info.field_name]
        return recipe_value(value, allowed, what)
