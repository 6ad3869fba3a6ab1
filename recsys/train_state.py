"""The state a training loop carries from step to step besides the model: the best state so far
and when to stop (EarlyStopping), and the parameter average that is judged and kept
(ParameterAverage). Every loop (recsys/train.py, the heads, the prefix) and a checkpoint of one
(recsys/dist.py) read them from here."""
from __future__ import annotations

import copy
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Protocol

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


class EarlyStopping:
    """The best state of a model by a validation score (higher is better), and when to stop:
    after `patience` evaluations in a row that did not improve on the best of the trained epochs.
    A baseline (a warm start's state before any step) can be the best state kept, but does not set
    the bar for patience: a warm run whose first epochs dip below it trains on while its own curve
    rises. Loops call `update` after each evaluation and `restore` at the end."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_score, self.best_epoch, self.bad = float("-inf"), 0, 0
        self.curve = float("-inf")  # the best score of the trained epochs
        self.state: Optional[dict] = None

    def update(self, model, score: float, epoch: int, baseline: bool = False) -> bool:
        """Record an evaluation; True when training should stop. A NaN score never improves."""
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.state = copy.deepcopy(model.state_dict())
        if baseline:
            return False
        if score > self.curve:
            self.curve, self.bad = score, 0
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model) -> bool:
        """Load the best state into the model; False when no evaluation was ever recorded."""
        if self.state is None:
            return False
        model.load_state_dict(self.state)
        return True


class ParameterAverage:
    """An exponential moving average of a model's parameters (Polyak averaging), updated after every
    step of `optimizer` (None: of any optimizer); the decay warms up as min(decay, (1 + t) / (10 + t)),
    so early steps are not frozen in. train.average; bench.lightgcn_gowalla chose 0.998 on Gowalla's
    validation split."""

    def __init__(self, model, optimizer: Optional[torch.optim.Optimizer], decay: float, part=None):
        self.params, self.decay, self.steps = list(model.parameters()), decay, 0
        self.shadow = [p.detach().clone() for p in self.params]
        # what a step moves: each whole, or a training worker's own block of a table it splits (`part`,
        # recsys/dist.py), averaged apart and put into the whole at `push`, before each epoch's join
        self.moving, self.blocks = [], []
        for p, s in zip(self.params, self.shadow):
            if part is None or not part.splits(p):
                self.moving.append((p.detach(), s))
                continue
            own = part.window(p, s).clone()
            self.moving.append((part.of(p).detach(), own))
            self.blocks.append((part.window(p, s), own))
        self.handle = (optimizer.register_step_post_hook(self.update) if optimizer is not None
                       else register_optimizer_step_post_hook(self.update))

    def update(self, optimizer=None, args=None, kwargs=None) -> None:
        self.steps += 1
        weight = 1 - min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            torch._foreach_lerp_([s for _, s in self.moving], [p for p, _ in self.moving], weight)

    @torch.no_grad()
    def push(self) -> None:
        """A training worker's averaged blocks into the whole average."""
        for whole, own in self.blocks:
            whole.copy_(own)

    @torch.no_grad()
    def pull(self) -> None:
        """The blocks back from the whole average (a checkpoint's, just loaded)."""
        for whole, own in self.blocks:
            own.copy_(whole)

    def load(self) -> None:
        """Put the average into the model for good."""
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)

    @contextmanager
    def swapped(self):
        """The model holds the average inside the block, its trained parameters again after it."""
        saved = [p.detach().clone() for p in self.params]
        self.load()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)

    def close(self) -> None:
        self.handle.remove()


class LoopCheckpoint(Protocol):
    """Where a training loop keeps its state after every epoch, by stage ("train", "refit"), so that a
    loop started again (a training worker restarted after a failure, deploy/ray_train.py) goes on
    from the last epoch instead of from the first; a finished stage is not trained again."""

    def load(self, stage: str) -> Optional[dict]:
        ...

    def save(self, stage: str, state: dict) -> None:
        ...

    def due(self) -> bool:
        """Whether the state after this epoch is to be kept (a finished stage's always is)."""
        ...


class FileCheckpoint:
    """A LoopCheckpoint in a folder (the flow's train task keeps one per configuration, data and start:
    deploy/resume.py), so that a retrain killed part-way goes on from its last kept epoch when run
    again: a file per stage, written aside and renamed over the previous one (a kill at any moment
    leaves one whole), at most every `seconds`. `resumed`: the epoch each stage went on from;
    `notes`: a file that could not be read (its stage is trained again)."""

    def __init__(self, folder: Path, seconds: float = 0.0):
        self.folder, self.seconds = Path(folder), float(seconds)
        self.last = time.monotonic()
        self.resumed: dict[str, int] = {}
        self.notes: list[str] = []

    def load(self, stage: str) -> Optional[dict]:
        path = self.folder / f"{stage}.pt"
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a disk error: the stage trains again from its first epoch
            self.notes.append(f"{path} could not be read ({type(e).__name__}: {e}); {stage} starts again")
            return None
        self.resumed[stage] = int(state["epoch"])
        return state

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.seconds

    def save(self, stage: str, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{stage}.pt"
        aside = path.with_name(f"{path.name}.{os.getpid()}.part")
        torch.save(state, aside)
        os.replace(aside, path)
        self.last = time.monotonic()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class InEffect:
    """A value in effect for the blocks that `using` opens in this process, the innermost's winning;
    `get` is None outside them."""

    def __init__(self):
        self._stack: list = []

    def get(self):
        return self._stack[-1] if self._stack else None

    @contextmanager
    def using(self, value):
        self._stack.append(value)
        try:
            yield value
        finally:
            self._stack.pop()


_KEPT = InEffect()
# keeping(checkpoint): the training loops run in the block by this process (not a training worker's,
# which has its own) keep their state in the checkpoint and go on from it (recsys.train.fit); kept(): it
keeping, kept = _KEPT.using, _KEPT.get


def replay(history: list[dict], callbacks) -> None:
    """A loop resumed in a new process: its kept epochs' figures to the observers again (a new MLflow
    run shows the whole curve)."""
    for entry in history:
        logs = {k: v for k, v in entry.items() if k != "epoch"}
        for cb in callbacks:
            cb.on_epoch_end(entry["epoch"], logs)


def loop_state(run, epoch: int, done: bool) -> dict:
    """Everything the ranking loop (recsys/train.py's _Run) carries from one epoch to the next."""
    average, part = run.average, run.part  # part: a training worker's columns (recsys/dist.py), whole once joined
    optimizer = run.optimizer.state_dict() if part is None else part.whole_state(run.optimizer)
    return {"epoch": epoch, "done": done, "model": run.model.state_dict(), "optimizer": optimizer,
            "schedule": run.schedule.state_dict(), "step": run.step, "result": copy.deepcopy(run.result),
            "average": None if average is None else ([s.clone() for s in average.shadow], average.steps),
            "best": (run.best.best_score, run.best.best_epoch, run.best.bad, run.best.state, run.best.curve),
            "rng": run.rng.bit_generator.state, "sampler_rng": run.sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state()}


def restore_loop(run, state: dict) -> int:
    """Put a loop_state back into `run`; the epoch it was taken after."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.part is not None:  # a training worker's blocks of the tables and the moments, from the whole
        run.part.pull(run.optimizer)
    run.schedule.load_state_dict(state["schedule"])
    run.step = state["step"]
    for key, value in vars(state["result"]).items():
        setattr(run.result, key, value)
    if run.average is not None and state["average"] is not None:
        shadow, run.average.steps = state["average"]
        for mine, saved in zip(run.average.shadow, shadow):
            mine.copy_(saved)
        run.average.pull()
    best = state["best"]  # a checkpoint from before `curve` was kept: its best score stands for it
    run.best.best_score, run.best.best_epoch, run.best.bad, run.best.state, run.best.curve = (*best, best[0])[:5]
    run.rng.bit_generator.state = state["rng"]
    run.sampler.rng.bit_generator.state = state["sampler_rng"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"])
