"""The interaction graph in DGL, and the normalised adjacency LightGCN propagates over."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import dgl
import numpy as np
import torch

from recsys.data.types import IndexedData

USER_ITEM = ("user", "interacts", "item")
ITEM_USER = ("item", "interacted_by", "user")
FRIEND = ("user", "friend", "user")


@dataclass
class RecGraph:
    """A DGL heterograph of training edges, plus derived matrices cached on first use."""

    g: dgl.DGLHeteroGraph
    n_users: int
    n_items: int
    use_social: bool = False
    _norm_adj: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    def norm_adj(self) -> torch.Tensor:
        if self._norm_adj is None:
            self._norm_adj = normalized_adjacency(self)
        return self._norm_adj


def build_graph(data: IndexedData, social_edges: bool = False) -> RecGraph:
    """User->item and item->user edges from training pairs; user<->user friendships if asked."""
    u = torch.from_numpy(data.train[:, 0])
    i = torch.from_numpy(data.train[:, 1])
    edges = {USER_ITEM: (u, i), ITEM_USER: (i, u)}
    if social_edges:
        s = torch.from_numpy(np.concatenate([data.social[:, 0], data.social[:, 1]]))
        d = torch.from_numpy(np.concatenate([data.social[:, 1], data.social[:, 0]]))
        edges[FRIEND] = (s, d)
    g = dgl.heterograph(edges, num_nodes_dict={"user": data.n_users, "item": data.n_items})
    return RecGraph(g, data.n_users, data.n_items, social_edges)


def normalized_adjacency(graph: RecGraph) -> torch.Tensor:
    """D^-1/2 A D^-1/2 over users then items (node u is row u, item i is row n_users + i), as CSR.

    A is symmetric: both directions of every edge are in the DGL graph. Isolated nodes (cold users
    and items) have degree zero and get an all-zero row, so they keep only their layer-0 embedding.
    """
    g, nu = graph.g, graph.n_users
    src, dst = g.edges(etype=USER_ITEM)
    rows = [src, dst + nu]
    cols = [dst + nu, src]
    if graph.use_social and FRIEND in g.canonical_etypes:
        s, d = g.edges(etype=FRIEND)
        rows.append(s)
        cols.append(d)
    rows_t = torch.cat(rows).long()
    cols_t = torch.cat(cols).long()
    deg = torch.bincount(rows_t, minlength=graph.n_nodes).float()
    inv_sqrt = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    values = inv_sqrt[rows_t] * inv_sqrt[cols_t]
    coo = torch.sparse_coo_tensor(torch.stack([rows_t, cols_t]), values, (graph.n_nodes, graph.n_nodes))
    return coo.coalesce().to_sparse_csr()
