"""GraphMultiTask: a multi-task head (recsys/models/mmoe.py) on top of a GNN bottom.

The head scores (user, candidate) pairs from the bottom's embeddings and the nodes' features; the
bottom is either frozen (embeddings computed once) or trained end to end with the head.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class GraphMultiTask(nn.Module):
    """A multi-task head on a shared GNN bottom. Input rows are (user, candidate, candidate is a
    user) index triples; the head sees [u, c, u * c, user features, candidate features] where u, c
    are the bottom's embeddings (a candidate user's from the user table, a job's from the item
    table) and the candidate's feature block is that of its kind (zeros for the other kind). For a
    candidate member, the product of the two members' feature vectors is added: with one-hot
    attributes it is "same university", "same company", the signal friendships form on.

    frozen: the bottom's embeddings are computed once and only the head trains; otherwise every
    forward pass re-embeds the graph and gradients reach the bottom (end to end)."""

    def __init__(self, bottom: nn.Module, graph, head_factory: Callable[[int], nn.Module], frozen: bool = True):
        super().__init__()
        self.bottom, self.graph, self.frozen = bottom, graph, frozen
        self._graphs = {graph.device: graph}  # the graph placed on each device the model visits
        # buffers, not state: they move with the model (.to) and are not saved with it
        self.register_buffer("user_x", graph.user_features if graph.user_features is not None
                             else torch.zeros(graph.n_users, 0), persistent=False)
        self.register_buffer("item_x", graph.item_features if graph.item_features is not None
                             else torch.zeros(graph.n_items, 0), persistent=False)
        self.register_buffer("cached_users", None, persistent=False)
        self.register_buffer("cached_items", None, persistent=False)
        if frozen:
            for p in bottom.parameters():
                p.requires_grad_(False)
            self.cached_users, self.cached_items = (t.detach() for t in self._embed())
        dim = self._embed()[0].shape[1]
        self.d_in = 3 * dim + 3 * self.user_x.shape[1] + self.item_x.shape[1]
        self.head = head_factory(self.d_in)
        self.head_tasks = self.head(torch.zeros(1, self.d_in)).shape[1]

    def _embed(self):
        if self.cached_users is not None:
            return self.cached_users, self.cached_items
        device = self.user_x.device
        if device not in self._graphs:
            self._graphs[device] = self.graph.to(device)
        with torch.set_grad_enabled(not self.frozen and self.training):
            return self.bottom.embed(self._graphs[device])

    def inputs(self, rows: torch.Tensor) -> torch.Tensor:
        users_emb, items_emb = self._embed()
        u, c, is_user = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2] > 0.5
        # Both lookups run for every row and one of them is discarded, so a job index must also be
        # a valid row of the user tables and vice versa: clamp, the discarded value does not matter.
        as_user, as_item = c.clamp(max=len(users_emb) - 1), c.clamp(max=len(items_emb) - 1)
        ue = users_emb[u]
        ce = torch.where(is_user[:, None], users_emb[as_user], items_emb[as_item])
        cand_user_x = self.user_x[as_user] * is_user[:, None]
        cand_item_x = self.item_x[as_item] * ~is_user[:, None]
        ux = self.user_x[u]
        return torch.cat([ue, ce, ue * ce, ux, cand_user_x, ux * cand_user_x, cand_item_x], dim=1)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head(self.inputs(rows))

    def gate_weights(self, rows: torch.Tensor) -> torch.Tensor:
        return self.head.gate_weights(self.inputs(rows))
