"""The flow's phase recorder: seconds and the peak memory of each phase, by hand."""
import mmap
import time

import numpy as np
import pytest

from flows.phases import Phases, rss_mb


def test_peak_rss_sees_memory_held_only_inside_the_phase():
    before = rss_mb()
    phases = Phases(interval=0.01)

    def hold(mb: int) -> int:
        # fresh pages of the kernel's, written: resident whatever the allocator keeps, and unmapped on close
        with mmap.mmap(-1, mb * 2**20) as block:
            np.frombuffer(block, dtype=np.uint8)[:] = 1
            seen = phases.watching.samples
            for _ in range(6000):  # until the sampler has looked twice while the block is held (bounded: 60 s)
                if phases.watching.samples >= seen + 2:
                    break
                time.sleep(0.01)
            return int(block[-1] == 1)

    assert phases.run("big", hold, 200) == 1
    phases.run("small", lambda: None)
    assert phases["big"] >= 0 and phases["small"] >= 0
    assert phases.peak_rss_mb["big"] >= before + 150  # the 200 MB array was resident during the phase
    assert phases.peak_rss_mb["small"] < phases.peak_rss_mb["big"] - 150  # and freed before the next


def test_a_failing_phase_is_still_recorded():
    phases = Phases()
    with pytest.raises(ZeroDivisionError):
        phases.run("bad", lambda: 1 / 0)
    assert "bad" in phases and "bad" in phases.peak_rss_mb


def test_a_long_step_says_it_is_under_way_and_a_short_one_says_nothing(caplog):
    import logging
    import threading

    from recsys.progress import announced

    caplog.set_level(logging.INFO, logger="graphrec.progress")
    with announced("quick", every=60):
        pass
    assert caplog.records == []
    said = threading.Event()
    seen = logging.Handler()
    seen.emit = lambda record: said.set()  # type: ignore[method-assign]
    logging.getLogger("graphrec.progress").addHandler(seen)
    try:
        with announced("encoding texts", every=0.05):
            assert said.wait(300)  # the body outlasts the announcer's period (bounded, not a deadline)
    finally:
        logging.getLogger("graphrec.progress").removeHandler(seen)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("encoding texts: still working") and lines[-1].startswith("encoding texts: done in")
