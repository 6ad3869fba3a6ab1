"""GCN (Kipf and Welling, ICLR 2017) as the transductive baseline for recommendation.

ID embeddings as input, then per layer H(k+1) = LeakyReLU(A' H(k) W_k) with A' the symmetric
normalisation of A + I; no activation after the last layer, whose output is the embedding. Every
node's vector is learned for that node, so a node added later has none: it needs retraining.

The activation is LeakyReLU with slope 0.2 (NGCF's choice for the same layer), not Kipf and
Welling's ReLU. With ReLU the family collapsed on a sparse network: at initialisation the scores
are near zero (two averaging layers shrink the vectors), the first Adam steps shrink them further,
units go dead, and a node whose layer-1 units are all dead has a zero vector and no gradient: the
loss stays at ln 2. The leak keeps a gradient through every unit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys.graph.build import RecGraph
from recsys.graph.propagation import SpMM
from recsys.models.base import RecModel

NEGATIVE_SLOPE = 0.2


class GCN(RecModel):
    def __init__(self, n_users: int, n_items: int, *, dim: int = 64, layers: int = 2):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.weights = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "GCN":
        return cls(graph.n_users, graph.n_items, dim=cfg.dim, layers=cfg.layers)

    def encode(self, graph: RecGraph, part=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every node's final vector. On a training worker that holds `part` (recsys/dist.py): its
        block of the output columns of every layer, from the whole input of the layer (the workers'
        blocks gathered), so each computes 1/W of every product; its final vectors are that block."""
        adj = graph.norm_adj(self_loops=True)
        tables = [self.user_emb.weight, self.item_emb.weight]
        h = torch.cat(tables) if part is None else part.gather(torch.cat([part.of(t) for t in tables]))
        for k, w in enumerate(self.weights):
            h = SpMM.apply(adj, w(h) if part is None else h @ part.of(w.weight).T)  # A'(H W) = (A' H) W,
            if k < len(self.weights) - 1:  # cheaper when the width is fixed
                h = F.leaky_relu(h, NEGATIVE_SLOPE)
                h = h if part is None else part.gather(h)
        return h[: self.n_users], h[self.n_users:]

    def batch_loss(self, graph, users, pos, neg, edge_ids=None, part=None):
        """The objective and L2 (on the batch's layer-0 rows); on a training worker, from its columns."""
        if part is None:
            return super().batch_loss(graph, users, pos, neg, edge_ids)
        user_w, item_w = self.encode(graph, part)
        first_u, first_i = part.of(self.user_emb.weight), part.of(self.item_emb.weight)
        return self.part_losses(user_w[users], item_w[pos], item_w[neg],
                                self.penalty(first_u[users], first_i[pos], first_i[neg], part), part)

    def split_columns(self) -> tuple[str, ...]:
        """The ID tables by columns and the layers' weights by rows (their output columns), without
        cosine scores, whose norms need every column."""
        return () if self.cosine else ("user_emb.weight", "item_emb.weight")

    def split_rows(self) -> tuple[str, ...]:
        return () if self.cosine else tuple(f"weights.{k}.weight" for k in range(len(self.weights)))

    def regularised(self, users, pos, neg) -> list[torch.Tensor]:
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
