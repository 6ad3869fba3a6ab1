"""Snapshots: written whole or not at all; CURRENT only ever names a complete, intact one."""
import numpy as np
import pandas as pd
import pytest

import deploy.snapshot as snapshot_module
from deploy.snapshot import Snapshot, SnapshotError, UnknownUserError, current_name, write_snapshot


def write(root, version, offset=0.0):
    users = np.array([["u1"], ["u2"]], dtype=object).ravel()
    items = np.array(["a", "b", "c"])
    uv = np.array([[1.0, 0.0], [0.0, 1.0]]) + offset
    iv = np.array([[3.0, 0.0], [2.0, 1.0], [0.0, 5.0]])
    seen = pd.DataFrame({"user_id": ["u1"], "item_id": ["a"]})
    return write_snapshot(root, "m", str(version), users, uv, items, iv, seen, "fp")


def test_round_trip_and_recommend(tmp_path):
    folder = write(tmp_path, 1)
    assert current_name(tmp_path) == folder.name
    snap = Snapshot.open(tmp_path)
    assert snap.manifest["counts"] == {"users": 2, "items": 3, "seen": 1, "dim": 2}
    recs = snap.recommend("u1", k=2)
    assert recs["item_id"].tolist() == ["b", "c"]  # a is seen; b scores 2, c scores 0
    assert snap.recommend("u2", k=1)["item_id"].tolist() == ["c"]
    with pytest.raises(UnknownUserError, match="'ghost' is not in snapshot"):
        snap.recommend("ghost")


def test_no_snapshot_yet_is_a_clear_error(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot yet"):
        Snapshot.open(tmp_path)


def test_a_failed_write_leaves_current_and_no_partial_folder(tmp_path, monkeypatch):
    first = write(tmp_path, 1)
    calls = {"n": 0}
    real = snapshot_module._write_vectors

    def fail_on_items(path, ids, vectors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(path, ids, vectors)

    monkeypatch.setattr(snapshot_module, "_write_vectors", fail_on_items)
    with pytest.raises(OSError):
        write(tmp_path, 2)
    assert current_name(tmp_path) == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["CURRENT", first.name])
    assert Snapshot.open(tmp_path).manifest["model_version"] == "1"


def test_a_corrupted_file_is_refused(tmp_path):
    folder = write(tmp_path, 1)
    with open(folder / "items.parquet", "r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(SnapshotError, match="items.parquet .*checksum"):
        Snapshot.open(tmp_path)
