"""recsys/heap.py: inside reusing(), the memory of a large block freed serves a later one without the
kernel faulting its pages in afresh; outside it (or with compute.reuse_memory off), a large block is
always new pages. Counted in minor page faults (this process's), not in time."""
import resource

import pytest
import torch

from recsys import heap

BLOCK = 64 * 2**20  # above glibc's largest mmap threshold (32 MB): a mapping of its own by default
PAGES = BLOCK // 2 // resource.getpagesize()  # of the later, half-size block

pytestmark = pytest.mark.skipif(heap._malloc() is None, reason="not glibc's malloc")


def _faults(release: bool = False) -> int:
    """Minor page faults while a half-size block is written and freed, after a block was (torch's
    blocks come in 4 KB pages; numpy asks for huge ones)."""
    block = torch.ones(BLOCK // 4)
    del block
    if release:
        heap.release()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    later = torch.ones(BLOCK // 8)
    del later
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_inside_reusing_a_freed_block_serves_the_next_without_new_pages(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    assert _faults() > PAGES * 3 // 4  # malloc's own behaviour: fresh pages each time
    with heap.reusing() as active:
        assert active
        assert _faults() < PAGES // 8
        with heap.reusing() as inner:  # nested: still in effect when the inner one ends
            assert inner
        assert _faults() < PAGES // 8
    assert _faults() > PAGES * 3 // 4  # malloc's own behaviour again when the loop ends
    assert heap._depth == 0


def test_release_hands_the_free_pages_back(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    with heap.reusing():
        assert _faults(release=True) > PAGES * 3 // 4


def test_compute_reuse_memory_off_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(heap.ENV, "0")
    with heap.reusing() as active:
        assert not active
        assert _faults() > PAGES * 3 // 4
    heap.configure(True)
    with heap.reusing() as active:
        assert active
