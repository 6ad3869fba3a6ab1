"""Faults in whole processes, through the real command line: a retrain killed with SIGKILL at the
start of each phase of the flow that writes (or follows a write), and two retrains at once on one
store. After each: the champion and CURRENT are as they were (the killed runs are set up so that
they could not pass the gates anyway: CANNOT_WIN), CURRENT still serves, no version is left with
half a decision, the killed run is marked KILLED by the next start, and the Prefect server the
command started went with it. A retrain killed while training goes on from its last kept epoch when
run again (deploy/resume.py).

(Commands stopped by SIGINT / SIGTERM to their process group: test_stopping.py. The kernel build
killed at any moment: test_kernels.py. A refresh killed mid-write and the tracking server lost
while registering: test_faults.py.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from tests.conftest import REPO, TINY_NETWORK, descendants, exited, wait_until, worker_of
from tests.stores import registry, runs, serves, state

TINY = [*TINY_NETWORK, "train.epochs=1", "train.eval_every=1"]
# No vector of a trained model is that short: the embedding gate refuses these challengers.
CANNOT_WIN = ["promotion.embedding.min_norm=0", "promotion.embedding.max_norm=1e-9", "train.seed=3"]
# The flow's tasks in order; "kill at P" = SIGKILL as soon as the task before P has finished.
PHASES = ["reconcile", "load_data", "validate", "check_drift", "build_graph", "start_run", "record_profile", "train",
          "evaluate", "register", "promote", "refresh"]
# Where the kill lands: every phase but the read-only ones between validate and start_run (load_data,
# check_drift, build_graph write nothing anywhere, as validate does not: it stands for them).
KILLED_AT = [p for p in PHASES if p not in ("load_data", "check_drift", "build_graph")]


def _argv(root: Path, *extra: str) -> list[str]:
    args = ["retrain"]
    for item in [f"stores.root={root}", *TINY, *extra]:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Version 1 is champion; its snapshot is CURRENT."""
    root = tmp_path_factory.mktemp("kills-store")
    prepare_prefect(root)
    assert cli_main(_argv(root)) == 0
    return root


def _start(processes, root: Path, log: Path, *extra: str, own_server: bool = False):
    """A retrain process on the session's Prefect server, or with one of its own."""
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"}  # the task lines the test follows
    if own_server:
        env.pop("PREFECT_API_URL", None)
    out = open(log, "w")
    return processes.start([sys.executable, "-m", "flows.cli", *_argv(root, *extra)], cwd=REPO, env=env,
                           stdout=out, stderr=subprocess.STDOUT)


def _finished(log: Path, task: str) -> bool:
    """Whether the log says `task` has finished (None: the flow run has begun)."""
    marker = "Beginning flow run" if task is None else f"Task run '{task}-"
    return any(marker in line and (task is None or "Finished in state" in line)
               for line in log.read_text(errors="replace").splitlines())


@pytest.mark.parametrize("phase", KILLED_AT)
def test_a_retrain_killed_at_each_phase_changes_nothing(store, phase, tmp_path, processes):
    root = store
    before = state(root)
    log = tmp_path / "retrain.log"
    proc = _start(processes, root, log, *CANNOT_WIN)
    previous = PHASES[PHASES.index(phase) - 1] if phase != PHASES[0] else None
    wait_until(lambda: _finished(log, previous) or proc.poll() is not None, f"the task before '{phase}'")
    assert proc.poll() is None, log.read_text()[-3000:]
    os.killpg(worker_of(proc), signal.SIGKILL)  # the work and what it started, as kill -9 or the OOM killer would
    proc.wait()
    assert state(root) == before
    serves(root, before["champion"])


def test_a_killed_retrain_leaves_no_server_and_its_run_is_marked_killed_next_time(store, tmp_path, processes):
    root = store
    log = tmp_path / "retrain.log"
    proc = _start(processes, root, log, *CANNOT_WIN, "train.epochs=500", "train.patience=500", own_server=True)
    wait_until(lambda: _finished(log, "record_profile") or proc.poll() is not None, "training to start")
    servers = [pid for pid, _ in descendants(proc.pid) if "prefect" in open(f"/proc/{pid}/cmdline").read()]
    assert len(servers) == 1, "the command runs its own Prefect server"
    os.kill(worker_of(proc), signal.SIGKILL)  # the work's process alone, not its group: as the OOM killer would
    proc.wait()
    wait_until(lambda: exited(servers[0]), "the server to follow its command")
    client, cfg = registry(root)
    exp = client.get_experiment_by_name(cfg.stores.experiment)
    running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert len(running) == 1  # the killed one, until the next start
    assert cli_main(_argv(root, *CANNOT_WIN)) == 0
    killed = client.get_run(running[0].info.run_id)
    assert killed.info.status == "KILLED" and "ended without ending the run" in killed.data.tags["graphrec.ended"]


def test_two_retrains_at_once_both_finish_and_current_serves_the_champion(store, tmp_path, processes):
    root = store
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs = [_start(processes, root, log, f"train.seed={seed}") for log, seed in zip(logs, (11, 12))]
    codes = [p.wait(timeout=1800) for p in procs]  # a bound, not a deadline on speed
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    now = state(root)
    serves(root, now["champion"])


def test_a_retrain_killed_while_training_goes_on_from_its_kept_epoch_when_run_again(store, tmp_path, processes):
    root = store
    keep = [*CANNOT_WIN, "train.epochs=60", "train.patience=60", "train.warm.patience=60", "train.checkpoint_seconds=0"]
    log = tmp_path / "retrain.log"
    proc = _start(processes, root, log, *keep)
    kept = wait_until(lambda: list((root / "checkpoints").glob("*/train.pt")) or proc.poll() is not None,
                      "an epoch kept on disk")
    assert proc.poll() is None, log.read_text()[-3000:]
    os.killpg(worker_of(proc), signal.SIGKILL)
    proc.wait()
    assert cli_main(_argv(root, *keep)) == 0
    client, _ = registry(root)
    run = runs(root)[0]
    assert run.data.tags["graphrec.resumed"].startswith("train after epoch ")
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert steps == list(range(1, 61))  # the new run's curve holds the epochs before the kill too
    assert not kept[0].parent.exists()  # a finished training removes what it kept
