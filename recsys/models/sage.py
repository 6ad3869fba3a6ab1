"""GraphSAGE (Hamilton et al., NeurIPS 2017): the inductive baseline.

A node's layer-k vector is W_self h_v + W_neigh AGG({h_u : u in N(v)}), with AGG one of
  mean, sum, max  element-wise over the neighbours' vectors;
  pool            element-wise max after a learned transform ReLU(Q h_u + q).
Layer 0 is a per-type linear projection of node features (attributes, text embeddings), so a node
added after training gets a vector from its features and edges, without retraining. A node type
without features falls back to learned ID embeddings (and is then transductive).

Training runs on mini-batches: for the batch's users, positive and negative items, DGL's
neighbour sampler draws `fanouts` neighbours per layer (the batch's own training edges are hidden,
both directions, so a positive is never read off its own edge). A node reads min(degree, fan-out)
neighbours, so a step's cost is bounded by the batch and the fan-outs, not the graph; below that
bound it grows with the degrees, as the catalogue fills and jobs gain training edges, and fewer
sampled members coincide in a larger population (bench/results/retrain_scale.md has the figures).
The bound is 3 x batch x (1 + f1 + f1 x f2) input nodes a step at fan-outs (f1, f2), reached only
when no two draws coincide.

So by default (train.max_steps_per_epoch=auto) GraphSAGE, like the whole-graph families, takes 64
steps per epoch in batches that grow with the log: the edges a step samples grow with its batch,
while the distinct nodes it reads cannot pass the graph's, so an epoch's cost is at most linear in
the log; null keeps fixed batches.

Inference for the whole graph goes layer by layer over all nodes in chunks, as DGL's GraphSAGE
example does, so memory is bounded by the chunk, not by the neighbourhood's growth.

DGL samples on the CPU, where its wheels run. The aggregation is DGL's message passing on the CPU
(its compiled reducers; torch's scatter of a maximum was slower there) and torch on any other
device: mean and sum as one sparse product over the block's edges (EdgeMean), max and pool as a
scatter of the per-edge maximum. The two agree (tests/test_device.py).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import dgl
import dgl.function as fn
import torch
from torch import nn

from recsys.graph.build import RecGraph
from recsys.graph.propagation import EdgeMean
from recsys.models.base import RecModel, l2

AGGREGATORS = ("mean", "sum", "max", "pool")
_REDUCE = {"mean": fn.mean, "sum": fn.sum, "max": fn.max, "pool": fn.max}


class SAGELayer(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, aggregator: str = "mean"):
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {aggregator!r}; choose one of {AGGREGATORS}")
        self.aggregator = aggregator
        self.pool = nn.Linear(in_dim, in_dim) if aggregator == "pool" else None
        self.self_lin = nn.Linear(in_dim, out_dim)
        self.neigh_lin = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, block, h_src: torch.Tensor, use_dgl: Optional[bool] = None) -> torch.Tensor:
        """`block`: a DGL block (sampled) or a whole graph; destination nodes come first in h_src.
        A destination without in-edges aggregates to zero. `use_dgl`: DGL's reducers (default: on the CPU)."""
        messages = torch.relu(self.pool(h_src)) if self.pool is not None else h_src
        return self.self_lin(h_src[:block.num_dst_nodes()]) + self.neigh_lin(self.aggregate(block, messages, use_dgl))

    def aggregate(self, block, messages: torch.Tensor, use_dgl: Optional[bool] = None) -> torch.Tensor:
        """AGG of the source nodes' `messages` at each destination of `block`."""
        n_dst, device = block.num_dst_nodes(), messages.device
        if use_dgl is None:
            use_dgl = device.type == "cpu"
        if use_dgl:
            with block.local_scope():
                block.srcdata["h"] = messages
                block.update_all(fn.copy_u("h", "m"), _REDUCE[self.aggregator]("m", "neigh"))
                neigh = block.dstdata["neigh"]
        elif self.aggregator in ("mean", "sum"):
            src, dst = block.edges()
            neigh = EdgeMean(dst, src, None, n_dst, len(messages), device, normalise=self.aggregator == "mean",
                             sorted_by_dst=False)(messages)
        else:
            src, dst = block.edges()
            index = dst.long().to(device).unsqueeze(1).expand(-1, messages.shape[1])
            neigh = messages.new_zeros(n_dst, messages.shape[1]).scatter_reduce(
                0, index, messages[src.long().to(device)], "amax", include_self=False)
        return neigh


class GraphSAGE(RecModel):

    def __init__(self, n_users: int, n_items: int, *, dim: int = 64, aggregator: str = "mean",
                 fanouts: tuple[int, ...] = (20, 10), user_features: Optional[torch.Tensor] = None,
                 item_features: Optional[torch.Tensor] = None, chunk_size: int = 4096, seed: int = 0):
        """One layer per fan-out."""
        super().__init__()
        layers = len(fanouts)
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.fanouts, self.chunk_size, self.seed = list(fanouts), chunk_size, seed
        self.user_input = _Input(n_users, dim, user_features)
        self.item_input = _Input(n_items, dim, item_features)
        self.inductive = self.user_input.from_features and self.item_input.from_features
        self.layers = nn.ModuleList(SAGELayer(dim, dim, aggregator) for _ in range(layers))

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "GraphSAGE":
        s = cfg.sage
        return cls(graph.n_users, graph.n_items, dim=cfg.dim, aggregator=s.aggregator, fanouts=tuple(s.fanouts),
                   user_features=graph.user_features, item_features=graph.item_features, chunk_size=s.chunk_size,
                   seed=seed)

    def on_epoch_start(self, graph: RecGraph, epoch: int) -> None:
        """Neighbour sampling draws from DGL's own generator: seeded per epoch, so runs repeat."""
        dgl.seed(self.seed + epoch)

    def input_vectors(self, nodes: torch.Tensor, graph: RecGraph) -> torch.Tensor:
        """Layer-0 vectors of nodes in the shared node space (users first, then items), on the model's device."""
        nodes = nodes.to(graph.device)
        is_user = nodes < graph.n_users
        out = torch.empty(len(nodes), self.dim, device=graph.device)
        out[is_user] = self.user_input(nodes[is_user], graph.user_features)
        out[~is_user] = self.item_input(nodes[~is_user] - graph.n_users, graph.item_features)
        return out

    def _forward(self, blocks, h: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Layers `first`, ... over `blocks` (one each) from the vectors `h` of the first block's sources."""
        for k, (layer, block) in enumerate(zip(self.layers[first:], blocks), start=first):
            h = layer(block, h)
            if k < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    @property
    def linear_first(self) -> bool:
        """Whether layer 1 can aggregate the features themselves (`_from_inputs`): layer 0 is a projection
        of fixed features for both node types, and the aggregator is linear."""
        return self.inductive and self.layers[0].aggregator in ("mean", "sum")

    def _from_inputs(self, blocks, input_nodes: torch.Tensor, graph: RecGraph) -> torch.Tensor:
        """The last block's destinations' vectors. With `linear_first`, layer 1 aggregates each node's
        features (both types' columns side by side, and a column of ones per type for the projection's
        bias) before projecting them: W_neigh AGG(P x + c) = AGG([x, 1]) [P; c] W_neigh exactly, for a mean
        or a sum. The aggregation then needs no gradient, runs over the features' few columns, and no
        vector of dim columns is made for the input nodes; the projections' and layer 1's weights are
        composed instead (small products)."""
        if not self.linear_first:
            return self._forward(blocks, self.input_vectors(input_nodes, graph))
        z, first = self._stacked(input_nodes, graph), self.layers[0]
        with torch.no_grad():
            neigh = first.aggregate(blocks[0], z)
        u, i = self.user_input.proj, self.item_input.proj
        project = torch.cat([u.weight.T, i.weight.T, u.bias[None], i.bias[None]])
        h = (z[:blocks[0].num_dst_nodes()] @ (project @ first.self_lin.weight.T) + first.self_lin.bias
             + neigh @ (project @ first.neigh_lin.weight.T))
        return self._forward(blocks[1:], torch.relu(h), first=1) if len(self.layers) > 1 else h

    @staticmethod
    def _stacked(nodes: torch.Tensor, graph: RecGraph) -> torch.Tensor:
        """[user features | item features | is user | is item] of `nodes` (users first in the node space)."""
        users, items = graph.user_features, graph.item_features
        assert users is not None and items is not None  # linear_first: both types have features
        du, di = users.shape[1], items.shape[1]
        nodes = nodes.to(graph.device)
        is_user = nodes < graph.n_users
        z = users.new_zeros(len(nodes), du + di + 2)
        z[is_user, :du] = users[nodes[is_user]]
        z[~is_user, du:du + di] = items[nodes[~is_user] - graph.n_users]
        z[is_user, du + di] = 1.0
        z[~is_user, du + di + 1] = 1.0
        return z

    def batch_loss(self, graph: RecGraph, users, pos, neg, edge_ids=None):
        b, k = neg.shape
        seeds, inverse = torch.unique(torch.cat([users, pos + graph.n_users, neg.reshape(-1) + graph.n_users]),
                                      return_inverse=True)
        input_nodes, blocks = self.sample_blocks(graph, seeds.cpu(), None if edge_ids is None else edge_ids.cpu())
        out = self._from_inputs(blocks, input_nodes, graph)
        u, p, n = out[inverse].split([b, b, b * k])
        n = n.reshape(b, k, -1)
        return self.ranking_loss(u, p, n), l2(u, p, n)

    def sample_blocks(self, graph: RecGraph, seeds: torch.Tensor, edge_ids: Optional[torch.Tensor] = None):
        """(input nodes, one block per layer) around `seeds` in the homogeneous graph, the training
        pairs `edge_ids` hidden in both directions: pair k is edge k (user->item) and edge m + k."""
        exclude = None
        if edge_ids is not None:
            exclude = torch.cat([edge_ids, edge_ids + graph.dgl_graph.num_edges("interacts")])
        g, blocks = graph.homogeneous(), []
        if g.device.type != "cpu":
            sampler = dgl.dataloading.NeighborSampler(self.fanouts)
            input_nodes, _, blocks = sampler.sample(g, seeds, exclude_eids=exclude)
            return input_nodes, blocks
        # DGL's fused sampler (neighbours and block in one pass, CPU only); its NeighborSampler picks it only
        # with several threads, but it is the faster with one too (a training worker's)
        mapping: dict = {}  # the sampler's scratch: an id map over the graph's nodes
        for fanout in reversed(self.fanouts):
            blocks.insert(0, g.sample_neighbors_fused(seeds, fanout, exclude_edges=exclude, mapping=mapping))
            seeds = blocks[0].srcdata[dgl.NID]
        return seeds, blocks

    def input_chunk(self, graph: RecGraph, nodes: torch.Tensor) -> torch.Tensor:
        return self.input_vectors(nodes, graph)

    def layer_chunk(self, graph: RecGraph, h: torch.Tensor, k: int, nodes: torch.Tensor) -> torch.Tensor:
        """Layer k's output for `nodes`, from every node's layer k-1 vectors `h` (full neighbourhood)."""
        src, _, (block,) = dgl.dataloading.MultiLayerFullNeighborSampler(1).sample(graph.homogeneous(), nodes)
        y = self.layers[k](block, h[src.to(h.device)])
        return torch.relu(y) if k < len(self.layers) - 1 else y

    def encode(self, graph: RecGraph, map_chunks=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every node, layer by layer over the full neighbourhood, `chunk_size` nodes at a time.
        `map_chunks(fn, chunks)` returns [fn(c) for c in chunks], in order; by default here, in
        this process; the Dask refresh passes one that runs the chunks as tasks on its workers."""
        map_chunks = map_chunks or (lambda fn, chunks: [fn(c) for c in chunks])
        chunks = list(torch.arange(graph.homogeneous().num_nodes()).split(self.chunk_size))
        h = torch.cat(map_chunks(partial(self.input_chunk, graph), chunks))
        for k in range(len(self.layers)):
            h = torch.cat(map_chunks(partial(self.layer_chunk, graph, h, k), chunks))
        return h[: graph.n_users], h[graph.n_users:]


class _Input(nn.Module):
    """Layer 0 for one node type: a projection of its features, or ID embeddings without them."""

    def __init__(self, n: int, dim: int, features: Optional[torch.Tensor]):
        super().__init__()
        self.from_features = features is not None and features.shape[1] > 0
        if features is not None and self.from_features:
            self.proj = nn.Linear(features.shape[1], dim)
        else:
            self.emb = nn.Embedding(n, dim)
            nn.init.normal_(self.emb.weight, std=0.1)

    def forward(self, index: torch.Tensor, features: Optional[torch.Tensor]) -> torch.Tensor:
        if self.from_features and features is not None:
            return self.proj(features[index])
        return self.emb(index)
