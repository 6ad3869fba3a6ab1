"""Threads from what a process is given (recsys/threads.py): its affinity, its cgroup's CPU quota
(read from fixture files in the kernel's formats, since a test cannot change its cgroup), the
setting, a parent's share; and the governor's decisions on a run-delay record written by hand."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import recsys.threads as threads
from tests.conftest import REPO


def _cgroup_v2(tmp_path, path: str, limits: dict[str, str]):
    membership = tmp_path / "cgroup"
    membership.write_text(f"0::{path}\n")
    root = tmp_path / "fs"
    for folder, value in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(value + "\n")
    return membership, root


def test_a_cgroup_v2_quota_is_the_tightest_along_the_path(tmp_path):
    membership, root = _cgroup_v2(tmp_path, "/pod/job", {"": "max 100000", "pod": "300000 100000",
                                                         "pod/job": "150000 100000"})
    assert threads.cgroup_cpu_limit(membership, root) == 1.5
    assert threads.available_cpus(affinity=set(range(64)), limit=1.5) == 2  # 1.5 CPUs: two threads, not 64


def test_no_quota_leaves_the_affinity(tmp_path):
    membership, root = _cgroup_v2(tmp_path, "/user.slice", {"": "max 100000", "user.slice": "max 100000"})
    assert threads.cgroup_cpu_limit(membership, root) is None
    assert threads.available_cpus(affinity={0, 1, 2}, limit=None) == 3


def test_a_cgroup_v1_quota(tmp_path):
    membership = tmp_path / "cgroup"
    membership.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    folder = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("200000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(membership, tmp_path / "fs") == 2.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert threads.cgroup_cpu_limit(membership, tmp_path / "fs") is None


def test_setting_and_share_decide_before_what_the_machine_has(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.threads_to_use(3) == 3
    monkeypatch.setenv(threads.ENV, "1")  # a parent's share wins over the setting
    assert threads.threads_to_use(3) == 1
    assert threads.worker_environment(2, 4)[threads.ENV] == "1"
    monkeypatch.delenv(threads.ENV)
    assert threads.worker_environment(2, 4) == {threads.ENV: "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                                                "OPENBLAS_NUM_THREADS": "2"}


PROBE = """
import json, os, sys
os.sched_setaffinity(0, {0})
import recsys.threads as t
n = t.configure(share=int(sys.argv[1]))
import torch
print(json.dumps({"configured": n, "torch": torch.get_num_threads(), "omp": os.environ["OMP_NUM_THREADS"]}))
"""


@pytest.mark.parametrize("share", [1, 2])
def test_an_affinity_mask_of_one_cpu_gives_one_thread_to_torch(share):
    env = {k: v for k, v in os.environ.items() if k not in (threads.ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE, str(share)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    assert json.loads(out.stdout) == {"configured": 1, "torch": 1, "omp": "1"}


def test_a_process_started_by_graphrec_inherits_the_divided_count():
    env = {**os.environ, **threads.worker_environment(2, 2)}
    out = subprocess.run([sys.executable, "-c", "import recsys.threads as t, torch; print(t.configure(), "
                                                "torch.get_num_threads())"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_dask_workers_get_their_share(monkeypatch):
    from flows.runners import task_runner

    monkeypatch.delenv(threads.ENV, raising=False)  # this test's own process: no share of a parent's
    from recsys.config_ops import ComputeConfig

    runner = task_runner(ComputeConfig(runner="dask", workers=2, threads=4))
    assert runner.cluster_kwargs["env"][threads.ENV] == "2" and runner.cluster_kwargs["n_workers"] == 2


class _Clock:
    """Seconds and run delay the governor reads, advanced by the test."""

    def __init__(self):
        self.now, self.delay = 0.0, 0.0

    def advance(self, seconds: float, waiting_threads: float) -> None:
        self.now += seconds
        self.delay += seconds * waiting_threads


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(threads.time, "monotonic", lambda: c.now)
    monkeypatch.setattr(threads, "_run_delay_seconds", lambda: c.delay)
    return c


def test_the_governor_drops_a_thread_while_its_threads_wait_and_probes_back(clock, monkeypatch):
    import torch

    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    g = threads.Governor(most=2, window=0.5, enabled=True)
    clock.advance(0.6, 0.0)  # alone: nothing waits, nothing changes
    g.tick()
    assert g.threads == 2 and set_to == []
    clock.advance(0.6, 0.8)  # another process holds a core: 0.8 threads waiting on average
    g.tick()
    assert g.threads == 1 and set_to == [1]
    clock.advance(0.6, 0.0)
    g.tick()  # before the first pause (5 s) is over: stays at 1
    assert g.threads == 1
    clock.advance(5.0, 0.0)
    g.tick()  # the pause is over: one more thread, on probation
    assert g.threads == 2 and g.probing
    clock.advance(0.6, 0.9)  # the other process is still there
    g.tick()
    assert g.threads == 1 and g.pause == 10.0  # back down; the next try waits twice as long
    clock.advance(10.5, 0.0)
    g.tick()
    assert g.threads == 2
    clock.advance(0.6, 0.0)  # it has gone: the thread stays, the pause starts again from 5 s
    g.tick()
    assert g.threads == 2 and not g.probing and g.pause == 5.0 and g.lowest == 1


def test_the_governor_does_nothing_when_told_not_to_or_with_one_thread(clock):
    assert not threads.Governor(most=2, enabled=False).enabled
    assert not threads.Governor(most=1, enabled=True).enabled
