"""Commands stopped as a terminal, `timeout`, systemd or Kubernetes stop them: SIGINT or SIGTERM to
the whole process group, while the command is inside a given phase (tests/pause holds it there
until the signal is sent, so nothing depends on timing). After each: the exit code (130 / 143),
one plain line on the terminal after the signal and no traceback, the flow run crashed and the
MLflow run KILLED, the champion and CURRENT unchanged, no process of the command left (its
Prefect server, Dask workers), no temporary snapshot folder and no lock held.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from deploy.locks import FileLock
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from tests.conftest import REPO, TINY_NETWORK, descendants, exited, proc_stat, wait_until
from tests.stores import runs, serves, state

TINY = [*TINY_NETWORK, "train.epochs=2", "train.eval_every=1", "train.refit=false"]
PASSES = ["promotion.tolerance=1", "train.seed=5"]  # a challenger that takes the champion's place
BOUND = 600  # seconds: a bound on a hang, far above what a loaded machine needs; not a deadline on speed
# Where each phase of a retrain is held: a function it calls (tests/pause/sitecustomize.py).
PHASES = {"validate": "validation.data:validate_data", "train": "recsys.fit:train",
          "register": "deploy.tracking:log_and_register_model", "refresh": "deploy.snapshot_writer:SnapshotWriter.add"}


def _sets(root: Path, *extra: str) -> list[str]:
    return [arg for item in [f"stores.root={root}", *TINY, *extra] for arg in ("--set", item)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Version 1 is champion; its snapshot is CURRENT."""
    root = tmp_path_factory.mktemp("stopping-store")
    prepare_prefect(root)
    assert cli_main(["retrain", *_sets(root)]) == 0
    return root


class Held:
    """A graphrec command started in a process group of its own (as a shell starts a foreground
    job) and held inside a function until the test signals it."""

    def __init__(self, processes, folder: Path, argv: list[str], pause: str, own_server: bool):
        self.folder, self.pause = folder, pause
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests' / 'pause'}",
               "GRAPHREC_TEST_PAUSE": pause, "GRAPHREC_TEST_PAUSE_DIR": str(folder)}
        if own_server:
            env.pop("PREFECT_API_URL", None)
        self.err = folder / "stderr.txt"
        with open(folder / "stdout.txt", "w") as out, open(self.err, "w") as err:
            self.proc = processes.start([sys.executable, "-m", "flows.cli", *argv], cwd=REPO, env=env, stdout=out,
                                        stderr=err)

    def wait_in(self, qualname: str) -> list[int]:
        """Waits until the command is held in `qualname`; the pids of every process below it then."""
        wait_until(lambda: (self.folder / f"{qualname}.reached").exists() or self.proc.poll() is not None,
                   f"the command to reach {qualname}")
        assert self.proc.poll() is None, self.err.read_text()[-3000:]
        return [pid for pid, _ in descendants(self.proc.pid)]

    def stop(self, sig: int, second_in: str | None = None) -> tuple[int, str]:
        """Sends `sig` to the group (and SIGINT again once the command is held in `second_in`);
        (exit code, what the terminal got after the first signal)."""
        mark = len(self.err.read_text())
        os.killpg(self.proc.pid, sig)
        if second_in:
            self.wait_in(second_in)
            os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(BOUND)
        return code, self.err.read_text()[mark:]


def _said_once(after: str, command: str, sig: int) -> None:
    lines = [line for line in after.splitlines() if line.strip()]
    what = "interrupted" if sig == signal.SIGINT else "stopped by SIGTERM"
    assert len(lines) == 1 and lines[0].startswith(f"graphrec {command}: {what}"), after


def _nothing_left(below: list[int], root: Path) -> None:
    wait_until(lambda: all(exited(pid) for pid in below), "every process of the command to end")
    snapshots = root / "snapshots"
    assert not list(snapshots.glob(".tmp-*")) and not (snapshots / "HANDOVER").exists()
    with FileLock(snapshots / ".refresh.lock", timeout=0):  # not held by anyone
        pass
    assert not [r for r in runs(root) if r.info.status == "RUNNING"]


def _flow_run_crashed(name: str) -> None:
    """The newest run of flow `name` on the session's Prefect server ended Crashed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        newest = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
    assert newest.state.type.value == "CRASHED", newest.state


# Each phase under one signal, each signal in two phases (the handler is one for both signals; what a
# phase leaves to clean up is the phase's): SIGTERM to every process at once, below, adds the pair not taken.
STOPPED = [("validate", signal.SIGINT), ("train", signal.SIGTERM), ("register", signal.SIGINT),
           ("refresh", signal.SIGTERM)]


@pytest.mark.parametrize("phase,sig", STOPPED, ids=[f"{phase}-{sig.name}" for phase, sig in STOPPED])
def test_a_retrain_stopped_through_its_group_ends_cleanly(store, phase, sig, tmp_path, processes):
    """On the session's Prefect server, where the flow run's state is read back (a command's own
    server: the tests below)."""
    before = state(store)
    started = {r.info.run_id for r in runs(store)}
    held = Held(processes, tmp_path, ["retrain", *_sets(store, *PASSES)], PHASES[phase], own_server=False)
    below = held.wait_in(PHASES[phase].split(":")[1])
    code, after = held.stop(sig)
    assert code == (130 if sig == signal.SIGINT else 143), held.err.read_text()[-3000:]
    _said_once(after, "retrain", sig)
    assert "Traceback" not in held.err.read_text()
    _nothing_left(below, store)
    assert state(store) == before
    serves(store, before["champion"])
    ours = [r for r in runs(store) if r.info.run_id not in started]
    assert all(r.info.status == "KILLED" for r in ours) and (phase == "validate" or ours)
    _flow_run_crashed("graphrec-retrain")


def test_a_second_ctrl_c_while_the_first_is_handled_ends_the_command_at_once(store, tmp_path, processes):
    before = state(store)
    held = Held(processes, tmp_path, ["retrain", *_sets(store)],
                f"{PHASES['train']},deploy.runs:_end_if_possible", own_server=True)
    below = held.wait_in("train")
    code, after = held.stop(signal.SIGINT, second_in="_end_if_possible")  # held while ending the run KILLED
    assert code == 130 and "stopped at once (a second signal)" in after
    assert "Traceback" not in held.err.read_text()
    wait_until(lambda: all(exited(pid) for pid in below), "every process of the command to end")
    assert state(store) == before
    serves(store, before["champion"])


def test_a_search_stopped_during_a_trial_on_dask_workers(store, tmp_path, processes):
    before = state(store)
    argv = ["search", "--family", "lightgcn", "--trials", "2", "--runner", "prefect", "--workers", "1",
            "--study", "stopped", *_sets(store, "compute.runner=dask")]
    held = Held(processes, tmp_path, argv, PHASES["train"], own_server=True)
    below = held.wait_in("train")  # the trial, in a Dask worker
    assert any("dask" in open(f"/proc/{pid}/cmdline").read() or "spawn" in open(f"/proc/{pid}/cmdline").read()
               for pid in below if not exited(pid))
    code, after = held.stop(signal.SIGTERM)
    assert code == 143, held.err.read_text()[-3000:]
    _said_once(after, "search", signal.SIGTERM)
    assert "Traceback" not in held.err.read_text()
    _nothing_left(below, store)
    assert state(store) == before


def test_a_refresh_stopped_while_writing_leaves_current(store, tmp_path, processes):
    before = state(store)
    argv = ["refresh", *_sets(store, "data.synthetic.seed=1", "promotion.data_drift.allow=true")]
    held = Held(processes, tmp_path, argv, PHASES["refresh"], own_server=False)
    below = held.wait_in("SnapshotWriter.add")
    assert list((store / "snapshots").glob(".tmp-*"))  # half written
    code, after = held.stop(signal.SIGINT)
    assert code == 130, held.err.read_text()[-3000:]
    _said_once(after, "refresh", signal.SIGINT)
    _nothing_left(below, store)
    assert state(store) == before
    serves(store, before["champion"])
    _flow_run_crashed("graphrec-refresh")


def test_sigterm_to_every_process_at_once_as_systemd_does(store, tmp_path, processes):
    """systemd's default KillMode=control-group signals every process of the unit, the command's
    Prefect server included: the server must outlive that signal until the flow has reported."""
    before = state(store)
    held = Held(processes, tmp_path, ["retrain", *_sets(store)], PHASES["register"], own_server=True)
    below = held.wait_in("log_and_register_model")
    mark = len(held.err.read_text())
    for pid in [held.proc.pid, *below]:
        os.kill(pid, signal.SIGTERM)
    assert held.proc.wait(BOUND) == 143
    after = held.err.read_text()[mark:]
    _said_once(after, "retrain", signal.SIGTERM)
    assert "Traceback" not in held.err.read_text() and "Error logging to API" not in after
    _nothing_left(below, store)
    assert state(store) == before


def test_a_sigterm_again_while_a_flow_unwinds_lets_the_run_end(store, tmp_path, processes, monkeypatch):
    """Inside a flow Prefect's engine raises for every SIGTERM; the work raises for its first only, so
    the second that systemd's group kill brings (directly and through the supervisor, at any moment
    of the unwinding) cannot leave the MLflow run RUNNING. Held while the run is being ended."""
    monkeypatch.setenv("GRAPHREC_STOP_GRACE", str(BOUND))  # the supervisor waits out the held unwinding
    started = {r.info.run_id for r in runs(store)}
    held = Held(processes, tmp_path, ["retrain", *_sets(store)], f"{PHASES['train']},deploy.runs:_end_if_possible",
                own_server=True)
    below = held.wait_in("train")
    work = next(pid for pid in below if proc_stat(pid) and proc_stat(pid)[1] == held.proc.pid)
    os.kill(work, signal.SIGTERM)
    held.wait_in("_end_if_possible")
    os.kill(work, signal.SIGTERM)
    (tmp_path / "_end_if_possible.go").touch()
    assert held.proc.wait(BOUND) == 143, held.err.read_text()[-3000:]
    assert "Traceback" not in held.err.read_text()
    _nothing_left(below, store)
    assert [r.info.status for r in runs(store) if r.info.run_id not in started] == ["KILLED"]


def test_the_servers_and_workers_are_outside_the_terminals_group(store, tmp_path, processes):
    """The command's process stays in the group the terminal signals; its work, and the Prefect
    server the work starts, lead a session of their own and end with the command."""
    held = Held(processes, tmp_path, ["retrain", *_sets(store)], PHASES["train"], own_server=True)
    below = held.wait_in("train")
    group = os.getpgid(held.proc.pid)
    assert below and all(os.getpgid(pid) != group for pid in below if not exited(pid))
    server = [pid for pid in below if "prefect" in open(f"/proc/{pid}/cmdline").read()]
    assert server
    held.proc.send_signal(signal.SIGKILL)  # the command alone, however it ends: the rest follows
    held.proc.wait(BOUND)
    wait_until(lambda: all(exited(pid) for pid in below), "the work and its server to follow the command")


def test_a_stop_signal_that_arrives_again_while_unwinding_does_not_cut_the_unwinding_short(tmp_path):
    """The work raises for its first stop signal only: a second one (SIGTERM sent to every process at
    once reaches the work directly and again through its supervisor) lets the cleanup finish."""
    import subprocess

    script = tmp_path / "work.py"
    script.write_text(
        "import os, signal\n"
        "from flows.stopping import Terminated, stop_on_signals\n"
        "stop_on_signals()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "except Terminated:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # the same signal again, while the first is handled\n"
        "    print('cleaned up', flush=True)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=BOUND)
    assert done.returncode == 0 and done.stdout == "cleaned up\n", done.stderr
