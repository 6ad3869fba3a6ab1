"""Multi-task heads: MMoE (Ma et al., KDD 2018) and its two baselines.

All three map an input vector x to one logit per task:

  MMoE          N expert MLPs shared by every task; task t mixes the experts' outputs with its own
                softmax gate g_t(x) = softmax(W_t x), then a small tower per task. Tasks that want
                different things can lean on different experts instead of fighting over one vector.
  SharedBottom  one MLP shared by every task, then the towers (the classic hard-sharing baseline).
  single task   SharedBottom with one task, one model per task.

The input is whatever the caller builds: tabular features (the Census-Income check), or a
(user, candidate) pair from a GNN bottom (recsys/models/graph_multitask.py, GraphMultiTask).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """Linear layers between consecutive sizes, ReLU (and dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Experts(nn.Module):
    """N independent MLPs of the same shape evaluated together: the first layer as one wide matrix
    product, later layers as batched per-expert products. (batch, d_in) -> (batch, N, out)."""

    def __init__(self, d_in: int, n_experts: int, sizes: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.n, self.sizes = n_experts, list(sizes)
        self.first = nn.Linear(d_in, n_experts * sizes[0])
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = torch.empty(n_experts, a, b)
            for e in range(n_experts):  # the same initialisation nn.Linear would give each expert
                nn.init.kaiming_uniform_(w[e].T, a=5 ** 0.5)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(n_experts, 1, b).uniform_(-a ** -0.5, a ** -0.5)))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.first(x).view(len(x), self.n, -1))).transpose(0, 1)  # (N, B, h)
        for w, b in zip(self.weights, self.biases):
            h = self.dropout(torch.relu(torch.baddbmm(b, h, w)))
        return h.transpose(0, 1)


class MMoE(nn.Module):
    def __init__(self, d_in: int, n_tasks: int, n_experts: int = 8, expert_dim: int = 16,
                 expert_hidden: Sequence[int] = (), tower_hidden: Sequence[int] = (8,), dropout: float = 0.0):
        super().__init__()
        self.n_tasks, self.n_experts = n_tasks, n_experts
        self.experts = Experts(d_in, n_experts, [*expert_hidden, expert_dim], dropout)
        self.gates = nn.ModuleList(nn.Linear(d_in, n_experts) for _ in range(n_tasks))
        self.towers = nn.ModuleList(mlp([expert_dim, *tower_hidden, 1], dropout, last_activation=False)
                                    for _ in range(n_tasks))

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tasks, experts), each row a probability distribution over the experts."""
        return torch.stack([torch.softmax(g(x), dim=-1) for g in self.gates], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = self.experts(x)                                            # (B, E, D)
        gates = self.gate_weights(x)                                         # (B, T, E)
        mixed = gates @ experts                                              # (B, T, D)
        return torch.cat([tower(mixed[:, t]) for t, tower in enumerate(self.towers)], dim=1)


class SharedBottom(nn.Module):
    def __init__(self, d_in: int, n_tasks: int, bottom: Sequence[int] = (64, 32), tower_hidden: Sequence[int] = (8,),
                 dropout: float = 0.0):
        super().__init__()
        self.n_tasks = n_tasks
        self.bottom = mlp([d_in, *bottom], dropout)
        self.towers = nn.ModuleList(mlp([bottom[-1], *tower_hidden, 1], dropout, last_activation=False)
                                    for _ in range(n_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bottom(x)
        return torch.cat([tower(h) for tower in self.towers], dim=1)


HEADS = ("mmoe", "shared_bottom", "single_task")


def build_head(kind: str, d_in: int, n_tasks: int, n_experts: int = 8, expert_dim: int = 16,
               expert_hidden: Sequence[int] = (), tower_hidden: Sequence[int] = (8,), dropout: float = 0.0
               ) -> list[nn.Module]:
    """The models to train for `kind`: one multi-task head, or one single-task head per task.
    The baselines get a bottom as wide as MMoE's experts together, so capacity is comparable."""
    if kind == "mmoe":
        return [MMoE(d_in, n_tasks, n_experts, expert_dim, expert_hidden, tower_hidden, dropout)]
    bottom = [*expert_hidden, expert_dim * n_experts] if expert_hidden else [expert_dim * n_experts]
    if kind == "shared_bottom":
        return [SharedBottom(d_in, n_tasks, bottom, tower_hidden, dropout)]
    if kind == "single_task":
        return [SharedBottom(d_in, 1, bottom, tower_hidden, dropout) for _ in range(n_tasks)]
    raise ValueError(f"unknown multi-task head {kind!r}; choose one of {', '.join(HEADS)}")
