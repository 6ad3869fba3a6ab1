"""Pauses a graphrec process at named functions, for tests that must act while it is inside one
(send a signal during validation, during a snapshot write). Python imports this module at start-up
when its folder is on PYTHONPATH; it does nothing unless GRAPHREC_TEST_PAUSE is set.

GRAPHREC_TEST_PAUSE="module:Qual.name,module:other" wraps each function once its module is
imported: a call touches `<GRAPHREC_TEST_PAUSE_DIR>/<Qual.name>.reached` and then waits (bounded)
until `<dir>/<Qual.name>.go` exists, so the test proceeds on events, never on timing.
"""
import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path

BOUND = 900.0  # seconds: only so that a forgotten pause never hangs a process


def _paused(fn, folder: Path, label: str):
    def wrapper(*args, **kwargs):
        (folder / f"{label}.reached").touch()
        deadline = time.monotonic() + BOUND
        while not (folder / f"{label}.go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return fn(*args, **kwargs)
    return wrapper


class _PauseFinder(importlib.abc.MetaPathFinder):
    def __init__(self, targets: dict, folder: Path):
        self.targets, self.folder = targets, folder

    def find_spec(self, name, path, target=None):
        if name not in self.targets:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run, qualnames = spec.loader.exec_module, self.targets.pop(name)

        def exec_module(module):
            run(module)
            for qualname in qualnames:
                holder = module
                for part in qualname.split(".")[:-1]:
                    holder = getattr(holder, part)
                last = qualname.split(".")[-1]
                setattr(holder, last, _paused(getattr(holder, last), self.folder, qualname))
        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("GRAPHREC_TEST_PAUSE"):
    _targets: dict = {}
    for _item in os.environ["GRAPHREC_TEST_PAUSE"].split(","):
        _module, _qualname = _item.split(":")
        _targets.setdefault(_module, []).append(_qualname)
    sys.meta_path.insert(0, _PauseFinder(_targets, Path(os.environ["GRAPHREC_TEST_PAUSE_DIR"])))
