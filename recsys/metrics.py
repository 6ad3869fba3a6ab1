"""Full-ranking metrics (Recall, NDCG, Precision and Hit at several K in one pass) and AUC.

Every user with at least one target item is ranked against the whole catalogue, with the items
they had before the evaluated split masked out. Users are scored `chunk_size` at a time, so peak
memory is chunk_size x n_items scores, never n_users x n_items. Where more than `max_users` users
have targets, a seeded sample of that many is ranked (ranked_users): the ranking itself stays exact
over all items, and the same data and seed give the same users whatever the model.

Definitions (per user, then averaged over users with targets), with hits h_r in {0, 1} at rank r:
  Recall@K    = sum_{r<K} h_r / |targets|
  Precision@K = sum_{r<K} h_r / K
  Hit@K       = 1 if any h_r (r<K)
  NDCG@K      = sum_{r<K} h_r / log2(r + 2)  /  sum_{r<min(K, |targets|)} 1 / log2(r + 2)
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch


def _csr(pairs: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    rows, cols = pairs[order, 0], pairs[order, 1]
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def _rows(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(local row, column) of every entry of the given CSR rows, on the tensors' device."""
    counts = indptr[users + 1] - indptr[users]
    local = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
    first = torch.cumsum(counts, 0) - counts  # each row's first entry among the gathered ones
    offsets = torch.arange(len(local), device=users.device) - first[local]
    return local, indices[indptr[users][local] + offsets]


def sample(candidates: np.ndarray, size: Optional[int], seed: int) -> np.ndarray:
    """`size` of `candidates` (sorted), drawn without replacement with `seed`; all of them when
    there are no more than `size` (or size is None)."""
    if size is None or len(candidates) <= size:
        return candidates
    return np.sort(np.random.default_rng(seed).choice(candidates, size=size, replace=False))


def ranked_users(targets: np.ndarray, n_users: int, user_mask: Optional[np.ndarray] = None,
                 max_users: Optional[int] = None, sample_seed: int = 0) -> np.ndarray:
    """The users an evaluation ranks: those with targets (and in `user_mask`), sampled down to
    `max_users`. Depends on the data and the seed only, never on a model."""
    has_targets = np.zeros(n_users, dtype=bool)
    has_targets[targets[:, 0]] = True
    if user_mask is not None:
        has_targets &= np.asarray(user_mask, bool)
    return sample(np.flatnonzero(has_targets), max_users, sample_seed)


@torch.no_grad()
def evaluate(user_emb: torch.Tensor | np.ndarray, item_emb: torch.Tensor | np.ndarray, targets: np.ndarray,
             seen: np.ndarray, *args, **kwargs) -> dict[str, float]:
    """Mean metrics over the users that have targets, ranked with the two tables of vectors (the
    rest of the arguments are per_user_scores')."""
    return means(*evaluate_per_user(user_emb, item_emb, targets, seen, *args, **kwargs))


@torch.no_grad()
def evaluate_per_user(user_emb: torch.Tensor | np.ndarray, item_emb: torch.Tensor | np.ndarray, targets: np.ndarray,
                      seen: np.ndarray, *args, **kwargs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """evaluate's figures before the mean: the users ranked and each metric per user (per_user_scores)."""
    user_emb = torch.as_tensor(user_emb, dtype=torch.float32)
    item_emb = torch.as_tensor(item_emb, dtype=torch.float32, device=user_emb.device)
    return per_user_scores(lambda users: user_emb[torch.from_numpy(users).to(user_emb.device)] @ item_emb.T,
                           user_emb.shape[0], item_emb.shape[0], targets, seen, *args, **kwargs)


def means(users: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, float]:
    n = max(len(users), 1)
    return {name: float(v.sum()) / n for name, v in values.items()}


def evaluate_scores(score: Callable[[np.ndarray], torch.Tensor], *args, **kwargs) -> dict[str, float]:
    """The same metrics for any scorer: score(user indices) -> (len(users), n_items) scores, a new
    tensor each call (it is masked in place); per_user_scores' figures (and arguments), averaged
    over the users."""
    return means(*per_user_scores(score, *args, **kwargs))


@torch.no_grad()
def _chunk_hits(scores: torch.Tensor, chunk: torch.Tensor, tables: tuple, hidden_users: Optional[torch.Tensor],
                n_items: int, max_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(whether each of a chunk of users' top max_k items is a target, each user's target count),
    after masking what is never ranked (seen, unavailable items and users, non-finite scores)."""
    _, seen_ptr, seen_idx, target_ptr, target_idx, hidden, _, _ = tables
    device = scores.device
    scores[_rows(seen_ptr, seen_idx, chunk)] = -torch.inf
    if hidden is not None:
        scores[:, hidden] = -torch.inf
    if hidden_users is not None:
        scores[hidden_users] = -torch.inf
    scores.nan_to_num_(nan=-torch.inf, posinf=-torch.inf, neginf=-torch.inf)
    top_scores, top = torch.topk(scores, max_k, dim=1)  # (chunk, max_k)
    del scores
    # which of the top items are targets: their keys (local row * n_items + item) looked up among
    # the chunk's sorted target keys (every user here has one), not a dense chunk x items matrix
    tr, tc = _rows(target_ptr, target_idx, chunk)
    target_keys = torch.unique(tr * n_items + tc)
    top_keys = torch.arange(len(chunk), device=device).unsqueeze(1) * n_items + top
    found = target_keys[torch.searchsorted(target_keys, top_keys).clamp_(max=len(target_keys) - 1)] == top_keys
    # A masked item fills the list only when fewer than max_k remain: it is no recommendation.
    return (found & torch.isfinite(top_scores)).double(), (target_ptr[chunk + 1] - target_ptr[chunk]).double()


def _record(values: dict, at: slice, hits: torch.Tensor, n_targets: torch.Tensor, ks: list[int], max_k: int,
            discount: torch.Tensor, ideal: torch.Tensor) -> None:
    """Each metric of a chunk of users, from their top-K hits, into `values` at `at`."""
    for k in ks:
        kk = min(k, max_k)
        h = hits[:, :kk]
        n_hit = h.sum(1)
        dcg = (h * discount[:kk]).sum(1)
        idcg = ideal[torch.clamp(n_targets, max=kk).long()]
        values[f"recall@{k}"][at] = (n_hit / n_targets).cpu().numpy()
        values[f"precision@{k}"][at] = (n_hit / k).cpu().numpy()
        values[f"hit@{k}"][at] = (n_hit > 0).double().cpu().numpy()
        values[f"ndcg@{k}"][at] = (dcg / idcg).cpu().numpy()


def per_user_scores(
    score: Callable[[np.ndarray], torch.Tensor],
    n_users: int,
    n_items: int,
    targets: np.ndarray,
    seen: np.ndarray,
    ks: Sequence[int] = (20,),
    chunk_size: int = 1024,
    item_available: Optional[np.ndarray] = None,
    user_mask: Optional[np.ndarray] = None,
    user_available: Optional[np.ndarray] = None,
    max_users: Optional[int] = None,
    sample_seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The users ranked (ranked_users) and each metric per user, in that order (float64 arrays):
    what a paired comparison of two models on the same users needs. The masking, the top-K and the
    hit counts run on the scores' device (a GPU's, for embeddings there).

    targets, seen: (n, 2) arrays of (user, item) index pairs. Users with targets are ranked (those
    in `user_mask`, if given; at most `max_users` of them, see ranked_users). item_available: an
    optional boolean mask; unavailable items are never ranked (e.g. items a model has no vector
    for). user_available: an optional boolean mask; an unavailable user (one a model has no vector
    for) still counts in the mean, with nothing ranked: every metric 0 for that user.

    Only items with a finite score count as ranked: when fewer than K remain after masking (seen,
    unavailable, or a non-finite score), the top-K list is shorter, never padded with masked items."""
    ks = sorted(set(int(k) for k in ks))
    max_k = min(max(ks), n_items)
    t_ptr, t_idx = _csr(targets, n_users)
    s_ptr, s_idx = _csr(seen, n_users)
    eval_users = ranked_users(targets, n_users, user_mask, max_users, sample_seed)
    discount = 1.0 / torch.log2(torch.arange(2, max_k + 2, dtype=torch.float64))
    ideal = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(discount, 0)])
    values = {f"{m}@{k}": np.zeros(len(eval_users)) for k in ks for m in ("recall", "ndcg", "precision", "hit")}
    unavailable = None if item_available is None else torch.from_numpy(~np.asarray(item_available, dtype=bool))
    no_user = None if user_available is None else ~np.asarray(user_available, dtype=bool)

    on = None  # the CSR tables, on the scores' device once the first chunk shows it
    for start in range(0, len(eval_users), chunk_size):
        users = eval_users[start:start + chunk_size]
        scores = score(users)  # a fresh tensor: masked in place
        device = scores.device
        if on is None or on[0] != device:
            on = (device, *(torch.from_numpy(a).to(device) for a in (s_ptr, s_idx, t_ptr, t_idx)),
                  None if unavailable is None else unavailable.to(device), discount.to(device), ideal.to(device))
        hidden_users = None if no_user is None else torch.from_numpy(no_user[users]).to(device)
        hits, n_targets = _chunk_hits(scores, torch.from_numpy(users).to(device), on, hidden_users, n_items, max_k)
        _record(values, slice(start, start + len(users)), hits, n_targets, ks, max_k, on[-2], on[-1])
    return eval_users, values




def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic over n_pos * n_neg)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct value: ranks first+1 .. first+count
    first = np.cumsum(counts) - counts
    mean_rank = first + (counts + 1) / 2.0
    rank_sum = mean_rank[inverse][labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
