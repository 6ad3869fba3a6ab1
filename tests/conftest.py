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


class Processes:
    """Starts subprocesses, each the leader of its own process group, and ends every group when
    the test ends, pass or fail (servers and workers the process started go with it)."""

    def __init__(self):
        self.started: list = []

    def start(self, argv, **kwargs):
        import subprocess

        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def end_all(self):
        import signal
        import subprocess

        for proc in self.started:
            for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 60)):  # SIGKILL: whatever the group still holds
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture
def processes():
    procs = Processes()
    try:
        yield procs
    finally:
        procs.end_all()


def wait_until(check, what: str, bound: float = 900.0, every: float = 0.2):
    """Polls `check` until it returns something true; the bound is only there so that nothing
    waits forever: it is far above what any machine needs, not a deadline on speed."""
    import time

    deadline = time.monotonic() + bound
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {bound:g} s")
        time.sleep(every)
