"""How many threads graphrec's work uses, and keeping that fair when the cores are shared.

What a process is given: the CPUs of its affinity mask, capped by its cgroup's CPU quota (a
container with 2 CPUs on a 64-core host gets 2), unless `compute.threads` says otherwise, or a
graphrec parent gave it a share (`GRAPHREC_THREADS`: the suite's pytest workers, Dask workers,
each take their part instead of all of it).

`configure` sets the thread count before torch loads (OMP_NUM_THREADS and the BLAS libraries'
variables, which a user's own values override) and, once torch is loaded, torch's pool.

`Governor` keeps it fair while training. OpenMP teams wait for their slowest thread at every
parallel region: when another process takes one of the cores, each of the many small products of
an epoch waits for a thread that is not running, and a run that shares 2 cores with one busy
process becomes several times slower instead of twice. The governor reads how long this process's
threads waited for a CPU (the kernel's per-thread run delay) over short windows: while they wait,
it drops a thread; when the wait is gone, it tries one more after a pause that doubles each time
the extra thread brings the wait back. Alone, nothing waits and every thread stays.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Union

ENV = "GRAPHREC_THREADS"  # a parent's share for this process
ADAPT = "GRAPHREC_ADAPT_THREADS"  # "0": the governor leaves the count alone (compute.adapt_threads)
LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cgroup_v2_limit(relative: str, root: Path) -> Optional[float]:
    limits = []
    folder = root / relative.lstrip("/")
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _cgroup_v1_limit(relative: str, mount: Path) -> Optional[float]:
    limits = []
    folder = mount / relative.lstrip("/")
    while True:
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            if quota > 0 and period > 0:
                limits.append(quota / period)
        except (OSError, ValueError):
            pass
        if folder == mount or mount not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def cgroup_cpu_limit(membership: Path = Path("/proc/self/cgroup"),
                     root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """The CPUs this process's cgroup quota allows (quota / period, the tightest along its path),
    None without a quota. Reads cgroup v2 (`0::/path`, cpu.max) and v1 (`cpu` controller,
    cpu.cfs_quota_us / cpu.cfs_period_us)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, relative = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            found = _cgroup_v2_limit(relative, root)
            if found is not None:
                return found
        elif "cpu" in controllers.split(","):
            for name in (controllers, "cpu", "cpu,cpuacct"):
                if (root / name).is_dir():
                    return _cgroup_v1_limit(relative, root / name)
    return None


def available_cpus(affinity: Optional[set] = None, limit: Optional[float] = None) -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota (rounded up)."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    if limit is None:
        limit = cgroup_cpu_limit()
    cpus = len(affinity)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit - 1e-9))
    return max(1, cpus)


def threads_to_use(setting: Union[int, str, None] = "auto") -> int:
    """The thread count: a parent's share (GRAPHREC_THREADS), else `setting` (compute.threads),
    else what the process is given (available_cpus)."""
    share = os.environ.get(ENV, "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    if isinstance(setting, int) and setting > 0:
        return setting
    return available_cpus()


def configure(setting: Union[int, str, None] = "auto", share: int = 1, adapt: bool = True) -> int:
    """Set this process's thread count (threads_to_use, divided by `share` when it runs beside
    `share - 1` siblings that split what it was given) before torch loads, and torch's pool if it
    has. A user's own OMP_NUM_THREADS (or MKL / OpenBLAS variable) wins for its library. Returns it."""
    threads = max(1, threads_to_use(setting) // max(1, share))
    os.environ[ENV] = str(threads)
    os.environ[ADAPT] = "1" if adapt else "0"
    for name in LIBRARY_VARIABLES:
        os.environ.setdefault(name, str(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def worker_environment(workers: int, setting: Union[int, str, None] = "auto") -> dict[str, str]:
    """The variables for each of `workers` processes started to share this one's threads."""
    each = str(max(1, threads_to_use(setting) // max(1, workers)))
    return {ENV: each, **{name: each for name in LIBRARY_VARIABLES}}


def _run_delay_seconds() -> Optional[float]:
    """Seconds this process's threads have spent runnable but waiting for a CPU (Linux schedstat)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat") as fh:
                total += int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total / 1e9


class Governor:
    """Adapts torch's thread count to the cores this process actually gets (see the module text).
    Call `tick()` often (every optimiser step): it acts at most once per `window` seconds, in the
    thread that runs torch's parallel work (OpenMP's team size is that thread's setting)."""

    WAITING = 0.3   # average threads waiting for a CPU over a window above which one is dropped
    FIRST_PAUSE = 5.0
    LONGEST_PAUSE = 60.0

    def __init__(self, most: Optional[int] = None, window: float = 0.5, enabled: Optional[bool] = None):
        import torch

        self.torch = torch
        self.most = most or threads_to_use()
        enabled = os.environ.get(ADAPT, "1") != "0" if enabled is None else enabled
        self.threads = min(self.most, torch.get_num_threads())
        self.window, self.pause = window, self.FIRST_PAUSE
        self.enabled = enabled and self.most > 1 and _run_delay_seconds() is not None
        self.probing = False
        self.next_probe = float("inf")
        self.changes: list[tuple[float, int]] = []  # (seconds since start, threads) at each change
        self.started = self.t0 = time.monotonic()
        self.d0: float = (_run_delay_seconds() or 0.0) if self.enabled else 0.0

    @property
    def lowest(self) -> int:
        """The fewest threads used so far (the most, when no other work took the cores)."""
        return min([self.threads, *(n for _, n in self.changes)])

    def _set(self, threads: int, now: float) -> None:
        self.threads = threads
        self.torch.set_num_threads(threads)
        self.changes.append((round(now - self.started, 2), threads))

    def tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.t0 < self.window:
            return
        delay = _run_delay_seconds()
        delay = self.d0 if delay is None else delay
        waiting = (delay - self.d0) / (now - self.t0)
        self.t0, self.d0 = now, delay
        if waiting > self.WAITING and self.threads > 1:
            if self.probing:  # the extra thread brought the wait back: wait longer before the next try
                self.pause = min(self.LONGEST_PAUSE, self.pause * 2)
            self.probing = False
            self._set(self.threads - 1, now)
            self.next_probe = now + self.pause
        elif self.probing:  # the extra thread runs without waiting: keep it
            self.probing, self.pause = False, self.FIRST_PAUSE
            self.next_probe = now + self.pause if self.threads < self.most else float("inf")
        elif self.threads < self.most and now >= self.next_probe:
            self.probing = True
            self._set(self.threads + 1, now)
