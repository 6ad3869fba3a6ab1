"""What every model family shares: the `embed` interface and a BPR batch loss built on it."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class RecModel(nn.Module):
    """A family: `embed(graph) -> (user_emb, item_emb)`; scores are dot products.

    `inductive` families can embed nodes added to the graph after training, from their features
    and edges; transductive ones hold one learned vector per training node and must retrain.
    """

    inductive = False

    def embed(self, graph) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def regularised(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> list[torch.Tensor]:
        """Tensors whose squared norm the L2 term penalises for this batch (LightGCN: layer 0)."""
        return []

    def batch_loss(self, graph, users, pos, neg, edge_ids: Optional[torch.Tensor] = None):
        """(ranking loss, L2 term before its coefficient) for a batch of (user, pos, neg)."""
        user_emb, item_emb = self.embed(graph)
        return bpr(user_emb[users], item_emb[pos], item_emb[neg]), self.l2_term(users, pos, neg)

    def l2_term(self, users, pos, neg) -> torch.Tensor:
        tensors = self.regularised(users, pos, neg)
        if not tensors:
            return torch.zeros(())
        return 0.5 * sum(t.pow(2).sum() for t in tensors) / len(users)


def bpr(u: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(<u, p> - <u, n>)."""
    return F.softplus(-((u * p).sum(1) - (u * n).sum(1))).mean()
