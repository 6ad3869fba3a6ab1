"""GCN (Kipf and Welling, ICLR 2017) as the transductive baseline for recommendation.

ID embeddings as input, then per layer H(k+1) = ReLU(A' H(k) W_k) with A' the symmetric
normalisation of A + I; no ReLU after the last layer, whose output is the embedding. Every node's
vector is learned for that node, so a node added later has none: it needs retraining.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys.graph.build import RecGraph
from recsys.graph.propagation import SpMM
from recsys.models.base import RecModel


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

    def encode(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        adj = graph.norm_adj(self_loops=True)
        h = torch.cat([self.user_emb.weight, self.item_emb.weight])
        for k, w in enumerate(self.weights):
            h = SpMM.apply(adj, w(h))  # A'(H W) = (A' H) W, cheaper when the width is fixed
            if k < len(self.weights) - 1:
                h = torch.relu(h)
        return h[: self.n_users], h[self.n_users:]

    def regularised(self, users, pos, neg) -> list[torch.Tensor]:
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
