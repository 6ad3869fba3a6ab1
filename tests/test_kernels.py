"""The compiled CSR products against dense matrix products, and torch's stand-ins for them."""
import pytest
import torch

from recsys import kernels
from recsys.kernels import csr_mm, masked_mm
from tests.conftest import REPO, descendants, exited


def _random_csr(m, n, density, seed):
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(m, n, generator=g) * (torch.rand(m, n, generator=g) < density)
    dense[3] = 0  # an empty row
    return dense, dense.to_sparse_csr()


@pytest.fixture(params=["compiled", "torch"])
def mode(request):
    """Both paths: the compiled kernel (which must build on this machine) and torch's products."""
    if request.param == "torch":
        with kernels.torch_products():
            assert kernels.compiled() is None
            yield request.param
    else:
        assert kernels.compiled() is not None, "the kernel did not build (see the warning)"
        yield request.param


@pytest.mark.parametrize("width", [64, 32, 16, 70, 120, 128])  # 70: a 64-wide block, a 6-wide rest; 120: 64, 32, 16, 8
def test_product_equals_the_dense_one(mode, width):
    dense, a = _random_csr(40, 30, 0.3, seed=width)
    x = torch.randn(30, width)
    assert torch.allclose(csr_mm(a, x), dense @ x, atol=1e-5)
    out = torch.full((40, width), float("nan"))  # every row written, empty ones included
    assert csr_mm(a, x, out=out) is out
    assert torch.allclose(out, dense @ x, atol=1e-5)


def test_chosen_rows_with_repeats(mode):
    dense, a = _random_csr(40, 30, 0.3, seed=1)
    x = torch.randn(30, 64)
    rows = torch.tensor([5, 3, 5, 39, 0])
    assert torch.allclose(csr_mm(a, x, rows=rows), (dense @ x)[rows], atol=1e-5)


def test_masked_product_equals_the_product_with_a_mostly_zero_matrix(mode):
    dense, a = _random_csr(40, 30, 0.3, seed=2)
    h = torch.randn(4, 64)
    at = torch.tensor([7, 0, 29, 12])
    local = torch.full((30,), -1, dtype=torch.long)
    local[at] = torch.arange(4)
    y = torch.zeros(30, 64)
    y[at] = h
    assert torch.allclose(masked_mm(a, local, h), dense @ y, atol=1e-5)


def test_a_build_that_fails_warns_and_torch_takes_over(monkeypatch, tmp_path):
    kernels.reset()
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "missing.cpp")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert kernels.compiled() is None
    dense, a = _random_csr(10, 10, 0.5, seed=3)
    x = torch.randn(10, 64)
    assert torch.allclose(csr_mm(a, x), dense @ x, atol=1e-5)
    kernels.reset()


@pytest.mark.parametrize("width", [64, 20])  # 20: a 16-wide block and a 4-wide rest
def test_gather_dot_scores_each_candidate_against_its_query(mode, width):
    g = torch.Generator().manual_seed(width)
    q, table = torch.randn(5, width, generator=g), torch.randn(30, width, generator=g)
    idx = torch.randint(30, (5, 12), generator=g)
    expected = torch.tensor([[float(q[b] @ table[idx[b, m]]) for m in range(12)] for b in range(5)])
    assert torch.allclose(kernels.gather_dot(q, table, idx), expected, atol=1e-5)


def test_indices_out_of_range_are_refused_not_read(mode):
    _, a = _random_csr(10, 10, 0.5, seed=4)
    with pytest.raises(IndexError):
        csr_mm(a, torch.randn(10, 64), rows=torch.tensor([0, 10]))
    with pytest.raises(IndexError):
        kernels.gather_dot(torch.randn(2, 64), torch.randn(5, 64), torch.tensor([[0, 1], [5, 2]]))


# The build under faults: a killed build, a lock whose holder died, a holder that does not finish.
HOLD_LOCK = r"""
import sys, time
from pathlib import Path
from recsys import kernels
with kernels.build_lock(Path(sys.argv[1]), 5):
    print("held", flush=True)
    time.sleep(3600)
"""
LOAD = "from recsys import kernels; m = kernels.compiled(); print('loaded' if m is not None else 'fallback')"


def _python(processes, code, *args, env=None, **kwargs):
    import subprocess
    import sys

    return processes.start([sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_lock_whose_holder_was_killed_is_taken_at_once(tmp_path, processes):
    import os
    import signal

    holder = _python(processes, HOLD_LOCK, str(tmp_path))
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(kernels.BuildBusy, match=f"pid {holder.pid}"):  # alive: waited for, then refused
        with kernels.build_lock(tmp_path, 0.5):
            pass
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    with kernels.build_lock(tmp_path, 0):  # no wait: the kernel dropped the dead holder's lock
        assert (tmp_path / ".build-lock").read_text().startswith(f"pid {os.getpid()} ")


def test_a_build_held_up_elsewhere_falls_back_to_torch_after_the_bounded_wait(tmp_path, processes, monkeypatch):
    monkeypatch.setenv("GRAPHREC_ENV_ROOT", str(tmp_path))
    monkeypatch.setenv(kernels.WAIT, "1")
    folder = tmp_path / f"kernels-{kernels.build_key()}"
    folder.mkdir()
    holder = _python(processes, HOLD_LOCK, str(folder))
    assert holder.stdout.readline().strip() == "held"
    kernels.reset()
    try:
        with pytest.warns(RuntimeWarning, match="still running"):
            assert kernels.compiled() is None
    finally:
        kernels.reset()


def test_a_build_killed_at_any_moment_never_blocks_the_next_one(tmp_path, processes):
    """Killed while it holds the lock before compiling, then in the middle of the compiler's run;
    a lock file in torch's own style left in the folder changes nothing. The next process builds
    and loads the module; no private build folder is left."""
    import os
    import signal

    from tests.conftest import wait_until

    env = {**os.environ, "GRAPHREC_ENV_ROOT": str(tmp_path)}
    env.pop(kernels.SWITCH, None)
    folder = tmp_path / f"kernels-{kernels.build_key()}"
    for moment in ("build folder made", "compiler running"):
        build = _python(processes, LOAD, env=env)
        wait_until(lambda pid=build.pid: next(folder.glob("build-*"), None) or exited(pid), "the build's own folder")
        if moment == "compiler running":  # (ninja starts each compile in a process group of its own)
            wait_until(lambda pid=build.pid: "cc1plus" in dict(descendants(pid)).values() or exited(pid),
                       "the compiler")
        assert not exited(build.pid), f"the build ended before it was killed: {build.communicate()}"
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
        assert not list(folder.glob("*.so")), f"killed at '{moment}', a module was left in place"
    (folder / "lock").write_text("")  # torch's lock file, as a build killed by an older graphrec left it
    final = _python(processes, LOAD, env=env)
    out, err = final.communicate()
    assert out.strip() == "loaded", err
    assert len(list(folder.glob("*.so"))) == 1 and not list(folder.glob("build-*"))
    again = _python(processes, LOAD, env=env)  # the next process loads it without building
    assert again.communicate()[0].strip() == "loaded"
