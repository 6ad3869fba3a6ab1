"""Matrix factorisation (BPR-MF, Rendle et al., UAI 2009): the no-propagation baseline.

One learned vector per user and per item; a score is their dot product (or cosine). Trained with
the same samplers and objectives as every family (recsys/train.py): BPR or sampled softmax, L2 on
the batch's vectors. A step touches only the batch's rows, so an epoch costs time linear in the
interaction log, and the model is the cheapest one a team can retrain at scale. Transductive: a
node added after training has no vector.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys.models.base import RecModel


class MF(RecModel):
    def __init__(self, n_users: int, n_items: int, *, dim: int = 64):
        super().__init__()
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    @classmethod
    def from_config(cls, cfg, graph, seed: int = 0) -> "MF":
        return cls(graph.n_users, graph.n_items, dim=cfg.dim)

    def encode(self, graph=None, part=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables (`part`'s columns of them, for a training worker that holds them: recsys/dist.py)."""
        tables = self.user_emb.weight, self.item_emb.weight
        return tables if part is None else (part.of(tables[0]), part.of(tables[1]))

    def batch_loss(self, graph, users, pos, neg, edge_ids=None, part=None):
        """The objective and L2 from the batch's rows only (no whole-table product); on `part`'s
        columns of the tables when given."""
        if part is None:
            u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
            return self.ranking_loss(u, p, n), self.penalty(u, p, n)
        users_w, items_w = self.encode(part=part)
        u, p, n = users_w[users], items_w[pos], items_w[neg]
        return self.part_losses(u, p, n, self.penalty(u, p, n, part), part)

    def split_columns(self) -> tuple[str, ...]:
        return () if self.cosine else ("user_emb.weight", "item_emb.weight")
