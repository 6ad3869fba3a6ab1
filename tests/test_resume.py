"""A training interrupted part-way goes on from the state it kept on disk (recsys.train_state.FileCheckpoint,
deploy/resume.py). The whole retrain killed and run again through the command line: test_kills.py."""
from __future__ import annotations

import os
import time

import pytest
import torch

from tests.test_dist import _model, _setting


class _Crash:
    """A callback that fails the loop at the end of epoch `at`, as a killed process would stop it."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_start(self, epoch):
        pass

    def on_step(self, step, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        if epoch == self.at:
            raise RuntimeError("killed")


class _Seen(_Crash):
    def __init__(self):
        super().__init__(at=-1)
        self.epochs = []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)


def test_a_loop_kept_on_disk_goes_on_after_a_crash_to_the_uninterrupted_runs_parameters(tmp_path):
    from recsys.graph.build import build_graph
    from recsys.train import fit
    from recsys.train_state import FileCheckpoint, keeping

    data, cfg, eval_cfg = _setting()
    cfg = cfg.model_copy(update={"epochs": 5, "eval_every": 1, "average": 0.9})
    graph = build_graph(data)
    whole = _model("lightgcn", data, graph)
    uninterrupted = fit(whole, graph, data, cfg, eval_cfg)
    folder = tmp_path / "loop"
    with keeping(FileCheckpoint(folder, seconds=0)), pytest.raises(RuntimeError, match="killed"):
        fit(_model("lightgcn", data, graph), graph, data, cfg, eval_cfg, callbacks=[_Crash(at=3)])
    assert (folder / "train.pt").exists() and not list(folder.glob("*.part"))  # written aside, then renamed
    checkpoint, seen, lines = FileCheckpoint(folder, seconds=0), _Seen(), []
    again = _model("lightgcn", data, graph)  # a new process builds the model anew
    with keeping(checkpoint):
        result = fit(again, graph, data, cfg, eval_cfg, callbacks=[seen], log=lines.append)
    assert checkpoint.resumed == {"train": 2}  # epoch 3 crashed before it was kept
    assert any("goes on after epoch 2" in line for line in lines)
    assert seen.epochs == [1, 2, 3, 4, 5]  # the kept epochs' figures again, for the new run's curve
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert result.best_epoch == uninterrupted.best_epoch
    for name, value in whole.state_dict().items():
        assert torch.allclose(value, again.state_dict()[name], atol=1e-6), name
    elapsed = [h["elapsed_seconds"] for h in result.history]
    assert elapsed == sorted(elapsed)  # one clock for the loop across the two processes


def test_state_is_kept_at_most_every_so_many_seconds_and_a_finished_stage_always(tmp_path):
    from recsys.graph.build import build_graph
    from recsys.train import fit
    from recsys.train_state import FileCheckpoint, keeping

    data, cfg, eval_cfg = _setting()
    graph = build_graph(data)
    saved = []

    class Counting(FileCheckpoint):
        def save(self, stage, state):
            saved.append((state["epoch"], state["done"]))
            super().save(stage, state)

    with keeping(Counting(tmp_path / "loop", seconds=3600)):
        fit(_model("mf", data, graph), graph, data, cfg.model_copy(update={"epochs": 3}), eval_cfg)
    assert saved == [(3, True)]
    checkpoint = FileCheckpoint(tmp_path / "loop")
    again = _model("mf", data, graph)
    with keeping(checkpoint):
        assert fit(again, graph, data, cfg.model_copy(update={"epochs": 3}), eval_cfg).epochs_run == 3
    assert checkpoint.resumed == {"train": 3}  # finished: not trained again


def test_an_unreadable_file_is_named_and_its_stage_trains_from_the_start(tmp_path):
    from recsys.train_state import FileCheckpoint

    (tmp_path / "train.pt").write_bytes(b"not a checkpoint")
    checkpoint = FileCheckpoint(tmp_path)
    assert checkpoint.load("train") is None and checkpoint.load("refit") is None
    assert len(checkpoint.notes) == 1 and "train.pt" in checkpoint.notes[0] and "starts again" in checkpoint.notes[0]


def test_the_key_changes_with_what_decides_the_training_and_with_nothing_else(tmp_path):
    from deploy.resume import checkpoint_key
    from recsys.config import load_config

    cfg = load_config(None, [f"stores.root={tmp_path}"])
    key = checkpoint_key(cfg, "data-a", None)
    same = load_config(None, [f"stores.root={tmp_path}", "train.checkpoint_seconds=5", "train.progress=false"])
    assert checkpoint_key(same, "data-a", None) == key
    assert checkpoint_key(cfg, "data-b", None) != key
    assert checkpoint_key(cfg, "data-a", "3") != key
    assert checkpoint_key(load_config(None, [f"stores.root={tmp_path}", "train.lr=0.5"]), "data-a", None) != key


def test_other_trainings_folders_go_when_stale_and_stay_while_written(tmp_path):
    from deploy.resume import FOLDER, STALE_HOURS, loop_checkpoint
    from recsys.config import load_config

    cfg = load_config(None, [f"stores.root={tmp_path}"])
    root = tmp_path / FOLDER
    stale, fresh = root / "stale", root / "fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "train.pt").write_bytes(b"x")
    old = time.time() - STALE_HOURS * 3600 - 60
    os.utime(stale / "train.pt", (old, old))
    checkpoint = loop_checkpoint(cfg, "data", None)
    assert not stale.exists() and fresh.exists()
    assert checkpoint.folder.parent == root and checkpoint.seconds == cfg.train.checkpoint_seconds
    assert loop_checkpoint(load_config(None, [f"stores.root={tmp_path}", "train.checkpoint_seconds=null"]), "data",
                           None) is None
