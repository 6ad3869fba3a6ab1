"""A retrain stopped part-way (killed, the machine lost) goes on where it stopped when it is run again.

The flow's train task keeps the ranking loop's state in `<stores.root>/checkpoints/<key>/` (a file
per stage, recsys.train_state.FileCheckpoint) after an epoch, at most every
`train.checkpoint_seconds`; the key is a digest of everything that decides the training: the whole
configuration but the checkpoint's own settings and the progress bar, the data's fingerprint, the
champion version a warm start begins from, and the training code (recsys/, torch's version). So a
run of other data, settings, start or code never reads another's state. A finished training removes
its folder; the folders of other keys that nothing has written for `STALE_HOURS` hours (an earlier
run that was never started again, last night's data) are removed when a training starts.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

from recsys.train_state import FileCheckpoint

FOLDER = "checkpoints"
STALE_HOURS = 6
NOT_KEYED = ("checkpoint_seconds", "progress")  # train settings that change nothing that is trained


def loop_checkpoint(cfg, fingerprint: str, warm_version: Optional[str]) -> Optional[FileCheckpoint]:
    """Where this training keeps its loop (None with train.checkpoint_seconds=null)."""
    if cfg.train.checkpoint_seconds is None:
        return None
    root = Path(cfg.stores.root) / FOLDER
    key = checkpoint_key(cfg, fingerprint, warm_version)
    _remove_stale(root, key)
    return FileCheckpoint(root / key, cfg.train.checkpoint_seconds)


def checkpoint_key(cfg, fingerprint: str, warm_version: Optional[str]) -> str:
    settings = cfg.model_dump(mode="json")
    for name in NOT_KEYED:
        settings["train"].pop(name, None)
    blob = json.dumps({"settings": settings, "data": fingerprint, "start": warm_version, "code": _code()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def resumed_line(checkpoint: FileCheckpoint) -> str:
    """What the training went on from ("" when it started afresh), for the run's tag."""
    return ", ".join(f"{stage} after epoch {epoch}" for stage, epoch in checkpoint.resumed.items())


@lru_cache(maxsize=1)
def _code() -> str:
    import torch

    import recsys

    h = hashlib.sha256(torch.__version__.encode())
    package = Path(recsys.__file__).parent
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".cpp", ".h")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _remove_stale(root: Path, keep: str) -> None:
    if not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        if folder.name == keep or not folder.is_dir():
            continue
        try:
            written = max((p.stat().st_mtime for p in folder.iterdir()), default=folder.stat().st_mtime)
        except OSError:  # written or removed this moment by another run: not stale
            continue
        if now - written > STALE_HOURS * 3600:
            shutil.rmtree(folder, ignore_errors=True)
