"""The `llm` family's training: the soft-prompt prefix (a projection of a member's GNN vector read by
a frozen text encoder) fitted by in-batch softmax over jobs, and the family's whole training on top
of its GNN bottom. The modules it trains are in recsys/models/llm.py."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recsys.device import embed_on, resolve_device
from recsys.dist import Worker, active
from recsys.models.llm import FixedVectors, PrefixEncoder, graph_texts, item_texts, profile_texts
from recsys.text import TextEncoder
from recsys.train import TrainResult, drive_epochs, fit
from recsys.trained import Trained
from recsys.warm import load_stage


def fit_prefix(model: PrefixEncoder, gnn_users: torch.Tensor, texts: list[str], item_vectors: torch.Tensor,
               pairs: np.ndarray, epochs: int = 3, lr: float = 1e-3, batch_size: int = 64, temperature: float = 0.05,
               negatives: int = 256, seed: int = 0, log: Optional[Callable[[str], None]] = None,
               callbacks: Sequence = (), members_per_epoch: Optional[int] = None,
               device: Optional[torch.device] = None) -> list[dict]:
    """Train the projection only. An epoch reads `members_per_epoch` members (all when None) drawn
    afresh. A step reads `batch_size` members through the transformer, once
    each, and scores all their (member, job) pairs: for each pair, a softmax over the batch's jobs
    and `negatives` random jobs, the member's other jobs left out. Reading a member once per step
    rather than once per pair matters: the frozen transformer's forward and backward passes are
    nearly all the time, and a member has many jobs. `callbacks`: recsys.train.Callback hooks.
    Runs on `device` (the model, the GNN and job vectors there; the batch's indices drawn on the
    CPU and copied over). Returns the loss per epoch."""
    device = torch.device(device or "cpu")
    model.to(device)
    gnn_users, item_vectors = gnn_users.to(device), item_vectors.to(device)

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.proj.parameters(), lr=lr)
    by_member = torch.unique(torch.as_tensor(np.asarray(pairs, dtype=np.int64).reshape(-1, 2)), dim=0)
    members, counts = torch.unique_consecutive(by_member[:, 0], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    n_items = len(item_vectors)
    steps = [0]
    worker = active()  # one of several training workers (recsys/dist.py): each reads its share of the members
    step = _Step(model if worker is None else worker.averaged(model), worker, gnn_users, texts, item_vectors,
                 temperature, device)

    def one_epoch(epoch: int) -> dict:
        t0, total, done = time.perf_counter(), 0.0, 0
        order = torch.randperm(len(members), generator=gen)[:members_per_epoch]
        for a in range(0, len(order), batch_size):
            chosen = order[a:a + batch_size]
            slot, pos, candidates, target = _batch(by_member, starts[chosen], counts[chosen], n_items, negatives, gen)
            loss = step.loss(members[chosen], slot, pos, candidates, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = float(loss.detach() if worker is None else worker.sum(loss.detach().clone()) / worker.world)
            total, done, steps[0] = total + value, done + 1, steps[0] + 1
            for cb in callbacks:
                cb.on_step(steps[0], {"loss": value})
        logs = {"loss": total / max(done, 1), "epoch_seconds": time.perf_counter() - t0,
                **(worker.take_figures() if worker is not None else {})}
        if log:
            log(f"prefix epoch {epoch}: loss {logs['loss']:.4f} ({logs['epoch_seconds']:.0f} s)")
        return logs

    model.train()
    history = drive_epochs(epochs, one_epoch, callbacks, TrainResult()).history
    model.eval()
    return history


@dataclass
class _Step:
    """What a step's loss reads: the prefix (behind DDP on several workers), the worker, the inputs."""
    net: torch.nn.Module
    worker: Optional[Worker]
    gnn_users: torch.Tensor
    texts: list[str]
    item_vectors: torch.Tensor
    temperature: float
    device: torch.device

    def loss(self, chosen: torch.Tensor, slot: torch.Tensor, pos: torch.Tensor, candidates: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
        """The in-batch softmax loss of the members `chosen` (see _batch for the rest); on one of several
        workers, of its share of the members (positions rank, rank + W, ...) against the whole batch's
        candidates: the sum over its pairs / the batch's pairs x W, so DDP's mean is the batch's gradient."""
        worker, n_items, device = self.worker, len(self.item_vectors), self.device
        mine = torch.arange(len(chosen))
        if worker is not None:
            mine = worker.share(mine)[1][0]
        kept = torch.isin(slot, mine)
        u = self.net(self.gnn_users[chosen[mine].to(device)], [self.texts[i] for i in chosen[mine].tolist()])
        logits = u[(slot[kept] // (1 if worker is None else worker.world)).to(device)] \
            @ self.item_vectors[candidates.to(device)].T / self.temperature
        # the member's other jobs (wherever they appear among the candidates) are not negatives
        theirs = torch.isin(slot[kept].unsqueeze(1) * n_items + candidates.unsqueeze(0), slot * n_items + pos)
        theirs &= target[kept].unsqueeze(1) != torch.arange(len(candidates))
        loss = F.cross_entropy(logits.masked_fill(theirs.to(device), float("-inf")), target[kept].to(device),
                               reduction="mean" if worker is None else "sum")
        return loss if worker is None else loss / len(pos) * worker.world


def _batch(pairs: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, n_items: int, negatives: int,
           gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A step's pairs, for the members whose pairs start at `starts` (`counts` each): for each pair its
    member's place in the batch and its job; the candidate jobs (the batch's, then `negatives` drawn at
    random); and each pair's job's place among them."""
    rows = torch.cat([torch.arange(s, s + c) for s, c in zip(starts.tolist(), counts.tolist())])
    slot = torch.repeat_interleave(torch.arange(len(starts)), counts)
    pos = pairs[rows, 1]
    jobs = torch.unique(pos)
    return slot, pos, torch.cat([jobs, torch.randint(n_items, (negatives,), generator=gen)]), \
        torch.searchsorted(jobs, pos)


def train_llm(prepared, opts, bottom, text_cache, seed: int = 0, log: Optional[Callable[[str], None]] = None,
              callbacks: Sequence = (), device: Optional[torch.device] = None,
              warm: Optional[dict] = None) -> tuple[FixedVectors, list[dict], Optional[PrefixEncoder]]:
    """The `llm` family on prepared data: `opts` (LLMOptions) picks graph-as-text or GNN-as-prefix;
    `bottom` is the trained GNN whose member embeddings the prefix reads. Jobs are the frozen
    encoder's vectors of their text in both modes. The encoders and the prefix run on `device`;
    the vectors come back to the CPU. `warm`: a champion's stages, whose `prefix` starts the prefix
    encoder where its shapes match. Also returns the prefix encoder (None for graph-as-text)."""
    device = torch.device(device or "cpu")
    data, indexed = prepared.data, prepared.indexed
    if list(data.users["user_id"].astype(str)) != list(indexed.user_ids):
        raise ValueError("users table and indexed ids disagree")
    encoder = TextEncoder(text_cache, device=device)
    items = torch.as_tensor(encoder.encode(item_texts(data.items)))
    if opts.mode == "text":
        texts = graph_texts(data.users, data.items, indexed.train, indexed.social, opts.max_friends,
                            opts.max_items, opts.max_chars)
        return FixedVectors(torch.as_tensor(encoder.encode(texts)), items), [], None
    bottom.eval()
    gnn_users, _ = embed_on(bottom, prepared.graph, device)
    texts = profile_texts(data.users)
    torch.manual_seed(seed)
    model = PrefixEncoder(gnn_users.shape[1], opts.prefix_tokens, opts.max_tokens)
    load_stage(model, warm, "prefix")
    history = fit_prefix(model, gnn_users, texts, items, indexed.train, opts.epochs, opts.lr, opts.batch_size,
                         opts.temperature, opts.negatives, seed, log, callbacks, opts.members_per_epoch, device)
    users = model.encode(gnn_users.to(device), texts).cpu()
    model.to("cpu")
    return FixedVectors(users, items), history, model


def train_family(prepared, cfg, bottom, callbacks, log=None, stages=None):
    """The llm family's whole training (its registry entry): the GNN bottom by the ranking loop
    (prefix mode only: graph as text reads no GNN), then the language-model stage ("prefix_")."""
    result, device = TrainResult(), resolve_device(cfg.compute.device)
    if cfg.model.llm.mode == "prefix":
        result = fit(bottom, prepared.graph, prepared.indexed, cfg.train, cfg.eval, callbacks=callbacks(""), log=log,
                     device=device)
    vectors, _, prefix = train_llm(prepared, cfg.model.llm, bottom, cfg.stores.text_cache(), cfg.train.seed, log,
                                   callbacks("prefix_"), device, warm=stages)
    return Trained(vectors, prepared.graph, result, result.best_score, result.best_epoch, built=bottom,
                   stages={"prefix": prefix} if prefix is not None else {})
