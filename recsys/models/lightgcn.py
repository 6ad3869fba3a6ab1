"""LightGCN (He et al., SIGIR 2020), as in the paper.

No weight matrices, no nonlinearity: E(k+1) = D^-1/2 A D^-1/2 E(k), and the final embedding is
the mean of layers 0..K. The only parameters are the layer-0 ID embeddings. Training uses BPR with
L2 on the batch's layer-0 embeddings (the paper's eq. 15); see recsys/train.py.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys.graph.build import RecGraph, SparseOperator
from recsys.models.base import RecModel


class SpMM(torch.autograd.Function):
    """y = A x with a CSR A; the gradient A^T g uses the stored transpose (A itself when symmetric),
    which is several times faster than autograd through a COO product."""

    @staticmethod
    def forward(ctx, op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
        ctx.op = op
        return torch.sparse.mm(op.matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.op.transpose, grad)


def propagate(op: SparseOperator, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of x, Ax, A^2x, ..., A^K x."""
    total = x
    for _ in range(layers):
        x = SpMM.apply(op, x)
        total = total + x
    return total / (layers + 1)


class LightGCN(RecModel):
    """Plain LightGCN by default. With node features (`user_features` / `item_features` given),
    the variant that brings a weight matrix and ReLU back per layer: layer 0 is the ID embedding
    concatenated with a linear projection of the features, E(k+1) = ReLU(A E(k) W_k), and the
    final embedding is still the mean over layers. Output width: dim, or 2 * dim with features."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3,
                 user_features: torch.Tensor | None = None, item_features: torch.Tensor | None = None):
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.with_features = user_features is not None or item_features is not None
        if self.with_features:
            self.user_proj = nn.Linear(user_features.shape[1], dim) if user_features is not None else None
            self.item_proj = nn.Linear(item_features.shape[1], dim) if item_features is not None else None
            self.weights = nn.ModuleList(nn.Linear(2 * dim, 2 * dim) for _ in range(layers))

    def _layer0(self, graph: RecGraph) -> torch.Tensor:
        ids = torch.cat([self.user_emb.weight, self.item_emb.weight])
        if not self.with_features:
            return ids
        parts = []
        for proj, feats, n in ((self.user_proj, graph.user_features, self.n_users),
                               (self.item_proj, graph.item_features, self.n_items)):
            parts.append(proj(feats) if proj is not None else torch.zeros(n, ids.shape[1]))
        return torch.cat([ids, torch.cat(parts)], dim=1)

    def embed(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after K propagation steps over the whole graph."""
        e0 = self._layer0(graph)
        if not self.with_features:
            out = propagate(graph.norm_adj(), e0, self.layers)
        else:
            x, total = e0, e0
            for w in self.weights:
                x = torch.relu(w(SpMM.apply(graph.norm_adj(), x)))
                total = total + x
            out = total / (self.layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def regularised(self, users, pos, neg) -> list[torch.Tensor]:
        """The paper's L2 is on the batch's layer-0 (ID) embeddings."""
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
