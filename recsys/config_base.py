"""The base of every configuration section and the error a bad configuration raises. Kept apart
from recsys/config.py so that the family registry (recsys/families.py), which declares each
family's own section, and the configuration, which is assembled from the registry, share it."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed."""


class Section(BaseModel):
    """A configuration section: unknown keys are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
