"""One training loop for every model family.

An epoch visits every training pair once in a random order, in batches; each batch draws k
negatives per positive and takes an Adam step on the family's `batch_loss`: the objective
(`train.loss`: BPR or sampled softmax, see recsys/models/base.py) plus L2 on the batch's layer-0
embeddings as in LightGCN's eq. 15, divided by the batch size as the reference implementation does.
The batch's edge ids are passed along so that sampling families can hide the edges being predicted.
Every `eval_every` epochs (a warm start: `warm.eval_every`) the validation split is ranked in full;
the best state by `monitor` is kept, and training stops after `patience` evaluations without
improvement (EarlyStopping).
Callbacks (epoch start, step, epoch end with its figures) serve MLflow logging and Optuna pruning;
a callback may raise StopTraining. `drive_epochs` runs the epochs of every loop: this one, the
multi-task heads (recsys/multitask.py) and the LLM prefix (recsys/llm_fit.py).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.config import EvalConfig, TrainConfig
from recsys.data.types import IndexedData
from recsys.device import embed_on, to_device
from recsys.dist import Part, Worker, active
from recsys.graph.build import RecGraph
from recsys.heap import release, reusing
from recsys.metrics import evaluate, evaluate_per_user
from recsys.models.base import RecModel
from recsys.negatives import Sampler, ScoreView, build_sampler
from recsys.recipe import resolve_for_model
from recsys.threads import Governor
from recsys.train_state import EarlyStopping, LoopCheckpoint, ParameterAverage, kept, loop_state, replay, restore_loop
from recsys.warm import lr_boost, own_or_train


class StopTraining(Exception):
    """Raised by a callback to end training early (the best state so far is kept)."""


class Callback(Protocol):
    """What every training loop here tells its observers (MLflow logging, Optuna pruning, a
    benchmark's clock): the start of an epoch, each optimiser step, and the end of an epoch with
    its figures. A subclass inherits do-nothing hooks and overrides what it needs (an object with
    the three methods serves as well); any hook may raise StopTraining."""

    def on_epoch_start(self, epoch: int) -> None:
        return None

    def on_step(self, step: int, logs: dict[str, float]) -> None:
        return None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        return None


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    epochs_run: int = 0
    seconds: float = 0.0
    batch_size: int = 0  # pairs per optimiser step (train.batch_size, or larger: train.max_steps_per_epoch)
    recipe: dict = field(default_factory=dict)  # the settings trained with, `auto` resolved (TrainConfig.recipe)


def draw_negatives(sampler, users: torch.Tensor, pos: torch.Tensor, scores, per_positive: int) -> torch.Tensor:
    """(batch, k) negatives on the sampler's device: the sampler's own k if it returns several, else
    per_positive draws (in one go where the sampler can: recsys.negatives.ModelMinedNegatives)."""
    many = getattr(sampler, "sample_many", None)
    if many is not None:
        return many(users, pos, scores, per_positive)
    first = sampler.sample(users, pos, scores)
    if first.ndim == 2:
        return first
    draws = [first] + [sampler.sample(users, pos, scores) for _ in range(per_positive - 1)]
    return torch.stack(draws, dim=1)


def batch_plan(cfg: TrainConfig, n_pairs: int) -> tuple[int, float]:
    """(pairs per step, learning rate) for a log of n_pairs under resolved settings (recsys/recipe.py):
    train.batch_size and train.lr, unless train.max_steps_per_epoch bounds the steps, in which case
    the batch grows to hold the log in that many steps and the learning rate grows with it
    (train.lr_batch_scaling)."""
    batch = cfg.batch_size
    bound = cfg.max_steps_per_epoch
    if bound == "auto" or cfg.lr == "auto":
        raise ValueError("batch_plan needs resolved settings (recsys.recipe.resolve)")
    if bound is not None:
        batch = max(batch, -(-n_pairs // bound))
    power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[cfg.lr_batch_scaling]
    return batch, cfg.lr * (batch / cfg.batch_size) ** power


def evaluate_model(model, graph: RecGraph, data: IndexedData, split: str, cfg: EvalConfig,
                   user_mask: Optional[np.ndarray] = None, device: Optional[torch.device] = None) -> dict[str, float]:
    """Rank `split` with the model's vectors, computed and ranked on `device` (where the model is when None)."""
    user_emb, item_emb = embed_on(model, graph, device)
    return evaluate(user_emb, item_emb, data.split(split), data.seen_before(split), user_mask=user_mask,
                    **cfg.ranking())


def evaluate_model_per_user(model, graph: RecGraph, data: IndexedData, split: str, cfg: EvalConfig,
                            device: Optional[torch.device] = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """evaluate_model's ranking before the mean: the users ranked and each metric per user."""
    user_emb, item_emb = embed_on(model, graph, device)
    return evaluate_per_user(user_emb, item_emb, data.split(split), data.seen_before(split), **cfg.ranking())


def fit(
    model,
    graph: RecGraph,
    data: IndexedData,
    cfg: TrainConfig,
    eval_cfg: EvalConfig,
    callbacks: Sequence[Callback] = (),
    sampler=None,
    log: Optional[Callable[[str], None]] = None,
    device: Optional[torch.device] = None,
    stage: str = "train",
    stop_after: Optional[int] = None,
    worker: Optional[Worker] = None,
    checkpoint: Optional[LoopCheckpoint] = None,
) -> TrainResult:
    """Train `model` on `device` (default the CPU; recsys/device.py): the model and the graph's
    operators move there for the loop, and so does the sampler: its random ids are drawn on the
    host and copied once per batch; positives are checked and candidates scored on the device.
    The model comes back on the CPU, holding its best state. The thread count is the process's
    (recsys/threads.py), lowered while other work holds the cores. `stop_after`: end after that many
    epochs, the schedule still planned for cfg.epochs (a refit's budget); `stage` labels the progress bar.
    `worker` (default: recsys.dist.active()): this process is one of several training workers
    (recsys/dist.py says what each does); `checkpoint` (default: the worker's): where the loop's
    state goes after every epoch and comes back from (resuming)."""
    torch.manual_seed(cfg.seed)
    worker = worker or active()
    checkpoint = checkpoint or (worker.checkpoint if worker is not None else kept())
    device = torch.device("cpu") if device is None else torch.device(device)
    model.to(device)
    graph = graph.to(device)
    try:
        return _fit(model, graph, data, cfg, eval_cfg, callbacks, sampler, log, device, stage, stop_after, worker,
                    checkpoint)
    finally:
        model.to("cpu")


@dataclass
class _Run:
    """What one call of the loop holds: the resolved settings, the optimiser and its schedule, the
    sampler, the average, the early stopping, the result so far."""
    cfg: TrainConfig
    model: RecModel
    graph: RecGraph
    data: IndexedData
    sampler: Sampler
    scores: ScoreView
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    average: Optional[ParameterAverage]
    best: EarlyStopping
    result: TrainResult
    batch_size: int
    device: torch.device
    governor: Governor
    rng: np.random.Generator
    worker: Optional[Worker]
    part: Optional[Part]  # the block of the split tables this worker trains (recsys/dist.py), if it splits them
    loss: Callable  # the model's batch_loss (behind DDP on several workers)
    boost: tuple[float, int] = (1.0, 0)  # a warm start's lr factor and the epochs it lasts (train.warm.lr)
    step: int = 0

    def join(self) -> None:
        """Every worker's columns of the split tables, of Adam's moments of them and of their average, to
        all workers: the whole state, for validation and the checkpoint."""
        if self.worker is None or self.part is None:
            return
        self.part.push(self.optimizer)
        if self.average:
            self.average.push()
        kept = {id(p): [s] for p, s in zip(self.average.params, self.average.shadow)} if self.average else {}
        tensors = []
        for table in self.part.tables:
            whole = [table.data, *self.part.moments[id(table)].values(), *kept.get(id(table), [])]
            tensors += [self.part.as_columns(table, t) for t in whole]
        self.worker.join_columns(tensors)


def _start(model, graph, data, cfg, sampler, device, worker=None) -> _Run:
    cfg = resolve_for_model(cfg, model, data.train, data.n_items)  # `auto` settings: recsys/recipe.py
    model.set_objective(cfg.loss, cfg.temperature)
    model.l2_form = cfg.l2_form
    sampler = sampler or build_sampler(cfg.negatives, data.n_users, data.n_items, data.train, seed=cfg.seed)
    sampler.to(device)
    batch_size, lr = batch_plan(cfg, len(data.train))
    part = worker.columns(model) if worker is not None and model.split_columns() else None
    optimizer = torch.optim.Adam(model.parameters() if part is None else part.params(model), lr=lr)
    schedule: torch.optim.lr_scheduler.LRScheduler
    if cfg.lr_schedule == "cosine":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    else:
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.lr_milestones, cfg.lr_gamma)
    boost = lr_boost(model, cfg)
    for group in optimizer.param_groups:  # after the schedule's first step, which the factor then rides on
        group["lr"] *= boost[0]
    result = TrainResult(batch_size=batch_size, recipe=cfg.recipe())
    result.recipe["negatives.candidates"] = getattr(sampler, "candidates", None)
    return _Run(cfg, model, graph, data, sampler, ScoreView(model, graph, cfg.negatives.refresh_every, part),
                optimizer, schedule, ParameterAverage(model, optimizer, cfg.average, part) if cfg.average else None,
                EarlyStopping(own_or_train(model, cfg, "patience")), result, batch_size, device, Governor(),
                np.random.default_rng(cfg.seed), worker, part,
                model.batch_loss if worker is None else worker.wrap(model, part), boost)


def _epoch(run: _Run, epoch: int, callbacks: Sequence[Callback]) -> dict[str, float]:
    """One pass over the training pairs in a random order; the epoch's figures."""
    t0, cfg, pairs = time.perf_counter(), run.cfg, run.data.train
    run.model.on_epoch_start(run.graph, epoch)
    run.sampler.set_epoch(epoch)
    run.scores.reset()
    order = run.rng.permutation(len(pairs))
    n_batches = max(1, -(-len(pairs) // run.batch_size))
    loss_sum = reg_sum = 0.0
    for b in range(n_batches):
        idx = order[b * run.batch_size:(b + 1) * run.batch_size]
        batch = pairs[idx]
        users, pos, at = (to_device(a, run.device) for a in (batch[:, 0], batch[:, 1], idx))
        neg = draw_negatives(run.sampler, users, pos, run.scores, int(cfg.negatives.per_positive))
        scale = 1.0
        if run.worker is not None and run.part is None:  # the whole batch's negatives, alike on every worker;
            scale, (users, pos, neg) = run.worker.share(users, pos, neg)  # this one's share (the whole batch's
            # pairs stay hidden from the samplers)
        elif run.worker is not None:  # split by columns: the whole batch
            run.worker.steps += 1
        ranking, reg = run.loss(run.graph, users, pos, neg, at)
        reg = cfg.l2 * reg
        run.optimizer.zero_grad()
        ((ranking + reg) * scale).backward()
        run.optimizer.step()
        run.step += 1
        run.governor.tick()
        figures = torch.stack([ranking.detach(), reg.detach()])
        if run.worker is not None and run.part is None:  # the whole batch's, from the workers' shares
            figures = run.worker.sum(figures * scale) / run.worker.world
        value, penalty = figures.tolist()  # one read of the loss per step
        loss_sum += value
        reg_sum += penalty
        for cb in callbacks:
            cb.on_step(run.step, {"loss": value})
    return {"loss": loss_sum / n_batches, "reg_loss": reg_sum / n_batches,
            "epoch_seconds": time.perf_counter() - t0, "lr": run.optimizer.param_groups[0]["lr"]}


def _validate(run: _Run, epoch: int, eval_cfg: EvalConfig, logs: dict) -> bool:
    """Ranks the validation split (the average, when there is one, is what is judged and kept);
    adds its figures to `logs`; whether early stopping says stop."""
    with run.average.swapped() if run.average else nullcontext():
        metrics = evaluate_model(run.model, run.graph, run.data, "valid", eval_cfg)
        if run.cfg.monitor not in metrics:
            raise ValueError(f"train.monitor={run.cfg.monitor!r} is not computed; choose one of {sorted(metrics)}")
        stop = run.best.update(run.model, metrics[run.cfg.monitor], epoch, baseline=epoch == 0)
    logs.update({f"valid_{k}": v for k, v in metrics.items()})
    return stop


def _baseline(run: _Run, eval_cfg: EvalConfig, callbacks: Sequence[Callback], started: float) -> None:
    """A warm start's validation figure before any step (epoch 0): early stopping keeps it unless
    an epoch beats it, so a warm run never ends worse than where it started; its patience counts the
    trained epochs' own progress (EarlyStopping)."""
    logs: dict[str, float] = {"epoch_seconds": 0.0}
    _validate(run, 0, eval_cfg, logs)
    logs["elapsed_seconds"] = time.perf_counter() - started
    run.result.best_score, run.result.best_epoch = run.best.best_score, run.best.best_epoch
    run.result.history.append({"epoch": 0, **logs})
    for cb in callbacks:
        cb.on_epoch_end(0, logs)


def drive_epochs(epochs: int, run_epoch: Callable[[int], dict], callbacks: Sequence[Callback], result: TrainResult,
                 validate: Optional[Callable[[int, dict], bool]] = None, stopping: Optional[EarlyStopping] = None,
                 progress: Optional[str] = None, log: Optional[Callable[[str], None]] = None,
                 monitor: str = "", first: int = 1) -> TrainResult:
    """The epochs of every training loop (the ranking loop below, the MMoE heads, the LLM prefix):
    `run_epoch(epoch)` trains one and returns its figures; `validate(epoch, figures)`, where the
    data has a validation split, adds the validation figures, updates `stopping` and says whether
    to stop. Callbacks see each epoch start and end (and may raise StopTraining); the history, the
    epochs run and the best figure so far go to `result`; `progress` labels a progress bar. `first`:
    the epoch to start at (a loop resumed from its checkpoint)."""
    bar = tqdm(total=epochs, initial=first - 1, desc=progress or "", unit="epoch", disable=progress is None,
               leave=False)
    try:
        for epoch in range(first, epochs + 1):
            for cb in callbacks:
                cb.on_epoch_start(epoch)
            logs = run_epoch(epoch)
            stop = bool(validate is not None and validate(epoch, logs))
            if stopping is not None:
                result.best_score, result.best_epoch = stopping.best_score, stopping.best_epoch
            result.history.append({"epoch": epoch, **logs})
            result.epochs_run = epoch
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", best=f"{result.best_score:.4f}" if validate else "-")
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if stop:
                if log:
                    log(f"early stop at epoch {epoch}: best {monitor}={result.best_score:.4f} "
                        f"at epoch {result.best_epoch}")
                break
    except StopTraining:
        pass
    finally:
        bar.close()
    return result


def _fit(model, graph, data, cfg, eval_cfg, callbacks, sampler, log, device, stage, stop_after,
         worker, checkpoint) -> TrainResult:
    run = _start(model, graph, data, cfg, sampler, device, worker)
    saved = checkpoint.load(stage) if checkpoint is not None else None
    first = 1 if saved is None else restore_loop(run, saved) + 1
    if saved is not None and worker is None:  # a loop resumed by a new process (recsys.train_state.keeping)
        replay(run.result.history, callbacks)
        if log:
            log(f"{stage}: goes on after epoch {first - 1}, from the state an interrupted run kept")
    if saved is not None and saved["done"]:
        return run.result  # this stage finished before the restart: its trained state is back
    leads = worker is None or worker.leads  # rank 0 validates and keeps the best state
    cfg, result = run.cfg, run.result
    epochs = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    every = own_or_train(model, cfg, "eval_every")  # a warm start's own cadence (train.warm.eval_every)

    def one_epoch(epoch: int) -> dict:
        logs = _epoch(run, epoch, callbacks)
        release()  # what the epoch freed goes back (recsys/heap.py)
        run.join()
        if worker is not None:
            logs.update(worker.take_figures())
        run.schedule.step()
        if epoch == run.boost[1]:  # a warm start's larger steps end (the schedule's own changes stay)
            for group in run.optimizer.param_groups:
                group["lr"] /= run.boost[0]
        return logs

    def validate(epoch: int, logs: dict) -> bool:
        due = epoch % every == 0 or epoch == epochs
        stop = due and leads and _validate(run, epoch, eval_cfg, logs)
        if due and worker is not None:
            stop = worker.agree(stop)
        logs["elapsed_seconds"] = time.perf_counter() - started  # the loop's wall clock, evaluations included
        return stop

    history = run.result.history  # a resumed loop's clock goes on from its last kept epoch
    started = time.perf_counter() - (history[-1].get("elapsed_seconds", 0.0) if history else 0.0)
    model.train()
    if getattr(model, "warm_from", None) is not None and len(data.valid) and leads and saved is None:
        _baseline(run, eval_cfg, callbacks, started)
    try:
        saving = [] if checkpoint is None else [_Saving(run, checkpoint, stage)]
        with reusing():  # a step's freed blocks serve the next step's (recsys/heap.py)
            drive_epochs(epochs, one_epoch, [*callbacks, *saving], result, validate if len(data.valid) else None,
                         run.best, stage if cfg.progress else None, log, cfg.monitor, first)
    finally:
        if run.average:
            run.average.close()
    if not run.best.restore(model):
        result.best_epoch = result.epochs_run
        if run.average:
            run.average.load()
    if worker is not None:
        worker.share_best(model, result)
    result.seconds = time.perf_counter() - started
    result.recipe.update(threads=run.governor.most, threads_lowest=run.governor.lowest)
    if checkpoint is not None:
        checkpoint.save(stage, loop_state(run, result.epochs_run, done=True))
    return result


class _Saving(Callback):
    """The loop's state to its checkpoint after an epoch, when it is due (the epoch's figures in the history)."""

    def __init__(self, run: _Run, checkpoint: LoopCheckpoint, stage: str):
        self.run, self.checkpoint, self.stage = run, checkpoint, stage

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.checkpoint.due():
            self.checkpoint.save(self.stage, loop_state(self.run, epoch, done=False))


def no_callbacks(stage: str) -> list[Callback]:
    return []
