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
