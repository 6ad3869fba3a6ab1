"""Champion and CURRENT as one outcome.

A promotion changes two stores: the registry's `champion` alias (MLflow) and the snapshot root's
CURRENT pointer (a file). No transaction spans both, so the order makes them agree:

1. the new champion's snapshot is written whole first, *staged* (renamed into place, CURRENT not
   switched): a full disk or a crash here changes nothing that serves;
2. an intent file (HANDOVER, in the snapshot root) records the version and its staged snapshot;
3. the alias moves; 4. CURRENT is switched to the staged snapshot; 5. the intent is removed.

Steps 2-5 run under the snapshot root's lock and take milliseconds. A process killed between them
leaves the intent behind: `reconcile`, run at the start of every command that writes the store,
finishes the hand-over (the alias moved: CURRENT follows it) or drops it (the alias did not move),
and `split` lets `recommend` and `models` say that the two disagree until then. A champion
alias moved by hand (in the MLflow UI) is followed the same way when an intact snapshot of it
exists; otherwise the command says that `graphrec refresh` writes one.
"""
from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from deploy.snapshot import read_manifest, snapshots, verify
from deploy.snapshot_writer import prune, refresh_lock, switch_current

INTENT = "HANDOVER"


def _write_intent(root: Path, record: dict) -> None:
    tmp = root / f"{INTENT}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / INTENT)


def _drop_intent(root: Path) -> None:
    (root / INTENT).unlink(missing_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pending(root: Path) -> Optional[dict]:
    """The intent of a hand-over that has not finished ({model_name, version, snapshot, since});
    None when there is none (or it cannot be read: it is then treated as absent)."""
    try:
        return json.loads((Path(root) / INTENT).read_text())
    except (OSError, ValueError):
        return None


def hand_over(root: Path, model_name: str, version: str, snapshot: str, lock_timeout: float,
              move_alias: Callable[[], object], keep: int) -> None:
    """Move the champion alias (`move_alias`) and CURRENT (to the staged `snapshot`) together."""
    root = Path(root)
    with refresh_lock(root, lock_timeout):
        _write_intent(root, {"model_name": model_name, "version": str(version), "snapshot": snapshot,
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        move_alias()
        switch_current(root, snapshot)
        _drop_intent(root)
        prune(root, keep)


def split(root: Path, champion: Optional[str]) -> Optional[str]:
    """A sentence when CURRENT does not serve `champion` (or a hand-over is unfinished), else None."""
    intent = pending(root)
    current = read_manifest(root)
    serving = current["model_version"] if current else None
    if intent is not None:
        return (f"a promotion of v{intent['version']} was interrupted (since {intent['since']}): the champion and "
                f"CURRENT (v{serving}) may disagree until the next graphrec command that writes the store "
                "completes it")
    if champion is not None and serving is not None and serving != str(champion):
        return (f"CURRENT serves v{serving} but the champion is v{champion}; the next retrain, refresh or promote "
                "brings CURRENT to the champion (unless refresh.version pins it)")
    return None


def reconcile(root: Path, model_name: str, champion: Optional[str], lock_timeout: float,
              pinned: Optional[str] = None) -> Optional[str]:
    """Bring CURRENT to `champion` when they disagree; what was done, or None when they agree.
    `pinned` (refresh.version) is served on purpose: nothing is changed then."""
    root = Path(root)
    if not root.is_dir() or pinned:
        return None
    with refresh_lock(root, lock_timeout):
        intent = pending(root)
        if intent is not None and intent.get("model_name") == model_name and str(champion) != intent["version"]:
            _drop_intent(root)  # the alias never moved: nothing was promoted, CURRENT is right
            intent = None
        current = read_manifest(root)
        if champion is None or (current and current["model_version"] == str(champion)
                                and current.get("model_name") == model_name):
            if intent is not None:
                _drop_intent(root)
            return None
        staged = intent["snapshot"] if intent is not None else None
        if staged is None or verify(root, staged) is not None:
            staged = next((m["name"] for m in snapshots(root) if m["model_name"] == model_name
                           and m["model_version"] == str(champion) and verify(root, m["name"]) is None), None)
        was = current["model_version"] if current else None
        if staged is None:
            return (f"CURRENT serves v{was} but the champion is v{champion}, and no intact snapshot of v{champion} "
                    "is left: `graphrec refresh` writes one")
        switch_current(root, staged)
        _drop_intent(root)
        return f"CURRENT now serves the champion v{champion} ({staged}); it served v{was}"
