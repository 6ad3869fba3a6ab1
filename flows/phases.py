"""Seconds and peak resident memory of each phase of a flow.

`Phases.run(name, fn, *args)` calls fn and records how long it took and the largest resident set
size (RSS) of this process while it ran, sampled every `interval` seconds by a daemon thread
(Linux: /proc/self/statm; elsewhere the process's lifetime peak, from getrusage). The sampler stops
when the phase ends, waited for at most a second.
"""
from __future__ import annotations

import os
import resource
import sys
import threading
import time
from typing import Callable

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 0.0


def rss_mb() -> float:
    """This process's resident memory now, in MB (its lifetime peak where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


class PeakRSS:
    """The largest RSS seen between start and stop (context manager); `.mb` holds it."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.mb, self.samples = interval, rss_mb(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="graphrec-peak-rss", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.mb = max(self.mb, rss_mb())
            self.samples += 1

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.mb = max(self.mb, rss_mb())


class Phases(dict):
    """Seconds each phase of the flow took, by name (retries included), and `peak_rss_mb`: the
    peak resident memory during each."""

    def __init__(self, interval: float = 0.1):
        super().__init__()
        self.interval = interval
        self.peak_rss_mb: dict[str, float] = {}
        self.watching: PeakRSS | None = None  # the running phase's sampler

    def run(self, name: str, fn: Callable, *args, **kwargs):
        t0 = time.perf_counter()
        peak = self.watching = PeakRSS(self.interval)
        try:
            with peak:
                return fn(*args, **kwargs)
        finally:
            self[name] = time.perf_counter() - t0
            self.peak_rss_mb[name] = round(peak.mb, 1)
