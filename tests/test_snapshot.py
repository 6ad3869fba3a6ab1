"""Snapshots: written whole or not at all; CURRENT only ever names a complete, intact one; the
reader refuses a corrupted snapshot and serves the previous one."""
import numpy as np
import pandas as pd
import pytest

import deploy.snapshot_writer as writer_module
from deploy import ann
from deploy.snapshot import Snapshot, SnapshotError, UnknownUserError, current_name, snapshots
from deploy.snapshot_writer import RefreshBusyError, SnapshotWriter, write_snapshot
from recsys.config_ops import AnnConfig, RefreshConfig


def write(root, version, offset=0.0, **cfg):
    users = np.array(["u1", "u2"], dtype=object)
    items = np.array(["a", "b", "c"])
    uv = np.array([[1.0, 0.0], [0.0, 1.0]]) + offset
    iv = np.array([[3.0, 0.0], [2.0, 1.0], [0.0, 5.0]])
    seen = pd.DataFrame({"user_id": ["u1"], "item_id": ["a"]})
    return write_snapshot(root, "m", str(version), users, uv, items, iv, seen, "fp", RefreshConfig(**cfg))


def test_round_trip_and_recommend(tmp_path):
    folder = write(tmp_path, 1)
    assert current_name(tmp_path) == folder.name
    snap = Snapshot.open(tmp_path)
    assert snap.manifest["counts"] == {"users": 2, "items": 3, "seen": 1, "dim": 2, "parts": {"users": 1, "items": 1}}
    assert snap.manifest["ann"]["kind"] == "exact" and snap.manifest["ann"]["recall@10"] == 1.0
    recs = snap.recommend("u1", k=2)
    assert recs["item_id"].tolist() == ["b", "c"]  # a is seen; b scores 2, c scores 0
    assert recs["score"].tolist() == [2.0, 0.0]
    assert snap.recommend("u2", k=1)["item_id"].tolist() == ["c"]
    assert isinstance(snap.user_vectors, np.memmap)
    with pytest.raises(UnknownUserError, match="'ghost' is not in snapshot"):
        snap.recommend("ghost")


def test_chunks_become_parquet_parts_with_the_same_vectors(tmp_path):
    folder = write(tmp_path, 1, chunk_rows=1)
    assert sorted(p.name for p in (folder / "items").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    whole = pd.concat(pd.read_parquet(p) for p in sorted((folder / "items").iterdir()))
    assert whole["id"].tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(np.stack(whole["vector"].to_numpy()), np.load(folder / "items.npy"))


def test_no_snapshot_yet_is_a_clear_error(tmp_path):
    with pytest.raises(SnapshotError, match="no snapshot yet"):
        Snapshot.open(tmp_path)


def test_a_failed_write_leaves_current_and_no_partial_folder(tmp_path, monkeypatch):
    first = write(tmp_path, 1)
    calls = {"n": 0}
    real = writer_module._write_vectors

    def fail_on_items(path, ids, vectors):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(path, ids, vectors)

    monkeypatch.setattr(writer_module, "_write_vectors", fail_on_items)
    with pytest.raises(OSError):
        write(tmp_path, 2)
    assert current_name(tmp_path) == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".refresh.lock", "CURRENT", first.name])
    assert Snapshot.open(tmp_path).manifest["model_version"] == "1"


def test_a_corrupted_snapshot_is_refused_and_the_previous_one_served(tmp_path):
    first = write(tmp_path, 1)
    second = write(tmp_path, 2, offset=1.0)
    with open(second / "items.npy", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    snap = Snapshot.open(tmp_path)
    assert snap.name == first.name and snap.fallback_from == second.name
    assert "items.npy does not match its checksum" in snap.problem
    assert snap.recommend("u1", k=2)["item_id"].tolist() == ["b", "c"]
    with open(first / "users/part-00000.parquet", "r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(SnapshotError, match="no older snapshot .* passes its checksums"):
        Snapshot.open(tmp_path)


def test_retention_keeps_the_newest_and_current(tmp_path):
    names = [write(tmp_path, v, keep=2).name for v in range(1, 5)]
    assert [m["name"] for m in snapshots(tmp_path)] == names[:1:-1]
    assert current_name(tmp_path) == names[-1]


def test_a_second_writer_waits_then_refuses_and_corrupts_nothing(tmp_path):
    first = write(tmp_path, 1)
    cfg = RefreshConfig(lock_timeout=0.5)
    with SnapshotWriter(tmp_path, "m", "2", "fp", 2, 3, 2, cfg) as holder:
        with pytest.raises(RefreshBusyError, match="another refresh .*pid"):
            with SnapshotWriter(tmp_path, "m", "3", "fp", 2, 3, 2, cfg):
                pass
        assert holder.tmp.is_dir()  # the refused writer did not clean up the running one's folder
    assert current_name(tmp_path) == first.name
    assert not list(tmp_path.glob(".tmp-*"))


def test_leftovers_of_a_crash_are_removed_by_the_next_refresh(tmp_path):
    write(tmp_path, 1)
    (tmp_path / ".tmp-deadbeef").mkdir()
    (tmp_path / ".tmp-deadbeef" / "users.npy").write_bytes(b"half")
    (tmp_path / "CURRENT.tmp-deadbeef").write_text("nothing\n")
    second = write(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".refresh.lock", "CURRENT", second.name] + [m["name"] for m in snapshots(tmp_path)][1:])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_most_of_the_exact_top10(kind):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(5000, 16)).astype(np.float32)
    users = rng.normal(size=(200, 16)).astype(np.float32)
    index, info = ann.build_index(items, AnnConfig(kind=kind, nprobe=32))
    assert info["kind"] == kind
    assert ann.recall_at(index, items, users, 10) > 0.8
    exact, _ = ann.build_index(items, AnnConfig(kind="exact"))
    assert ann.recall_at(exact, items, users, 10) == 1.0
