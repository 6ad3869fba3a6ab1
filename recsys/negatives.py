"""Negative samplers: `sample(users, pos_items, model_state) -> neg_items`, vectorised.

`neg_items` has shape (batch,) or (batch, k) for k negatives per positive. No sampler ever returns
a training positive of the user (redrawn uniformly until it is not, which on sparse data takes one
or two rounds). Kinds:
  uniform      every item equally likely
  popularity   p(i) proportional to (count_i + 1) ** exponent  (word2vec's 0.75 by default)
  in_batch     the other positives of the same batch
  model        dynamic negative sampling: score M uniform candidates with the current model and keep
               the hardest (temperature None) or draw by softmax(score / temperature); optionally drop
               candidates above a percentile of the user's candidate scores (likely false negatives)
  ppr          PinSage-style: items ranked by personalised PageRank from the user's items, negatives
               from a middle band of ranks; with a curriculum, epoch e adds min(e - 1, max_hard) hard
               negatives to one uniform negative
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from recsys.kernels import gather_dot


class PositiveSet:
    """Membership test for (user, item) pairs via a sorted array of keys user * n_items + item."""

    def __init__(self, pairs: np.ndarray, n_items: int):
        self.n_items = n_items
        self.keys = torch.from_numpy(np.unique(pairs[:, 0].astype(np.int64) * n_items + pairs[:, 1]))

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = torch.from_numpy(np.ascontiguousarray(users, dtype=np.int64) * self.n_items + items)
        if not len(self.keys):
            return np.zeros(keys.shape, dtype=bool)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)  # on torch's threads
        return (self.keys[pos] == keys).numpy()


class Sampler:
    per_positive = 1

    def __init__(self, n_items: int, train_pairs: np.ndarray, seed: int = 0, max_redraws: int = 50):
        self.n_items = n_items
        self.positives = PositiveSet(train_pairs, n_items)
        self.rng = np.random.default_rng(seed)
        self.max_redraws = max_redraws

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (curricula use it)."""

    def repair(self, users: np.ndarray, neg: np.ndarray) -> np.ndarray:
        """Replace every negative that is a positive of its user by a uniform non-positive draw."""
        owners = np.broadcast_to(users.reshape(-1, *([1] * (neg.ndim - 1))), neg.shape).reshape(-1)
        flat = neg.reshape(-1)
        bad = np.flatnonzero(self.positives.contains(owners, flat))
        for _ in range(self.max_redraws):  # redraw, and check again, only what was a positive
            if not len(bad):
                break
            flat[bad] = self.rng.integers(self.n_items, size=len(bad))
            bad = bad[self.positives.contains(owners[bad], flat[bad])]
        # what is still bad belongs to a user who has (almost) every item: kept, it cannot be helped
        return flat.reshape(neg.shape)


class UniformNegatives(Sampler):
    def sample(self, users: np.ndarray, pos_items: Optional[np.ndarray] = None, model_state: Any = None) -> np.ndarray:
        return self.repair(users, self.rng.integers(self.n_items, size=len(users)))


class PopularityNegatives(Sampler):
    def __init__(self, n_items: int, train_pairs: np.ndarray, exponent: float = 0.75, seed: int = 0):
        super().__init__(n_items, train_pairs, seed)
        weights = (np.bincount(train_pairs[:, 1], minlength=n_items) + 1.0) ** exponent
        self.probs = weights / weights.sum()
        self.cdf = np.cumsum(self.probs)

    def sample(self, users, pos_items=None, model_state=None) -> np.ndarray:
        draws = np.searchsorted(self.cdf, self.rng.random(len(users)) * self.cdf[-1], side="right")
        return self.repair(users, np.minimum(draws, self.n_items - 1))


class InBatchNegatives(Sampler):
    def sample(self, users, pos_items, model_state=None) -> np.ndarray:
        return self.repair(users, pos_items[self.rng.permutation(len(pos_items))].copy())


class ModelMinedNegatives(Sampler):
    """model_state: a callable (users, items (B, M)) -> scores (B, M), e.g. ScoreView below."""

    def __init__(self, n_items: int, train_pairs: np.ndarray, candidates: int = 32,
                 temperature: Optional[float] = None, max_score_percentile: Optional[float] = None, seed: int = 0):
        super().__init__(n_items, train_pairs, seed)
        self.candidates, self.temperature, self.max_score_percentile = candidates, temperature, max_score_percentile

    def sample(self, users, pos_items, model_state: Callable) -> np.ndarray:
        cand = self.repair(users, self.rng.integers(self.n_items, size=(len(users), self.candidates)))
        scores = np.asarray(model_state(users, cand), dtype=np.float64)
        if self.max_score_percentile is not None:
            cap = np.percentile(scores, self.max_score_percentile, axis=1, keepdims=True)
            scores = np.where(scores > cap, -np.inf, scores)
        if self.temperature is None:
            pick = scores.argmax(1)
        else:
            z = scores / self.temperature
            z = np.exp(z - z.max(1, keepdims=True))
            cdf = np.cumsum(z / z.sum(1, keepdims=True), axis=1)
            pick = np.minimum((cdf < self.rng.random((len(users), 1))).sum(1), self.candidates - 1)
        return cand[np.arange(len(users)), pick]


class PPRNegatives(Sampler):
    """Items in a band of personalised-PageRank ranks (fractions of the catalogue; 0.05-0.12 is
    about ranks 2000-5000 on Gowalla's 41k items, PinSage's choice). PPR does not depend on the
    model, so a pool of band items per user is drawn once, by power iteration in user chunks."""

    def __init__(self, n_users: int, n_items: int, train_pairs: np.ndarray, band: tuple[float, float] = (0.05, 0.12),
                 pool_size: int = 32, alpha: float = 0.15, iterations: int = 10, curriculum: bool = True,
                 max_hard: int = 3, seed: int = 0, chunk_size: int = 512):
        super().__init__(n_items, train_pairs, seed)
        self.curriculum, self.max_hard, self.epoch = curriculum, max_hard, 1
        self.pool = self._pools(n_users, train_pairs, band, pool_size, alpha, iterations, chunk_size)

    @property
    def per_positive(self) -> int:
        return 1 + self.hard_count()

    def hard_count(self) -> int:
        return min(self.epoch - 1, self.max_hard) if self.curriculum else self.max_hard

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pools(self, n_users, pairs, band, pool_size, alpha, iterations, chunk_size) -> np.ndarray:
        n = n_users + self.n_items
        rows = np.concatenate([pairs[:, 0], pairs[:, 1] + n_users])
        cols = np.concatenate([pairs[:, 1] + n_users, pairs[:, 0]])
        deg = np.bincount(rows, minlength=n).astype(np.float32)
        # column-stochastic walk matrix W[i, j] = 1 / deg(j) for an edge j -> i
        vals = 1.0 / np.maximum(deg[cols], 1)
        walk = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals),
                                       (n, n)).coalesce().to_sparse_csr()
        lo = int(band[0] * self.n_items)
        hi = max(lo + 1, min(int(band[1] * self.n_items), self.n_items))
        pool = np.empty((n_users, pool_size), dtype=np.int64)
        for start in range(0, n_users, chunk_size):
            users = np.arange(start, min(start + chunk_size, n_users))
            restart = torch.zeros(n, len(users))
            restart[torch.from_numpy(users), torch.arange(len(users))] = 1.0
            p = restart.clone()
            for _ in range(iterations):  # p = alpha * e_u + (1 - alpha) W p
                p = alpha * restart + (1 - alpha) * torch.sparse.mm(walk, p)
            item_scores = p[n_users:].T.numpy()  # (chunk, items)
            ranked = np.argsort(-item_scores, axis=1, kind="stable")[:, lo:hi]
            pick = self.rng.integers(hi - lo, size=(len(users), pool_size))
            pool[users] = np.take_along_axis(ranked, pick, axis=1)
        return pool

    def sample(self, users, pos_items=None, model_state=None) -> np.ndarray:
        uniform = self.rng.integers(self.n_items, size=(len(users), 1))
        k = self.hard_count()
        hard = np.take_along_axis(self.pool[users], self.rng.integers(self.pool.shape[1], size=(len(users), k)), 1)
        return self.repair(users, np.concatenate([uniform, hard], axis=1) if k else uniform[:, 0])


class ScoreView:
    """The model's current scores for the model-mined sampler, from embeddings recomputed (without
    gradients) every `refresh_every` batches: one extra forward pass per refresh, not per batch."""

    def __init__(self, model, graph, refresh_every: int = 10):
        self.model, self.graph, self.refresh_every = model, graph, refresh_every
        self.calls, self.users, self.items = 0, None, None

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self.users is None or self.calls % self.refresh_every == 0:
            with torch.no_grad():
                self.users, self.items = (t.detach() for t in self.model.embed(self.graph))
        self.calls += 1
        device = self.items.device  # scored where the model is; only the (B, M) scores come back
        return gather_dot(self.users[torch.from_numpy(users).to(device)], self.items,
                          torch.from_numpy(items).to(device)).cpu().numpy()


def build_sampler(cfg, n_users: int, n_items: int, train_pairs: np.ndarray, seed: int = 0) -> Sampler:
    """cfg: recsys.config.NegativesConfig."""
    if cfg.kind == "uniform":
        return UniformNegatives(n_items, train_pairs, seed)
    if cfg.kind == "popularity":
        return PopularityNegatives(n_items, train_pairs, cfg.popularity_exponent, seed)
    if cfg.kind == "in_batch":
        return InBatchNegatives(n_items, train_pairs, seed)
    if cfg.kind == "model":
        return ModelMinedNegatives(n_items, train_pairs, cfg.candidates, cfg.temperature,
                                   cfg.max_score_percentile, seed)
    if cfg.kind == "ppr":
        return PPRNegatives(n_users, n_items, train_pairs, tuple(cfg.band), cfg.pool_size, cfg.ppr_alpha,
                            cfg.ppr_iterations, cfg.curriculum, cfg.max_hard, seed)
    raise ValueError(f"unknown negative sampler {cfg.kind!r}")
