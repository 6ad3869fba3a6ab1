"""What every model family shares: the `embed` interface, the ranking objectives and the L2 term.

A family implements `encode(graph) -> (user_vectors, item_vectors)`; `embed` is what everything
downstream scores with (evaluation, snapshots, the served model): the same vectors, or the same
vectors scaled to unit length when the model scores by cosine. Scores are dot products of the
embeddings either way.

A training batch is B positives (user, item) and a (B, k) array of negatives. Objectives:
  bpr      mean over the B * k pairs of -log sigmoid(s(u, p) - s(u, n))   (PinSage: its hinge)
  softmax  sampled softmax: cross-entropy of the positive among itself and its k negatives, with
           logits s / temperature (with cosine scores this is the InfoNCE / SSM loss)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

OBJECTIVES = ("bpr", "softmax")


class RecModel(nn.Module):
    """`inductive` families can embed nodes added to the graph after training, from their features
    and edges; transductive ones hold one learned vector per training node and must retrain."""

    inductive = False
    cosine = False        # score by cosine: embed() returns unit-length vectors
    objective = "bpr"
    temperature = 0.1
    l2_form = "occurrence"  # train.l2_form (penalty)

    def encode(self, graph) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def on_epoch_start(self, graph, epoch: int) -> None:
        """Called by the training loop before each epoch (sampling families redraw or reseed here)."""

    def embed(self, graph, **options) -> tuple[torch.Tensor, torch.Tensor]:
        """Final vectors; `options` go to the family's encode (GraphSAGE: `map_chunks`)."""
        users, items = self.encode(graph, **options)
        if self.cosine:
            return F.normalize(users, dim=-1), F.normalize(items, dim=-1)
        return users, items

    def id_tables(self) -> dict[str, str]:
        """The state entries indexed by user or by item id ({name: "user" | "item"}): the family's ID
        embeddings, named user_* / item_* (a warm start, recsys/warm.py, moves their rows by id)."""
        return {f"{name}.weight": name.split("_", 1)[0] for name, module in self.named_modules()
                if isinstance(module, nn.Embedding) and name.split("_", 1)[0] in ("user", "item")}

    def split_columns(self) -> tuple[str, ...]:
        """The ID tables that training workers split by columns (recsys/dist.py), each training its block
        on whole batches; none (the workers split each batch instead) unless the family's scores are
        dot products of rows that every column reaches alike (LightGCN, MF), and never for cosine
        scores, whose norms need every column. Such a family's batch_loss and encode take `part`."""
        return ()

    def split_rows(self) -> tuple[str, ...]:
        """The weight matrices that training workers split by rows alongside `split_columns` (GCN's:
        a Linear's rows make its output columns, so a worker computes its columns of every layer)."""
        return ()

    def set_objective(self, objective: str, temperature: float = 0.1) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.objective, self.temperature = objective, temperature

    def regularised(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> list[torch.Tensor]:
        """(user, positive, negative) tensors whose squared norm the L2 term penalises (LightGCN: layer 0)."""
        return []

    def batch_loss(self, graph, users, pos, neg, edge_ids: Optional[torch.Tensor] = None):
        """(ranking loss, L2 term before its coefficient) for B positives and (B, k) negatives."""
        user_emb, item_emb = self.encode(graph)
        return self.ranking_loss(user_emb[users], item_emb[pos], item_emb[neg]), self.l2_term(users, pos, neg)

    def ranking_loss(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """u, p: (B, d); n: (B, k, d)."""
        if self.cosine:
            u, p, n = F.normalize(u, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
        return self.loss_of(*scores(u, p, n))

    def part_losses(self, u, p, n, reg: torch.Tensor, part) -> tuple[torch.Tensor, torch.Tensor]:
        """(ranking loss, L2 term) from rows u, p, n and an L2 term that hold `part`'s columns only (one
        training worker's, recsys/dist.py): the scores and the term summed over the workers first."""
        pos, neg = scores(u, p, n)
        pos, neg, reg = part.total(pos, neg, reg)
        return self.loss_of(pos, neg), reg

    def loss_of(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The objective from the scores of the positives (B, 1) and of their negatives (B, k)."""
        if self.objective == "softmax":
            logits = torch.cat([pos, neg], dim=1) / self.temperature
            return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))
        return self.pairwise(pos, neg)

    def pairwise(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR: mean of -log sigmoid(s(u, p) - s(u, n)) over every (positive, negative) pair."""
        return F.softplus(neg - pos).mean()

    def l2_term(self, users, pos, neg) -> torch.Tensor:
        tensors = self.regularised(users, pos, neg)
        return self.penalty(*tensors) if tensors else torch.zeros((), device=users.device)

    def penalty(self, u: torch.Tensor, p: torch.Tensor, n: torch.Tensor, part=None) -> torch.Tensor:
        """The L2 term of a batch whose layer-0 rows are u, p, n, in the form train.l2_form names:
        `occurrence` (the paper's l2 below) or `row` (row_l2 of the whole ID tables, or of `part`'s columns)."""
        if self.l2_form == "row":
            users, items = self.user_emb.weight, self.item_emb.weight
            return row_l2(users, items) if part is None else row_l2(part.of(users), part.of(items))
        return l2(u, p, n)


def scores(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The dot products of u (B, d) with p (B, d) and with each of n (B, k, d): (B, 1) and (B, k)."""
    return (u * p).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", u, n)


def row_l2(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """L2 paid once per row, whatever its degree: half the mean squared norm of the user table plus
    twice the item table's (an item stands as positive and as negative). On a log where every user
    and item is equally frequent this equals l2's expectation; on a dense log a user with 130
    positives no longer pays it 130 times an epoch (issue 21)."""
    return 0.5 * (users.pow(2).sum(1).mean() + 2 * items.pow(2).sum(1).mean())


def l2(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """LightGCN's L2: half the squared norms over the batch size, each negative weighted 1/k so that
    k negatives per positive cost what one does (the same as repeating each positive k times)."""
    k = n.shape[1] if n.dim() == 3 else 1
    return 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum() / k) / len(u)
