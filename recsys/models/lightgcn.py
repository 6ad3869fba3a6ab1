"""LightGCN (He et al., SIGIR 2020), as in the paper.

No weight matrices, no nonlinearity: E(k+1) = D^-1/2 A D^-1/2 E(k), and the final embedding is
the mean of layers 0..K. The only parameters are the layer-0 ID embeddings. Training uses BPR with
L2 on the batch's layer-0 embeddings (the paper's eq. 15); see recsys/train.py.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from recsys.graph.build import RecGraph


class LightGCNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A; the gradient is A^T g = A g, so no transpose is built."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, torch.sparse.mm(ctx.adj, grad)


def propagate(adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of x, Ax, A^2x, ..., A^K x."""
    total = x
    for _ in range(layers):
        x = _SymmetricSpMM.apply(adj, x)
        total = total + x
    return total / (layers + 1)


class LightGCN(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3):
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.user_emb = nn.Embedding(n_users, dim)
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    def embed(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after K propagation steps over the whole graph."""
        e0 = torch.cat([self.user_emb.weight, self.item_emb.weight])
        out = propagate(graph.norm_adj(), e0, self.layers)
        return out[: self.n_users], out[self.n_users:]

    def layer0(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ID embeddings the L2 penalty applies to."""
        return self.user_emb(users), self.item_emb(items)
