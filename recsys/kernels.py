"""Compiled sparse x dense products for graph propagation, and candidate scoring for hard
negatives (source: recsys/csrc/csr_mm.cpp).

torch's CSR product (MKL) spends most of its time waiting on the rows of x it gathers; the
compiled kernel prefetches them and keeps a 64-wide output row in registers: 1.6-3x faster on
Gowalla's adjacency, by the moment (6.1 vs 10.0 ms, 5.3 vs 17.4 ms; bench/lightgcn_speed.py
measures both in the whole loop). It is built on first use with the machine's compiler (about
20 s, once per source, torch version and CPU, cached beside the environment) and torch's own
products stand in, with a warning, wherever it cannot be built.
GRAPHREC_KERNELS=0 turns it off.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "csr_mm.cpp"
SWITCH = "GRAPHREC_KERNELS"


def _build_folder(key: str) -> Path:
    root = os.environ.get("GRAPHREC_ENV_ROOT") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graphrec"
    return Path(root) / f"kernels-{key}"


def _cpu_flags() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the ninja package installed with graphrec has it in its own folder."""
    try:
        import ninja
    except ImportError:
        return
    if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


_build_lock = threading.Lock()  # one build per process, even when tasks start in threads


def compiled():
    """The compiled module, or None (switched off, or it could not be built: a warning says why)."""
    with _build_lock:
        return _load()


def reset() -> None:
    """Forget the loaded module, so that the next call looks at GRAPHREC_KERNELS again."""
    with _build_lock:
        _load.cache_clear()


@contextlib.contextmanager
def torch_products():
    """Inside the block, torch's products stand in for the compiled ones (comparisons, tests)."""
    before = os.environ.get(SWITCH)
    os.environ[SWITCH] = "0"
    reset()
    try:
        yield
    finally:
        if before is None:
            del os.environ[SWITCH]
        else:
            os.environ[SWITCH] = before
        reset()


@functools.lru_cache(maxsize=None)
def _load():
    if os.environ.get(SWITCH, "1") == "0":
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its import notes that there is no CUDA
            from torch.utils.cpp_extension import load
        _put_ninja_on_path()
        key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + _cpu_flags().encode()).hexdigest()[:16]
        folder = _build_folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        return load(name=f"graphrec_csr_mm_{key}", sources=[str(SOURCE)], build_directory=str(folder),
                    extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # no compiler, no ninja, a read-only cache: torch's products still work
        warnings.warn(f"graphrec: the compiled sparse products could not be built ({type(exc).__name__}: {exc}); "
                      f"using torch.sparse.mm, which is slower. Install g++ and ninja, or set {SWITCH}=0 to "
                      "silence this.", RuntimeWarning, stacklevel=3)
        return None


def _check_bounds(idx: torch.Tensor, size: int, what: str) -> None:
    """The compiled code reads wherever an index points: an index out of range is refused here."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise IndexError(f"{what} out of range: [{int(idx.min())}, {int(idx.max())}] for size {size}")


def _compiled_for(a: torch.Tensor, x: torch.Tensor):
    """The compiled module if it can take this product (float32 CSR with int64 indices), else None."""
    if (a.layout == torch.sparse_csr and a.dtype == torch.float32 and x.dtype == torch.float32
            and a.crow_indices().dtype == torch.int64):
        return compiled()
    return None


def csr_mm(a: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor] = None,
           rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A x, or A[rows] x when rows (int64 row numbers) is given; into `out` when given. No autograd."""
    m = a.shape[0] if rows is None else len(rows)
    if out is None:
        out = torch.empty(m, x.shape[1], dtype=x.dtype)
    module = _compiled_for(a, x)
    if module is None:
        product = torch.sparse.mm(a, x)
        return out.copy_(product if rows is None else product[rows])
    if rows is not None:
        _check_bounds(rows, a.shape[0], "rows")
    return module.rows_mm(a.crow_indices(), a.col_indices(), a.values(), x.contiguous(),
                              torch.empty(0, dtype=torch.long) if rows is None else rows.contiguous(), out)


def masked_mm(a: torch.Tensor, local: torch.Tensor, h: torch.Tensor,
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A y for the y that is h[local[c]] at the rows c with local[c] >= 0 and zero elsewhere,
    without building y (when compiled). No autograd."""
    if out is None:
        out = torch.empty(a.shape[0], h.shape[1], dtype=h.dtype)
    module = _compiled_for(a, h)
    if module is None:
        at = (local >= 0).nonzero().squeeze(1)
        y = torch.zeros(a.shape[1], h.shape[1], dtype=h.dtype)
        y[at] = h[local[at]]
        return out.copy_(torch.sparse.mm(a, y))
    return module.masked_mm(a.crow_indices(), a.col_indices(), a.values(), local.contiguous(),
                                h.contiguous(), out)


def gather_dot(q: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, M) scores q[b] . table[idx[b, m]] for q (B, d), table (N, d), idx (B, M). No autograd."""
    module = compiled() if q.dtype == table.dtype == torch.float32 else None
    if module is None:
        return torch.einsum("bd,bmd->bm", q, table[idx])
    _check_bounds(idx, table.shape[0], "candidates")
    return module.gather_dot(q.contiguous(), table.contiguous(), idx.contiguous())
