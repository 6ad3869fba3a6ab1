"""Keeping the memory a training step frees for the next step, instead of handing it back to the kernel.

A step of a large model allocates and frees tensors of hundreds of megabytes (the propagated
tables, their gradients, Adam's temporaries, the scored candidates). glibc's malloc serves every
block above its mmap threshold (32 MB at most) with a mapping of its own and unmaps it on free, so
the next step's blocks are fresh pages that the kernel faults in and zeroes one by one, in the
process's own time: at scale a large share of an epoch's CPU time is kernel time
(bench/results/heap.md measures it). While the training loop runs, `reusing()` has malloc serve
every block from its heap and keep what is freed there (mallopt: no mappings, no trimming);
`release()`, at each epoch's end, hands the heap's free pages back (malloc_trim), so what the
process holds beyond its live tensors lasts one epoch; when the loop ends, malloc's own behaviour
returns. The price is the heap's fragmentation within an epoch (a higher peak RSS, which the
benchmark reports beside the speed). `compute.reuse_memory: false` turns it off. Elsewhere than
glibc (macOS, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import functools
import os
from contextlib import contextmanager
from typing import Iterator, Optional

ENV = "GRAPHREC_REUSE_MEMORY"  # "0": leave malloc alone (compute.reuse_memory)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)
DEFAULT_TRIM, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults, put back when the loop ends
KEEP_ALL = 2**31 - 1  # the largest trim threshold mallopt takes (an int): 2 GB free at the heap's top

_depth = 0


def configure(enabled: bool) -> None:
    """This process's setting (and its children's): set from compute.reuse_memory before work starts."""
    os.environ[ENV] = "1" if enabled else "0"


@functools.lru_cache(maxsize=1)
def _malloc() -> Optional[ctypes.CDLL]:
    """The process's malloc functions where they are glibc's (musl's mallopt does nothing and says so)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows, which has no process-wide handle
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _glibc() -> Optional[ctypes.CDLL]:
    return None if os.environ.get(ENV, "1") == "0" else _malloc()


@contextmanager
def reusing() -> Iterator[bool]:
    """While inside, freed blocks stay in malloc's heap for reuse (see the module); yields whether that
    is in effect (glibc, and compute.reuse_memory). Nested uses keep it until the outermost ends."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _depth == 0 and not (libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_ALL) == 1):
        _restore(libc)
        yield False
        return
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            _restore(libc)


def _restore(libc: ctypes.CDLL) -> None:
    libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
    libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM)
    libc.malloc_trim(0)


def release() -> None:
    """Inside `reusing()`: hand the heap's free pages back to the kernel (the end of an epoch)."""
    if _depth > 0:
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)
