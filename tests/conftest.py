"""Shared fixtures. Every test that touches MLflow, Prefect or snapshots works in a temporary
folder, so the suite leaves no state behind and runs from any clone."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
# Prefect logs its shutdown after pytest has closed the captured streams.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]

# Each pytest-xdist worker takes its share of the machine's threads (recsys/threads.py), before
# torch loads: the workers run beside each other, and every process a test starts inherits it.
from recsys.threads import configure  # noqa: E402

configure(share=int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
SHARED_DATA = Path(os.environ.get("GRAPHREC_SHARED_DATA", REPO.parent / "shared" / "data"))


# A synthetic network small enough for a flow to run in seconds (config overrides).
TINY_DATA = ["data.synthetic.n_users=300", "data.synthetic.n_items=150", "data.synthetic.n_universities=4",
             "data.synthetic.n_companies=8"]
TINY_NETWORK = [*TINY_DATA, "features.text=false", "model.dim=16", "train.progress=false", "train.epochs=40"]


@pytest.fixture(scope="session")
def prefect_server_for_tests(tmp_path_factory):
    """One Prefect server for the whole session, as a team would share one: every flow a test runs
    in this process, and every graphrec process a test starts, talk to it (PREFECT_API_URL), so
    none of them starts a server of its own. (The one test of a command's own server unsets it.)"""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from flows.prefect_api import prefect_api

    with prefect_api(tmp_path_factory.mktemp("prefect-session")) as url:
        yield url


@pytest.fixture(autouse=True)
def _sys_path_as_it_was():
    """A test that loads a registered model with mlflow.pyfunc.load_model leaves the version's
    `code/` folder first on sys.path; processes spawned later (Dask workers) inherit the path and
    would import that copy of `deploy` instead of the checkout's. Each test starts from the same path."""
    import sys

    saved = list(sys.path)
    yield
    sys.path[:] = saved


# The files that take longest, handed to the xdist workers first (pyproject: --dist loadfile with
# --no-loadscope-reorder keeps this order), so that no long file starts last while the other worker
# has nothing left: longest first balances two workers. An order only: a file missing here runs later.
LONGEST_FIRST = ["test_kills.py", "test_ray.py", "test_stopping.py", "test_search.py", "test_faults.py",
                 "test_kernels.py", "test_handover.py", "test_serve.py", "test_dask.py", "test_bad_inputs.py"]


def pytest_collection_modifyitems(items):
    """The longest files first (LONGEST_FIRST); tests whose module runs Prefect flows get the
    session's Prefect server."""
    order = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(Path(str(item.fspath)).name, len(order)))  # stable: the rest as collected
    uses_prefect = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in uses_prefect:
            text = path.read_text()
            uses_prefect[path] = "flows" in text or "prefect" in text
        if uses_prefect[path]:
            item.fixturenames.insert(0, "prefect_server_for_tests")


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
    the test ends, pass or fail, and every process below them (a graphrec command's work runs in a
    session of its own, flows/stopping.py: it is ended too, with the servers and workers it started)."""

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
            below = [pid for pid, _ in descendants(proc.pid)]
            for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 60)):  # SIGKILL: whatever the group still holds
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            for pid in below:  # in sessions of their own: not in the group signalled above
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda pids=below: all(exited(pid) for pid in pids), "the processes of a test to end", bound=120)


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


def proc_stat(pid: int):
    """(state, parent pid, command name) of a process from /proc, or None when it is gone.
    State "Z": it has exited and waits to be reaped (its group can still be signalled)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            head, tail = fh.read().rsplit(")", 1)
    except OSError:
        return None
    fields = tail.split()
    return fields[0], int(fields[1]), head.split("(", 1)[1]


def exited(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat[0] == "Z"


def worker_of(proc) -> int:
    """The pid of a supervised graphrec command's work (flows/stopping.py: the child of the
    process started, leading a session of its own), once it exists."""
    def find():
        for pid, _ in descendants(proc.pid):
            stat = proc_stat(pid)
            try:
                if stat and stat[1] == proc.pid and os.getsid(pid) == pid:
                    return pid
            except ProcessLookupError:
                continue
        assert proc.poll() is None, f"the command ended ({proc.returncode}) before its work process was seen"
        return None
    return wait_until(find, "the command's work process")


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process below `root`."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        stat = proc_stat(int(entry))
        if stat:
            table[int(entry)] = stat
    found = []
    for pid, (_, parent, comm) in table.items():
        while parent > 1:
            if parent == root:
                found.append((pid, comm))
                break
            parent = table[parent][1] if parent in table else 0
    return found
