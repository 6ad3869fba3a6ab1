"""Compiled sparse x dense products for graph propagation, and candidate scoring for hard
negatives (source: recsys/csrc/csr_mm.cpp).

torch's CSR product (MKL) spends most of its time waiting on the rows of x it gathers; the
compiled kernel prefetches them and keeps a 64-wide output row in registers (bench.gpu times the
loop on any device; bench/results/lightgcn_speed.md has both products side by side). It is built on
first use with the machine's compiler into a folder keyed by everything that changes the build (build_key), beside the
environment, shared by every checkout on the machine. The build never hangs a process: it waits
for another process's build at most GRAPHREC_KERNEL_BUILD_WAIT seconds, a build whose process
died releases its lock with it, and a module appears only complete, by one rename. torch's own
products stand in, with a warning, wherever the module cannot be had.
GRAPHREC_KERNELS=0 turns it off.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Optional

import torch

from recsys.progress import announced

SOURCE = Path(__file__).resolve().parent / "csrc" / "csr_mm.cpp"
SWITCH = "GRAPHREC_KERNELS"
WAIT = "GRAPHREC_KERNEL_BUILD_WAIT"  # seconds to wait for another process's build


def _cache_root() -> Path:
    root = os.environ.get("GRAPHREC_ENV_ROOT")
    return Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graphrec"


def _cpu_flags() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return ""


def _compiler() -> str:
    """The C++ compiler torch will call, as it describes itself (a new compiler is a new build)."""
    cxx = os.environ.get("CXX", "c++")
    try:
        return cxx + subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx


CFLAGS = ("-O3", "-march=native", "-fopenmp")
LDFLAGS = ("-fopenmp",)


def _key_parts() -> dict[str, str]:
    """Everything that changes the built module: its source, torch, Python, the compiler, the
    flags and the CPU (-march=native). No path of the checkout goes in, so every checkout on a
    machine shares one build."""
    return {"source sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(), "torch": torch.__version__,
            "python": sys.version, "compiler": _compiler(), "flags": " ".join(CFLAGS + LDFLAGS),
            "cpu": _cpu_flags()}


def build_key() -> str:
    text = "\n".join(f"{k}: {v}" for k, v in _key_parts().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


class BuildBusy(RuntimeError):
    """Another live process has been building the module for longer than we wait."""


@functools.lru_cache(maxsize=None)
def _load():
    if os.environ.get(SWITCH, "1") == "0":
        return None
    try:
        key = build_key()
        folder = _cache_root() / f"kernels-{key}"
        name = f"graphrec_csr_mm_{key}"
        built = folder / f"{name}.so"
        if not built.exists():
            folder.mkdir(parents=True, exist_ok=True)
            with build_lock(folder, float(os.environ.get(WAIT, "600"))):
                if not built.exists():
                    with announced(f"compiling the sparse products once for this machine into {folder}"):
                        return _build(folder, name, built)
        return _import(name, built)
    except Exception as exc:  # no compiler, no ninja, a read-only cache, a build stuck elsewhere
        warnings.warn(f"graphrec: the compiled sparse products could not be built ({type(exc).__name__}: {exc}); "
                      f"using torch.sparse.mm, which is slower. Install g++ and ninja, or set {SWITCH}=0 to "
                      "silence this.", RuntimeWarning, stacklevel=3)
        return None


@contextlib.contextmanager
def build_lock(folder: Path, wait_seconds: float):
    """An exclusive flock on folder/.build-lock, waited for at most `wait_seconds`. The kernel
    drops a flock when its holder dies, however it dies, so a killed build never leaves a lock
    behind (torch's own lock file does, and every later load then waits forever)."""
    path = folder / ".build-lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise BuildBusy(f"{path} is held by a build that is still running ({holder}) after "
                                    f"{wait_seconds:g} s ({WAIT} sets the wait)") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(folder: Path, name: str, built: Path):
    """Compile in a folder of this process's own, then move the module into place in one rename:
    a build killed at any moment leaves no half-written module where others look for it.
    Returns the module (torch has loaded it already; loading the moved file again would load
    a second copy of the same extension)."""
    for stale in folder.glob("build-*"):  # builds killed earlier (we hold the lock: none is running)
        shutil.rmtree(stale, ignore_errors=True)
    with contextlib.redirect_stderr(io.StringIO()):  # its import notes that there is no CUDA
        from torch.utils.cpp_extension import load
    _put_ninja_on_path()
    private = Path(tempfile.mkdtemp(prefix="build-", dir=folder))
    try:
        source = private / SOURCE.name
        shutil.copyfile(SOURCE, source)
        module = load(name=name, sources=[str(source)], build_directory=str(private), extra_cflags=list(CFLAGS),
                      extra_ldflags=list(LDFLAGS), verbose=False)  # torch extends the lists it is given
        (folder / "key.txt").write_text("".join(f"{k}: {v}\n" for k, v in _key_parts().items()))
        os.replace(private / f"{name}.so", built)
        sys.modules[name] = module
        return module
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _import(name: str, path: Path):
    """Each extension is loaded once per process (a second copy of it crashes at exit)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the compiled extension {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def _check_bounds(idx: torch.Tensor, size: int, what: str) -> None:
    """The compiled code reads wherever an index points: an index out of range is refused here."""
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
        raise IndexError(f"{what} out of range: [{int(idx.min())}, {int(idx.max())}] for size {size}")


def _compiled_for(a: torch.Tensor, x: torch.Tensor):
    """The compiled module if it can take this product (float32 CSR with int64 indices), else None."""
    if (a.layout == torch.sparse_csr and a.dtype == torch.float32 and x.dtype == torch.float32
            and a.crow_indices().dtype == torch.int64 and x.device.type == "cpu"):
        return compiled()
    return None


def csr_mm(a: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor] = None,
           rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A x, or A[rows] x when rows (int64 row numbers) is given; into `out` when given. No autograd."""
    m = a.shape[0] if rows is None else len(rows)
    if out is None:
        out = torch.empty(m, x.shape[1], dtype=x.dtype, device=x.device)
    module = _compiled_for(a, x)
    if module is None:
        product = torch.sparse.mm(a.to(x.device), x)  # another device: torch's own product there
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
        out = torch.empty(a.shape[0], h.shape[1], dtype=h.dtype, device=h.device)
    module = _compiled_for(a, h)
    if module is None:
        at = (local >= 0).nonzero().squeeze(1)
        y = torch.zeros(a.shape[1], h.shape[1], dtype=h.dtype, device=h.device)
        y[at] = h[local[at]]
        return out.copy_(torch.sparse.mm(a, y))
    return module.masked_mm(a.crow_indices(), a.col_indices(), a.values(), local.contiguous(),
                                h.contiguous(), out)


def gather_dot(q: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, M) scores q[b] . table[idx[b, m]] for q (B, d), table (N, d), idx (B, M). No autograd."""
    module = compiled() if q.dtype == table.dtype == torch.float32 and q.device.type == "cpu" else None
    if module is None:
        return torch.einsum("bd,bmd->bm", q, table[idx])
    _check_bounds(idx, table.shape[0], "candidates")
    return module.gather_dot(q.contiguous(), table.contiguous(), idx.contiguous())
