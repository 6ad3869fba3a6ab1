"""One call that seeds every global random generator graphrec's code draws from.

Python's `random`, numpy's global generator (`np.random.*`), torch (CPU and, where present, CUDA)
and DGL's generator (neighbour sampling, random walks). DGL is seeded only when something has
already imported it: this module never imports DGL, so a benchmark or script that does not use
graphs does not pay for loading it just to seed it. Seed after the code that loads DGL has been
imported (any `recsys.graph`/`recsys.models` module does), or call again once it has.
"""
from __future__ import annotations

import random
import sys

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed random, numpy's global generator, torch and, if it is loaded, DGL with `seed`."""
    random.seed(seed)
    np.random.seed(seed)  # needs 0 <= seed < 2**32, like the others in practice
    torch.manual_seed(seed)  # every device's generator
    dgl = sys.modules.get("dgl")
    if dgl is not None and hasattr(dgl, "seed"):  # hasattr: not while dgl itself is still importing
        dgl.seed(seed)
