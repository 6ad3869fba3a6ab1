"""Shared fixtures. Every test that touches MLflow, Prefect or snapshots works in a temporary
folder, so the suite leaves no state behind and runs from any clone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Prefect's ephemeral server logs its shutdown after pytest has closed the captured streams.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", REPO.parent / "shared" / "data"))


# A synthetic network small enough for a flow to run in seconds (config overrides).
TINY_DATA = ["data.synthetic.n_users=300", "data.synthetic.n_items=150", "data.synthetic.n_universities=4",
             "data.synthetic.n_companies=8"]
TINY_NETWORK = [*TINY_DATA, "features.text=false", "model.dim=16", "train.progress=false"]


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"public data set {path} is not present (set GRAPHREC_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def small_network():
    from recsys.data.synthetic import generate

    return generate(n_users=300, n_items=150, n_universities=4, n_companies=8, mean_interactions=12, seed=7)
