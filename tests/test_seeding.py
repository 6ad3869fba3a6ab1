"""recsys.seeding.seed_everything: one call, every generator, and no DGL import of its own."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from recsys.seeding import seed_everything

REPO = Path(__file__).resolve().parents[1]


def _draws() -> tuple:
    return random.random(), np.random.rand(4).tolist(), torch.rand(4).tolist(), torch.randint(0, 10**6, (4,)).tolist()


def test_same_seed_same_draws_other_seed_other_draws():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_does_not_import_dgl():
    code = ("import sys, recsys.seeding; recsys.seeding.seed_everything(0); "
            "assert 'dgl' not in sys.modules, 'seed_everything imported dgl'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_seeds_dgl_when_loaded():
    import dgl

    # A complete directed graph on 30 nodes: every step of a walk picks one of 29 neighbours with
    # DGL's own generator (not torch's or numpy's).
    src, dst = zip(*[(u, v) for u in range(30) for v in range(30) if u != v])
    g = dgl.graph((torch.tensor(src), torch.tensor(dst)))
    start = torch.arange(30)

    def walks() -> torch.Tensor:
        return dgl.sampling.random_walk(g, start, length=20)[0]

    seed_everything(3)
    first = walks()
    seed_everything(3)
    assert torch.equal(walks(), first)
    seed_everything(4)
    assert not torch.equal(walks(), first)
    # The walks follow DGL's generator: reseeding only torch, numpy and random does not repeat them.
    seed_everything(3)
    walks()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    assert not torch.equal(walks(), first)
