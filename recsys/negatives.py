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
Random numbers are drawn on the host (a seed gives the same negatives on any device); membership
checks, candidate scores and picks run where the sampler was placed (`Sampler.to`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from recsys.device import to_device
from recsys.kernels import gather_dot


def ids_on(array, device: torch.device) -> torch.Tensor:
    """Integer ids (numpy or torch) as an int64 tensor on `device`."""
    return to_device(array, device).long()


class PositiveSet:
    """Membership test for (user, item) pairs, kept on the sampler's device so that checks never leave
    it: the sorted keys user * n_items + item, searched only where a bit filter says the key may be
    there. The filter has a bit per block of 2^shift consecutive keys, about 32 bits per positive, so
    most negatives are cleared by one bit, and the bits of one user's keys lie together: a batch
    checks a user's many candidates against a cache line or two. (The binary search alone took ~20
    dependent reads per check, and was most of a hard-negative draw's time.)"""

    FILTER_BITS_PER_KEY = 32

    def __init__(self, pairs: np.ndarray, n_items: int):
        self.n_items = n_items
        keys = np.unique(pairs[:, 0].astype(np.int64) * n_items + pairs[:, 1])
        span = int(keys[-1]) + 1 if len(keys) else 1
        self.shift = max(0, int(np.ceil(np.log2(span / max(self.FILTER_BITS_PER_KEY * len(keys), 1)))))
        blocks = np.unique(keys >> self.shift)
        bits = np.zeros(((span - 1) >> self.shift) // 8 + 1, dtype=np.uint8)
        np.bitwise_or.at(bits, blocks >> 3, (1 << (blocks & 7)).astype(np.uint8))
        self.keys, self.bits = torch.from_numpy(keys), torch.from_numpy(bits)

    def to(self, device: torch.device) -> "PositiveSet":
        self.keys, self.bits = self.keys.to(device), self.bits.to(device)
        return self

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """A bool tensor: is (users[j], items[j]) a positive? Both int64 on the keys' device."""
        keys = users * self.n_items + items
        found = torch.zeros(keys.shape, dtype=torch.bool, device=keys.device)
        block = (keys >> self.shift).clamp_(max=len(self.bits) * 8 - 1)
        maybe = torch.nonzero(((self.bits[block >> 3] >> (block & 7).to(torch.uint8)) & 1).bool(), as_tuple=True)
        if len(self.keys) and len(maybe[0]):
            wanted = keys[maybe]
            pos = torch.searchsorted(self.keys, wanted).clamp_(max=len(self.keys) - 1)
            found[maybe] = self.keys[pos] == wanted
        return found


class Sampler:
    """Random numbers come from a numpy generator on the host, so a seed gives the same negatives on
    every device; the drawn ids are copied once to `device`, where positives are checked (and, for
    the model sampler, candidates scored and picked). `sample` takes ids as numpy arrays or tensors
    and returns an int64 tensor on the sampler's device."""

    @property
    def per_positive(self) -> int:
        """Negatives drawn for each positive."""
        return 1

    def __init__(self, n_items: int, train_pairs: np.ndarray, seed: int = 0, max_redraws: int = 50):
        self.n_items = n_items
        self.positives = PositiveSet(train_pairs, n_items)
        self.rng = np.random.default_rng(seed)
        self.max_redraws = max_redraws
        self.device = torch.device("cpu")

    def to(self, device) -> "Sampler":
        """Keep the sampler's tables on `device`; `sample` then returns tensors there."""
        self.device = torch.device(device)
        self.positives.to(self.device)
        return self

    def set_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (curricula use it)."""

    def draw(self, size) -> torch.Tensor:
        """Uniform item ids of shape `size`, drawn on the host and placed on the device."""
        return ids_on(self.rng.integers(self.n_items, size=size), self.device)

    def repair(self, users: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Replace every negative that is a positive of its user by a uniform non-positive draw."""
        owners = users.reshape(-1, *([1] * (neg.ndim - 1))).expand(neg.shape).reshape(-1)
        flat = neg.reshape(-1).clone()
        bad = torch.nonzero(self.positives.contains(owners, flat)).squeeze(1)
        for _ in range(self.max_redraws):  # redraw, and check again, only what was a positive
            if not len(bad):  # one scalar read per round; the ids stay on the device
                break
            flat[bad] = self.draw(len(bad))
            bad = bad[self.positives.contains(owners[bad], flat[bad])]
        # what is still bad belongs to a user who has (almost) every item: kept, it cannot be helped
        return flat.reshape(neg.shape)


class UniformNegatives(Sampler):
    def sample(self, users, pos_items=None, model_state: Any = None) -> torch.Tensor:
        return self.repair(ids_on(users, self.device), self.draw(len(users)))


class PopularityNegatives(Sampler):
    def __init__(self, n_items: int, train_pairs: np.ndarray, exponent: float = 0.75, seed: int = 0):
        super().__init__(n_items, train_pairs, seed)
        weights = (np.bincount(train_pairs[:, 1], minlength=n_items) + 1.0) ** exponent
        self.probs = weights / weights.sum()
        self.cdf = np.cumsum(self.probs)

    def sample(self, users, pos_items=None, model_state=None) -> torch.Tensor:
        draws = np.searchsorted(self.cdf, self.rng.random(len(users)) * self.cdf[-1], side="right")
        return self.repair(ids_on(users, self.device), ids_on(np.minimum(draws, self.n_items - 1), self.device))


class InBatchNegatives(Sampler):
    def sample(self, users, pos_items, model_state=None) -> torch.Tensor:
        order = ids_on(self.rng.permutation(len(pos_items)), self.device)
        return self.repair(ids_on(users, self.device), ids_on(pos_items, self.device)[order])


class ModelMinedNegatives(Sampler):
    """model_state: a callable (users, items (B, M)) -> scores (B, M) on the device, e.g. ScoreView below."""

    def __init__(self, n_items: int, train_pairs: np.ndarray, candidates: int = 32,
                 temperature: Optional[float] = None, max_score_percentile: Optional[float] = None, seed: int = 0):
        super().__init__(n_items, train_pairs, seed)
        self.candidates, self.temperature, self.max_score_percentile = candidates, temperature, max_score_percentile

    def sample(self, users, pos_items, model_state: Callable) -> torch.Tensor:
        users = ids_on(users, self.device)
        cand = self.repair(users, self.draw((len(users), self.candidates)))
        return cand.gather(1, self._pick(model_state(users, cand))[:, None]).squeeze(1)

    def sample_many(self, users, pos_items, model_state: Callable, k: int) -> torch.Tensor:
        """(B, k): what k calls of `sample` draw, from the same random stream; without a temperature
        (whose draws would interleave) the k candidate sets are scored in one call of a ScoreView's
        `many`, so a training worker sums its partial scores once per batch, not k times."""
        many = getattr(model_state, "many", None)
        if self.temperature is not None or many is None:
            return torch.stack([self.sample(users, pos_items, model_state) for _ in range(k)], dim=1)
        users = ids_on(users, self.device)
        cands = [self.repair(users, self.draw((len(users), self.candidates))) for _ in range(k)]
        picks = [c.gather(1, self._pick(s)[:, None]) for c, s in zip(cands, many(users, cands))]
        return torch.cat(picks, dim=1)

    def _pick(self, scores) -> torch.Tensor:
        """Each row's chosen candidate: the highest score below the percentile cap, or a draw by
        softmax(scores / temperature)."""
        scores = torch.as_tensor(scores).to(self.device, torch.float64)
        if self.max_score_percentile is not None:
            scores = scores.masked_fill(scores > percentile(scores, self.max_score_percentile), -torch.inf)
        if self.temperature is None:
            return scores.argmax(1)
        cdf = torch.softmax(scores / self.temperature, dim=1).cumsum(1)
        u = to_device(self.rng.random((len(scores), 1)), self.device)
        return (cdf < u).sum(1).clamp_(max=self.candidates - 1)


def percentile(scores: torch.Tensor, q: float) -> torch.Tensor:
    """Each row's q-th percentile, (B, 1), interpolated linearly between order statistics as numpy's
    default does (torch.quantile refuses inputs past 16M values)."""
    ordered = scores.sort(dim=1).values
    at = q / 100 * (scores.shape[1] - 1)
    lo = int(np.floor(at))
    hi = min(lo + 1, scores.shape[1] - 1)
    return torch.lerp(ordered[:, lo:lo + 1], ordered[:, hi:hi + 1], at - lo)


class PPRNegatives(Sampler):
    """Items in a band of personalised-PageRank ranks (fractions of the catalogue; 0.05-0.12 is
    about ranks 2000-5000 on Gowalla's 41k items, PinSage's choice). PPR does not depend on the
    model, so a pool of band items per user is drawn once, by power iteration in user chunks."""

    def __init__(self, n_users: int, n_items: int, train_pairs: np.ndarray, band: tuple[float, float] = (0.05, 0.12),
                 pool_size: int = 32, alpha: float = 0.15, iterations: int = 10, curriculum: bool = True,
                 max_hard: int = 3, seed: int = 0, chunk_size: int = 512):
        super().__init__(n_items, train_pairs, seed)
        self.curriculum, self.max_hard, self.epoch = curriculum, max_hard, 1
        self.pool = torch.from_numpy(self._pools(n_users, train_pairs, band, pool_size, alpha, iterations,
                                                 chunk_size))

    def to(self, device) -> "PPRNegatives":
        super().to(device)
        self.pool = self.pool.to(self.device)
        return self

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

    def sample(self, users, pos_items=None, model_state=None) -> torch.Tensor:
        users = ids_on(users, self.device)
        uniform = self.draw((len(users), 1))
        k = self.hard_count()
        slots = ids_on(self.rng.integers(self.pool.shape[1], size=(len(users), k)), self.device)
        hard = self.pool[users].gather(1, slots)
        return self.repair(users, torch.cat([uniform, hard], dim=1) if k else uniform[:, 0])


class ScoreView:
    """The model's current scores for the model-mined sampler, from embeddings recomputed (without
    gradients) every `refresh_every` batches: one extra forward pass per refresh, not per batch."""

    def __init__(self, model, graph, refresh_every: int = 10, part=None):
        """`part`: the columns of the ID tables this training worker holds (recsys/dist.py): it scores
        with them alone, and the partial scores are summed over the workers."""
        self.model, self.graph, self.refresh_every, self.part = model, graph, refresh_every, part
        self.calls = 0
        self.users: Optional[torch.Tensor] = None
        self.items: Optional[torch.Tensor] = None

    def reset(self) -> None:
        """Scores from fresh embeddings at the next call, counted anew: each epoch starts so, whether the
        loop ran the epoch before or was resumed after it (recsys/train_state.py)."""
        self.users = self.items = None
        self.calls = 0

    def __call__(self, users, items) -> torch.Tensor:
        """(B, M) scores, on the model's device (ids may be numpy or tensors anywhere)."""
        return self.many(users, [items])[0]

    def many(self, users, items: list) -> list[torch.Tensor]:
        """The scores of each (B, M) set of items in turn, as that many calls would give them (each call
        counts towards the refresh); a training worker's partial scores summed in one exchange."""
        out = []
        for each in items:
            if self.users is None or self.items is None or self.calls % self.refresh_every == 0:
                with torch.no_grad():
                    options = {} if self.part is None else {"part": self.part}
                    self.users, self.items = (t.detach() for t in self.model.embed(self.graph, **options))
            self.calls += 1
            assert self.users is not None and self.items is not None
            device = self.items.device
            out.append(gather_dot(self.users[ids_on(users, device)], self.items, ids_on(each, device)))
        return out if self.part is None else list(self.part.total(*out))


AUTO_SCALE = 1.5  # candidates ~ AUTO_SCALE / sqrt(density), fitted on three validation splits (auto_candidates)


def auto_candidates(train_pairs: np.ndarray, n_items: int) -> int:
    """How many uniform candidates the model sampler keeps the hardest of, from the log's density d
    (training pairs / (users with training pairs x items)): 1.5 / sqrt(d), to the nearest power of
    two, within 2..64. The hardest of many candidates is a good negative on a sparse log, but on a
    dense one it is often an item the user would like (a false negative), and training stalls.
    The rule was fitted on validation splits of MovieLens-100K, LastFM and Gowalla, whose best
    counts it reproduces (bench/results/transfer.md)."""
    if not len(train_pairs):
        return 2
    density = len(train_pairs) / (len(np.unique(train_pairs[:, 0])) * max(n_items, 1))
    return int(min(64, max(2, 2 ** round(math.log2(AUTO_SCALE / math.sqrt(density))))))


def build_sampler(cfg, n_users: int, n_items: int, train_pairs: np.ndarray, seed: int = 0) -> Sampler:
    """cfg: recsys.config.NegativesConfig."""
    if cfg.kind == "uniform":
        return UniformNegatives(n_items, train_pairs, seed)
    if cfg.kind == "popularity":
        return PopularityNegatives(n_items, train_pairs, cfg.popularity_exponent, seed)
    if cfg.kind == "in_batch":
        return InBatchNegatives(n_items, train_pairs, seed)
    if cfg.kind == "model":
        if cfg.candidates == "auto":
            raise ValueError("negatives.candidates=auto is resolved from the log first (recsys.recipe.resolve)")
        return ModelMinedNegatives(n_items, train_pairs, cfg.candidates, cfg.temperature,
                                   cfg.max_score_percentile, seed)
    if cfg.kind == "ppr":
        return PPRNegatives(n_users, n_items, train_pairs, tuple(cfg.band), cfg.pool_size, cfg.ppr_alpha,
                            cfg.ppr_iterations, cfg.curriculum, cfg.max_hard, seed)
    raise ValueError(f"unknown negative sampler {cfg.kind!r}")
