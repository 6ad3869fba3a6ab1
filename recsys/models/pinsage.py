"""PinSage (Ying et al., KDD 2018) for user->item recommendation.

Items are the nodes PinSage convolves over. An item's neighbourhood is not its graph neighbours
but the T items most visited by random walks item -> user -> item started from it (with restart
probability; DGL's PinSAGESampler), and the visit counts weight the neighbours:

    h_N(v)  = sum_u c_uv ReLU(Q h_u + q) / sum_u c_uv           (importance pooling)
    h_v'    = normalise(ReLU(W [h_v || h_N(v)] + w))

`pooling` chooses the neighbourhood and its weights, to test what importance pooling buys:
  importance  the T most visited items, weighted by visit counts (the paper's; the default)
  mean        the same T random-walk neighbours, equal weights
  uniform     T items drawn uniformly (without replacement) from the distinct items two hops away
              (item -> user -> item, the item itself left out), equal weights: GraphSAGE-style sampling

Layer 0 is a projection of item features (plus learned ID embeddings when there are none).
Users get vectors from their items (the mean of their training items' final vectors), so scores
stay dot products and the family fits the common interface. The loss is PinSage's max-margin:
mean of ReLU(<u, n> - <u, p> + margin). Neighbourhoods are re-drawn at every epoch.
"""
from __future__ import annotations

from typing import Optional

import dgl
import dgl.function as fn
import torch
import torch.nn.functional as F
from torch import nn

from recsys.graph.build import ITEM_USER, USER_ITEM, RecGraph
from recsys.models.base import RecModel

POOLING = ("importance", "mean", "uniform")


class WeightedPoolingConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.Q = nn.Linear(dim, dim)
        self.W = nn.Linear(2 * dim, dim)

    def forward(self, neighbours: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        with neighbours.local_scope():
            neighbours.ndata["n"] = torch.relu(self.Q(h))
            neighbours.edata["c"] = neighbours.edata["weights"].float()
            neighbours.update_all(fn.u_mul_e("n", "c", "m"), fn.sum("m", "pooled"))
            neighbours.update_all(fn.copy_e("c", "c"), fn.sum("c", "total"))
            total = neighbours.ndata["total"].clamp(min=1).unsqueeze(1)
            out = torch.relu(self.W(torch.cat([h, neighbours.ndata["pooled"] / total], dim=1)))
            return F.normalize(out, dim=1)


class PinSage(RecModel):
    def __init__(self, n_users: int, n_items: int, *, dim: int = 64, layers: int = 2, num_neighbors: int = 10,
                 num_walks: int = 50, restart_prob: float = 0.5, num_traversals: int = 3, margin: float = 0.5,
                 item_features: Optional[torch.Tensor] = None, seed: int = 0, pooling: str = "importance"):
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING}")
        self.n_users, self.n_items = n_users, n_items
        self.pooling = pooling
        self.walk = dict(num_traversals=num_traversals, termination_prob=restart_prob,
                         num_random_walks=num_walks, num_neighbors=num_neighbors)
        self.margin, self.seed = margin, seed
        self.item_proj = nn.Linear(item_features.shape[1], dim) if item_features is not None else None
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.convs = nn.ModuleList(WeightedPoolingConv(dim) for _ in range(layers))
        self._neighbourhoods: Optional[list[dgl.DGLGraph]] = None
        self._two_hop: Optional[tuple[RecGraph, dgl.DGLGraph]] = None  # uniform: built once per graph

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "PinSage":
        """cfg: the model section; its `pinsage` options are passed as keywords."""
        return cls(graph.n_users, graph.n_items, dim=cfg.dim, layers=cfg.layers, item_features=graph.item_features,
                   seed=seed, **cfg.pinsage.model_dump())

    def neighbourhoods(self, graph: RecGraph) -> list[dgl.DGLGraph]:
        """One item-item graph per layer, edges neighbour -> item with their pooling `weights`:
        each item's T neighbours under the model's `pooling` (see the module docstring)."""
        items = torch.arange(graph.n_items)
        if self.pooling == "uniform":
            two_hop = self.two_hop_items(graph)
            drawn = [dgl.sampling.sample_neighbors(two_hop, items, self.walk["num_neighbors"]) for _ in self.convs]
            for nbrs in drawn:
                nbrs.edata["weights"] = torch.ones(nbrs.num_edges(), dtype=torch.int64)
            return drawn
        bipartite = dgl.edge_type_subgraph(graph.g, [USER_ITEM, ITEM_USER])
        sampler = dgl.sampling.PinSAGESampler(bipartite, "item", "user", **self.walk)
        drawn = [sampler(items) for _ in self.convs]
        if self.pooling == "mean":
            for nbrs in drawn:
                nbrs.edata["weights"] = torch.ones_like(nbrs.edata["weights"])
        return drawn

    def two_hop_items(self, graph: RecGraph) -> dgl.DGLGraph:
        """Item -> item wherever the two share a user (each pair once, no self-loops)."""
        if self._two_hop is None or self._two_hop[0] is not graph:
            reachable = dgl.metapath_reachable_graph(graph.g, [ITEM_USER, USER_ITEM])
            self._two_hop = (graph, dgl.remove_self_loop(reachable))
        return self._two_hop[1]

    def on_epoch_start(self, graph: RecGraph, epoch: int) -> None:
        dgl.seed(self.seed + epoch)
        self._neighbourhoods = self.neighbourhoods(graph)

    def item_vectors(self, graph: RecGraph) -> torch.Tensor:
        if self._neighbourhoods is None:
            dgl.seed(self.seed)
            self._neighbourhoods = self.neighbourhoods(graph)
        h = self.item_emb.weight
        if self.item_proj is not None:
            h = h + self.item_proj(graph.item_features)
        for conv, nbrs in zip(self.convs, self._neighbourhoods):
            h = conv(nbrs, h)
        return h

    @staticmethod
    def _user_sums(graph: RecGraph, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, i = graph.g.edges(etype=USER_ITEM)
        sums = torch.zeros(graph.n_users, items.shape[1]).index_add_(0, u.long(), items[i.long()])
        return sums, torch.bincount(u.long(), minlength=graph.n_users).unsqueeze(1).float()

    def encode(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """A user is the mean of their training items; a user without any gets the zero vector."""
        items = self.item_vectors(graph)
        sums, counts = self._user_sums(graph, items)
        return sums / counts.clamp(min=1), items

    def batch_loss(self, graph: RecGraph, users, pos, neg, edge_ids=None):
        items = self.item_vectors(graph)
        sums, counts = self._user_sums(graph, items)
        # Leave the positive out of the user's mean, or the model would learn to find it in itself.
        u = (sums[users] - items[pos]) / (counts[users] - 1).clamp(min=1)
        reg = 0.5 * (self.item_emb(pos).pow(2).sum() + self.item_emb(neg).pow(2).sum() / neg.shape[1]) / len(users)
        return self.ranking_loss(u, items[pos], items[neg]), reg

    def pairwise(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """PinSage's max-margin hinge in place of BPR: max(0, s(u, n) - s(u, p) + margin)."""
        return torch.relu(neg - pos + self.margin).mean()
