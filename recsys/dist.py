"""Training on several workers (compute.trainer=ray): what each worker computes and what it sends.

A worker is one rank of a torch.distributed process group (gloo between CPUs, NCCL between GPUs);
Ray Train starts the group and restarts it after a failure (deploy/ray_train.py). Every worker runs
the ordinary loop (recsys/train.py `fit`, given a Worker) over the same data with the same seeds,
so every random choice that is not a worker's own is the same on all of them: each epoch's order
of the training pairs and each batch's negatives are drawn alike on every worker. Then one of two
splits, by what the family's model says (RecModel.split_columns):

* by columns (LightGCN without weight matrices, MF: a score is a dot product of ID-table rows, and
  a propagation treats every column of the tables alike). Each worker trains its own block of the
  tables' columns (a `Part`) on the whole batch: its products over the whole graph are d / W wide,
  so they cost it 1/W of one worker's, and it needs nothing from the others to compute them. Its
  scores are partial dot products; one sum of the batch's partial scores and L2 terms (`Part.total`,
  B x (1 + k) + 1 numbers) makes them whole, and the gradient of the whole loss by each partial
  score is the gradient by the score, so each worker's columns get exactly one worker's gradient
  with no further exchange. The hard-negative sampler's scores of a batch's candidates are summed the
  same way, all of the batch's draws in one sum (B x k x candidates numbers). The worker's optimiser
  steps its block alone (its gradients, Adam's arithmetic and the average are n x d / W). After each
  epoch the workers gather their blocks (`join_columns`: the tables, Adam's moments, the parameter
  average), so rank 0 validates and every checkpoint holds the whole state.
  GCN too, though its weight matrices mix the columns: a worker holds its block of the tables'
  columns and of every layer's weight rows (its output columns), gathers each layer's whole input
  from the workers' blocks (`Part.gather`: an n x d all-gather forward, an n x d all-reduce of its
  gradient backward) and computes its columns of the layer's products, 1/W of each.
* by batch (every other family: the sampling families GraphSAGE and PinSage; the MMoE heads and
  the LLM prefix, recsys/multitask.py and recsys/llm_fit.py): a worker keeps its share of each batch
  (positions rank, rank + W, ...), samples that share's neighbourhoods on its own and takes the loss
  on it scaled by W x its share of the batch, so the mean of the workers' gradients (DDP's
  all-reduce) is the whole batch's gradient.

Rank 0 ranks the validation split, keeps the best state, and tells the others when to stop.
A Worker counts the seconds spent in collectives and the bytes it sends, as ring algorithms send
them: (W - 1) / W x the size for an all-gather of the whole, 2 (W - 1) / W x for an all-reduce.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.distributed as torch_dist

from recsys.train_state import InEffect, LoopCheckpoint

_WORKER = InEffect()
# training_as(worker): the block's training, in this process, is that worker's; active(): the worker this
# process trains as, else None: every ranking loop it runs (recsys/train.py `fit`: a family's selection run,
# its refit, a bottom under later stages) is its
training_as, active = _WORKER.using, _WORKER.get


@dataclass
class Worker:
    """This process's rank among `world` training workers, in an initialised process group."""
    rank: int
    world: int
    seconds: float = 0.0     # in collectives, since the last `take_figures`
    sent: int = 0            # bytes sent, likewise
    steps: int = 0           # optimiser steps, likewise
    restarts: int = 0        # the group's restarts from a checkpoint before this start (Ray Train's)
    checkpoint: Optional[LoopCheckpoint] = None  # where each loop keeps its state after every epoch

    @classmethod
    def current(cls, checkpoint: Optional[LoopCheckpoint] = None, restarts: int = 0) -> "Worker":
        """This process's place in the initialised default process group."""
        return cls(torch_dist.get_rank(), torch_dist.get_world_size(), restarts=restarts, checkpoint=checkpoint)

    @property
    def leads(self) -> bool:
        """Rank 0: it validates, keeps the best state, logs and returns the model."""
        return self.rank == 0

    def block(self, n: int) -> tuple[int, int, int]:
        """(first row, end, rows per block) of this worker's block of n rows; blocks are equal but the last."""
        size = -(-n // self.world)
        return min(n, self.rank * size), min(n, (self.rank + 1) * size), size

    def share(self, *batch: torch.Tensor) -> tuple[float, tuple[torch.Tensor, ...]]:
        """This worker's share of a batch (positions rank, rank + W, ...) of each tensor, and the scale
        of its loss: W x its share of the batch, so that the workers' mean gradient is the batch's. One
        optimiser step each (counted)."""
        n = len(batch[0])
        self.steps += 1
        mine = tuple(t[self.rank::self.world] for t in batch)
        return self.world * len(mine[0]) / max(n, 1), mine

    def columns(self, model) -> "Part":
        """This worker's block of the model's split tables: of their columns (RecModel.split_columns),
        and of the rows of the weight matrices whose rows make output columns (RecModel.split_rows)."""
        named = dict(model.named_parameters())
        tables = [(named[name], 1) for name in model.split_columns()]
        tables += [(named[name], 0) for name in model.split_rows()]
        start, end, _ = self.block(tables[0][0].shape[1])
        return Part(self, start, end, tables)

    def join_columns(self, tensors: list[torch.Tensor]) -> None:
        """Every worker's block of the columns of each n x d tensor, in place (all-gathered), so that all
        hold the whole; the other columns of a worker's copy are stale until then."""
        for t in tensors:
            first, end, _ = self.block(t.shape[1])
            t.copy_(self.gather_columns(t[:, first:end], t.shape[1]))

    def gather_columns(self, block: torch.Tensor, width: int) -> torch.Tensor:
        """The n x `width` tensor whose columns are every worker's `block` (this one's of n x its block's
        width), in the order of the workers (all-gathered)."""
        start = time.perf_counter()
        first, end, size = self.block(width)
        own = block.new_zeros(size, block.shape[0])
        own[: end - first] = block.T
        whole = block.new_empty(self.world, size, block.shape[0])
        torch_dist.all_gather(list(whole.unbind(0)), own)
        self._count(start, own, self.world - 1)
        return whole.reshape(self.world * size, -1)[:width].T

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over the workers, in place."""
        start = time.perf_counter()
        torch_dist.all_reduce(t)
        self._count(start, t, 2 * (self.world - 1) / self.world)
        return t

    def agree(self, flag: bool) -> bool:
        """Rank 0's `flag`, on every worker (the others' is ignored)."""
        t = torch.tensor([int(flag)])
        torch_dist.broadcast(t, 0)
        return bool(t.item())

    def share_best(self, model, result) -> None:
        """Rank 0's kept state and best epoch on every worker, so all leave the loop with the same model
        (a refit's length, a later stage's bottom)."""
        best = [result.best_epoch, result.best_score]
        torch_dist.broadcast_object_list(best, 0)
        result.best_epoch, result.best_score = best
        for value in model.state_dict().values():
            torch_dist.broadcast(value, 0)

    def take_figures(self) -> dict[str, float]:
        """Seconds in collectives, bytes sent and optimiser steps since the last call."""
        out = {"collective_seconds": self.seconds, "bytes_sent": float(self.sent), "steps": float(self.steps)}
        self.seconds, self.sent, self.steps = 0.0, 0, 0
        return out

    def wrap(self, model, part: Optional["Part"] = None) -> Callable:
        """The model's batch_loss (on `part`, the columns this worker trains, if any) with DDP around it:
        its gradients averaged over the workers, but for the tables split by columns; the model's own
        batch_loss when nothing is left for DDP to average."""
        ignore = (*model.split_columns(), *model.split_rows()) if part is not None else ()
        synced = [name for name, p in model.named_parameters() if p.requires_grad and name not in ignore]
        if not synced:
            return model.batch_loss if part is None else partial(model.batch_loss, part=part)
        return self.averaged(_BatchLoss(model, part), tuple(f"model.{n}" for n in ignore))

    def averaged(self, module: torch.nn.Module, ignore: tuple[str, ...] = ()) -> torch.nn.Module:
        """`module` behind DDP: its gradients averaged over the workers (counted), but for those named in `ignore`."""
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(ignore))
        # every step uses the same parameters (static_graph: DDP finds those a family leaves unused once, in
        # the first step, not by walking the autograd graph at every step): no batch_loss reads a weight at
        # some steps only (the heads' masked losses keep a task without labels in the share in the graph;
        # tests/test_dist.py trains every family so). The buffers are alike on every worker (the same
        # data), so they are not sent again before each step
        ddp = DistributedDataParallel(module, static_graph=True, broadcast_buffers=False)
        ddp.register_comm_hook(self, _counted_allreduce)
        return ddp

    def _count(self, start: float, t: torch.Tensor, factor: float) -> None:
        self.seconds += time.perf_counter() - start
        self.sent += int(factor * t.numel() * t.element_size())


def _counted_allreduce(worker: Worker, bucket):  # no annotation: DDP checks it against its own, unparsed
    """DDP's own averaging of a bucket of gradients, counted (its seconds run from the launch to the
    end, so they include what overlaps the backward's remaining computation)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    start, buffer = time.perf_counter(), bucket.buffer()

    def done(future):
        worker._count(start, buffer, 2 * (worker.world - 1) / worker.world)
        return future.value()

    return allreduce_hook(torch_dist.group.WORLD, bucket).then(done)  # type: ignore[arg-type]


class _BatchLoss(torch.nn.Module):
    """A model whose forward is its batch_loss, for DDP (which hooks the forward)."""

    def __init__(self, model, part):
        super().__init__()
        self.model, self.part = model, part

    def forward(self, graph, users, pos, neg, edge_ids=None):
        extra = {} if self.part is None else {"part": self.part}
        return self.model.batch_loss(graph, users, pos, neg, edge_ids, **extra)


class Part:
    """The block start..end-1 of the columns of the ID tables that one worker trains (see the module's
    text), and of the rows of weight matrices whose rows make those output columns (GCN's). The
    worker's optimiser steps that block alone, as a contiguous tensor of its own (a leaf: `of`), and
    Adam's moments and the parameter average follow it; so the worker's gradients, Adam's arithmetic
    and the average cost 1/W of the whole. Before each epoch's join the blocks go into the whole
    tensors (`push`: the tables, the moments in `moments`), which `join_columns` completes from the
    other workers (`as_columns`); after a checkpoint is loaded into the whole tensors they come back
    out (`pull`)."""

    def __init__(self, worker: Worker, start: int, end: int, tables: list[tuple[torch.Tensor, int]]):
        self.worker, self.start, self.end, self.width = worker, start, end, tables[0][0].shape[1]
        self.tables = [t for t, _ in tables]
        self.axes = {id(t): axis for t, axis in tables}  # 1: split by columns, 0: by rows
        self.leaves = {id(t): t.detach().narrow(axis, start, end - start).clone().requires_grad_()
                       for t, axis in tables}
        self.moments = {id(t): {key: torch.zeros_like(t) for key in _MOMENTS} for t in self.tables}

    def of(self, table: torch.Tensor) -> torch.Tensor:
        """This worker's block of `table` (one of the split tables): the leaf its optimiser steps."""
        return self.leaves[id(table)]

    def splits(self, param: torch.Tensor) -> bool:
        return id(param) in self.leaves

    def window(self, param: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """This worker's block of `t`, a tensor shaped like `param`, if `param` is split; else `t` (a view)."""
        axis = self.axes.get(id(param))
        return t if axis is None else t.narrow(axis, self.start, self.end - self.start)

    def as_columns(self, param: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """`t` (shaped like the split `param`) as a view whose columns are split: what join_columns takes."""
        return t if self.axes[id(param)] == 1 else t.T

    def params(self, model) -> list[torch.Tensor]:
        """What the optimiser steps: the model's parameters, with each split table's leaf in its place."""
        return [self.leaves.get(id(p), p) for p in model.parameters()]

    @torch.no_grad()
    def push(self, optimizer: torch.optim.Optimizer) -> None:
        """This worker's blocks into the whole tables and the whole `moments`, for join_columns."""
        for t in self.tables:
            leaf = self.leaves[id(t)]
            self.window(t, t.data).copy_(leaf)
            state = optimizer.state.get(leaf, {})
            for key, whole in self.moments[id(t)].items():
                if key in state:
                    self.window(t, whole).copy_(state[key])

    @torch.no_grad()
    def pull(self, optimizer: torch.optim.Optimizer) -> None:
        """The blocks back from the whole tables and from whole moments just loaded (a checkpoint's)."""
        for t in self.tables:
            leaf = self.leaves[id(t)]
            leaf.copy_(self.window(t, t.data))
            state = optimizer.state.get(leaf, {})
            for key in _MOMENTS:
                if key in state and state[key].shape == t.shape:
                    self.moments[id(t)][key].copy_(state[key])
                    state[key] = self.window(t, state[key]).clone()

    def whole_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimiser's state_dict with the whole moments (as last joined) in place of this worker's
        block of them: what a checkpoint keeps, for every worker to `pull` again."""
        out = optimizer.state_dict()
        order = [p for group in optimizer.param_groups for p in group["params"]]
        whole = {id(self.leaves[id(t)]): self.moments[id(t)] for t in self.tables}
        for index, p in enumerate(order):
            if id(p) in whole and index in out["state"]:
                out["state"][index] = {**out["state"][index], **whole[id(p)]}
        return out

    def gather(self, block: torch.Tensor) -> torch.Tensor:
        """The n x d tensor whose columns are every worker's n x (its block's width) `block` (an all-gather);
        its gradient comes back as the sum of the workers' gradients by the whole (an all-reduce), this
        worker's columns of it. GCN's layers: each worker computes its output columns from the whole input."""
        return _Gather.apply(self, block)

    def total(self, *parts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each tensor summed over the workers (one all-reduce for all); the gradient passes back
        unchanged, since the whole is the sum of the parts."""
        return _Total.apply(self.worker, *parts)


_MOMENTS = ("exp_avg", "exp_avg_sq")  # Adam's (recsys/train.py trains with Adam, without amsgrad)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, part, block):
        ctx.part = part
        return part.worker.gather_columns(block, part.width).contiguous()

    @staticmethod
    def backward(ctx, grad):
        part = ctx.part
        return None, part.worker.sum(grad.contiguous().clone())[:, part.start:part.end]


class _Total(torch.autograd.Function):
    @staticmethod
    def forward(ctx, worker, *parts):
        flat = worker.sum(torch.cat([t.reshape(-1) for t in parts]))
        return tuple(chunk.view_as(t).clone() for chunk, t in zip(flat.split([t.numel() for t in parts]), parts))

    @staticmethod
    def backward(ctx, *grads):
        return (None, *grads)
