"""What the search tests share: a tiny network with fast heartbeats, and the study a store holds."""
from __future__ import annotations

from pathlib import Path

import optuna

from tests.conftest import TINY_NETWORK

TINY = [*TINY_NETWORK, "train.eval_every=1", "search.heartbeat_seconds=1", "search.grace_seconds=3"]


def sets(root: Path, *extra: str) -> list[str]:
    return [f"stores.root={root}", *TINY, *extra]


def cli_args(root: Path, *extra: str) -> list[str]:
    out = []
    for item in sets(root, *extra):
        out += ["--set", item]
    return out


def study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'optuna.db'}")
