"""Champion and CURRENT agree after any failure between promotion and the snapshot switch
(deploy/handover.py): a retrain killed with SIGKILL between moving the alias and switching CURRENT
is detected by `models` and `recommend` and repaired by the next command; a full disk while the
new champion's snapshot is written (injected, and on a real small file system where the test may
mount one) ends the command with exit 5 and one line, the champion and CURRENT unchanged and no
temporary folder left.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import deploy.snapshot_writer
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from tests.conftest import REPO, TINY_NETWORK, wait_until, worker_of
from tests.stores import runs, serves, state

TINY = [*TINY_NETWORK, "train.epochs=2", "train.eval_every=1", "train.refit=false"]
PASSES = ["promotion.tolerance=1"]  # every challenger takes the champion's place


def _sets(root: Path, *extra: str) -> list[str]:
    return [arg for item in [f"stores.root={root}", *TINY, *extra] for arg in ("--set", item)]


@pytest.fixture
def store(tmp_path):
    """Version 1 is champion; its snapshot is CURRENT."""
    root = tmp_path / "store"
    prepare_prefect(root)
    assert cli_main(["retrain", *_sets(root)]) == 0
    return root


def test_a_retrain_killed_between_the_alias_and_current_is_reported_then_repaired(store, tmp_path, processes,
                                                                                   capsys):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests' / 'pause'}",
           "GRAPHREC_TEST_PAUSE": "deploy.snapshot_writer:switch_current", "GRAPHREC_TEST_PAUSE_DIR": str(tmp_path)}
    proc = processes.start([sys.executable, "-m", "flows.cli", "retrain", *_sets(store, *PASSES, "train.seed=4")],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: (tmp_path / "switch_current.reached").exists() or proc.poll() is not None,
               "the hand-over to reach the CURRENT switch")
    assert proc.poll() is None
    os.killpg(worker_of(proc), signal.SIGKILL)  # the alias has moved; CURRENT has not
    proc.wait()
    split = state(store)
    assert split["champion"] == "2" and split["CURRENT"].startswith("graphrec-recommender-v1-")
    assert (store / "snapshots" / "HANDOVER").exists()

    capsys.readouterr()
    assert cli_main(["models", "--set", f"stores.root={store}"]) == 0
    assert "a promotion of v2 was interrupted" in capsys.readouterr().err
    user = "u000001"
    assert cli_main(["recommend", "--user", user, "--set", f"stores.root={store}"]) == 0
    assert "a promotion of v2 was interrupted" in capsys.readouterr().err

    assert cli_main(["refresh", *_sets(store)]) == 0  # the next command that writes the store repairs it
    repaired = state(store)
    assert repaired["champion"] == "2" and repaired["CURRENT"].startswith("graphrec-recommender-v2-")
    serves(store, "2")
    assert not (store / "snapshots" / "HANDOVER").exists()
    capsys.readouterr()
    assert cli_main(["models", "--set", f"stores.root={store}"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_alias_moved_by_hand_is_followed_by_current_and_reported_until_then(store, capsys):
    from tests.stores import registry

    assert cli_main(["retrain", *_sets(store, *PASSES, "train.seed=4")]) == 0  # v2 champion, CURRENT v2
    client, cfg = registry(store)
    client.set_registered_model_alias(cfg.stores.registered_model, "champion", "1")  # as in the MLflow UI
    capsys.readouterr()
    assert cli_main(["models", "--set", f"stores.root={store}"]) == 0
    assert "CURRENT serves v2 but the champion is v1" in capsys.readouterr().err
    assert cli_main(["refresh", *_sets(store)]) == 0
    assert state(store)["CURRENT"].startswith("graphrec-recommender-v1-")
    serves(store, "1")


def _no_room(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "users/part-00000.parquet")


def _unchanged_after_a_full_disk(store: Path, before: dict, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("  (details")]
    assert any(line.startswith("graphrec retrain: no room on the file system of") for line in lines), err
    assert "Traceback" not in err
    assert state(store) == before
    serves(store, before["champion"])
    assert not list((store / "snapshots").glob(".tmp-*")) and not (store / "snapshots" / "HANDOVER").exists()
    assert runs(store)[0].info.status == "FAILED"


def test_a_full_disk_while_the_new_snapshot_is_written_exits_5_and_changes_nothing(store, monkeypatch, capsys):
    before = state(store)
    monkeypatch.setattr(deploy.snapshot_writer, "_write_vectors", _no_room)
    capsys.readouterr()
    assert cli_main(["retrain", *_sets(store, *PASSES, "train.seed=4")]) == 5
    _unchanged_after_a_full_disk(store, before, capsys.readouterr().err)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs mounted for the test (root only: skipped elsewhere), unmounted after it."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("this machine does not let the test mount a small file system")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=60)


@pytest.mark.parametrize("room", [0.5, 0.8], ids=["refused-before-writing", "full-while-writing"])
def test_a_real_full_disk_while_the_new_snapshot_is_written(tmp_path, small_disk, capsys, room):
    """The snapshots on a small file system, nearly filled after the first one: the second retrain's
    snapshot does not fit. With half a snapshot's room the writer refuses before it starts; with
    more, the disk fills while it writes. (Before the blocks were reserved, a memory-mapped write
    to a full disk died of SIGBUS.)"""
    root = tmp_path / "store"
    prepare_prefect(root)
    sets = _sets(root, f"stores.snapshots={small_disk}", *PASSES)
    assert cli_main(["retrain", *sets]) == 0
    before = state(root, small_disk)
    first = small_disk / before["CURRENT"]
    size = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as fh:  # leaves room for part of a snapshot
        fh.write(b"\0" * max(0, free - int(size * room)))
    capsys.readouterr()
    code = cli_main(["retrain", *sets, "--set", "train.seed=4"])
    err = capsys.readouterr().err
    assert code == 5, err
    assert not list(small_disk.glob(".tmp-*"))
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("  (details")]
    assert any(line.startswith("graphrec retrain: no room on the file system of") for line in lines), err
    assert state(root, small_disk) == before
    (small_disk / "filler").unlink()
    serves(root, before["champion"], small_disk)
