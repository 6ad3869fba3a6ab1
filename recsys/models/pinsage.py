"""PinSage (Ying et al., KDD 2018) for user->item recommendation.

Items are the nodes PinSage convolves over. An item's neighbourhood is not its graph neighbours
but the T items most visited by random walks item -> user -> item started from it (with restart
probability; DGL's PinSAGESampler), and the visit counts weight the neighbours:

    h_N(v)  = sum_u c_uv ReLU(Q h_u + q) / sum_u c_uv           (importance pooling)
    h_v'    = normalise(ReLU(W [h_v || h_N(v)] + w))
    z_v     = normalise(G2 ReLU(G1 h_v^(L) + g))                  (the paper's final dense layers)

The final layers (Algorithm 2's G1, G2) let item vectors leave the positive orthant the last
convolution's ReLU confines them to, so that dot products can be negative; z is unit-length, as
each convolution's output is, so the max-margin's margin keeps its scale. With `unit_items` off, z
keeps the length the final layers give it, so an item's norm can carry its popularity, as MF's and
LightGCN's do (on Gowalla's validation split, with the sampled softmax: bench/results/pinsage_gowalla.md,
recipes softmax and softmax_free).

`pooling` chooses the neighbourhood and its weights, to test what importance pooling buys:
  importance  the T most visited items, weighted by visit counts (the paper's; the default)
  mean        the same T random-walk neighbours, equal weights
  uniform     T items drawn uniformly (without replacement) from the distinct items two hops away
              (item -> user -> item, the item itself left out), equal weights: GraphSAGE-style sampling

Layer 0 is a projection of item features (plus learned ID embeddings when there are none).
Users get vectors from their items (the mean of their training items' final vectors), so scores
stay dot products and the family fits the common interface. With `user_embedding`, a learned vector
per user is added to that mean, as MF's user factor: a member's taste beyond the average of what
they touched, at the price of users being transductive (a member added after training has no such
vector: the mean alone).

Neighbourhoods (one item -> item graph per layer) are re-drawn at every epoch; DGL only draws them
(on CPU). The layer maths is torch: a layer's pooling is one sparse product over its edge list
(`EdgeMean`; graphrec's compiled CSR kernel on CPU, torch's product on another device), with no DGL
message passing.

Training is on mini-batches, as in the paper: a batch computes final vectors only for the items
its loss reads, namely its positives, its negatives and, for each user's vector, a sample of at
most `user_items` of the user's other training items (the positive left out; all of them when the
user has that many or fewer). Those items' layer-L vectors come from their layer-(L-1) frontier:
the items themselves and their in-neighbours in layer L's neighbourhood graph, and so on down to
layer 0, so a batch's cost follows its pairs and the neighbourhoods' sizes, not the catalogue.
Full inference (`encode`: evaluation, snapshots) convolves every item at once. The loss is PinSage's
max-margin, mean of ReLU(<u, n> - <u, p> + margin) (`pairwise_loss: bpr` for BPR instead; the run's
`train.loss: softmax` for sampled softmax).
"""
from __future__ import annotations

from typing import Optional

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from recsys.graph.build import FRIEND, ITEM_USER, SIMILAR_USER, USER_ITEM, RecGraph
from recsys.graph.propagation import EdgeMean, indptr_of
from recsys.models.base import RecModel

POOLING = ("importance", "mean", "uniform")
PAIRWISE = ("hinge", "bpr")


class WeightedPoolingConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.Q = nn.Linear(dim, dim)
        self.W = nn.Linear(2 * dim, dim)

    def forward(self, neighbours: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        """Every node of the item -> item graph `neighbours` (edge data `weights`), from every node's `h`."""
        every = torch.arange(neighbours.num_nodes())
        _, dst_rows, pooling = _InEdges(neighbours).pooling(every, every)
        return self.propagate(h, dst_rows, pooling)

    def propagate(self, h_src: torch.Tensor, dst_rows: torch.Tensor, pooling: EdgeMean) -> torch.Tensor:
        """New vectors for len(dst_rows) nodes from the previous layer's vectors `h_src` of a frontier:
        `dst_rows` is each output node's row in it, `pooling` the weighted mean over its neighbours' rows."""
        pooled = pooling(torch.relu(self.Q(h_src)))
        out = torch.relu(self.W(torch.cat([h_src.index_select(0, dst_rows), pooled], dim=1)))
        return F.normalize(out, dim=1)


def distinct(nodes: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the distinct ids among `nodes`, ascending; each entry's row in them): torch.unique's answer
    for ids below n, by marking a length-n table (linear, where unique sorts)."""
    seen = torch.zeros(n, dtype=torch.bool)
    seen[nodes] = True
    ids = seen.nonzero(as_tuple=True)[0]
    row = torch.empty(n, dtype=torch.long)
    row[ids] = torch.arange(len(ids))
    return ids, row[nodes]


class _InEdges:
    """A neighbourhood graph's edges grouped by destination (CSR), to gather any nodes' in-edges."""

    def __init__(self, nbrs: dgl.DGLGraph):
        src, dst = (t.long() for t in nbrs.edges())
        order = torch.argsort(dst, stable=True)
        self.n = nbrs.num_nodes()
        self.src, self.weights = src[order], nbrs.edata["weights"][order]
        self.indptr = indptr_of(torch.bincount(dst, minlength=self.n))

    def of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edge_dst: the row in `nodes` of each edge's destination, ascending; its source node; its weight)."""
        start, deg = self.indptr[nodes], self.indptr[nodes + 1] - self.indptr[nodes]
        edge_dst = torch.repeat_interleave(torch.arange(len(nodes)), deg)
        first = torch.cumsum(deg, 0) - deg  # each destination's first edge among the gathered ones
        eid = start[edge_dst] + torch.arange(len(edge_dst)) - first[edge_dst]
        return edge_dst, self.src[eid], self.weights[eid]

    def pooling(self, nodes: torch.Tensor, frontier: Optional[torch.Tensor] = None,
                device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor, EdgeMean]:
        """For output `nodes`: (the frontier below, their rows in it, the pooling over it). The frontier
        is `nodes` and their in-neighbours (ascending ids), or the given ids when they hold them all.
        Ids stay on the CPU; the rows and the pooling go to `device` (the model's), where they are used."""
        edge_dst, src, weights = self.of(nodes)
        if frontier is None:
            frontier, inverse = distinct(torch.cat([nodes, src]), self.n)
            dst_rows, src_rows = inverse[:len(nodes)], inverse[len(nodes):]
        else:
            row = torch.full((self.n,), -1, dtype=torch.long)
            row[frontier] = torch.arange(len(frontier))
            dst_rows, src_rows = row[nodes], row[src]
        return frontier, dst_rows.to(device), EdgeMean(edge_dst, src_rows, weights, len(nodes), len(frontier), device)


class PinSage(RecModel):
    # A step convolves its batch's items and their sampled neighbourhoods, a frontier that fills the
    # catalogue as degrees grow, so past some log size more, smaller steps repeat a catalogue-wide
    # convolution (module docstring). 1024 steps an epoch leaves batches of 2,048 up to ~2M pairs and
    # grows them past that; 64 steps (much larger batches) lost recall at 100k members
    # (bench/results/retrain_scale.md). The registry's entry holds the bound (auto_steps=1024).

    def __init__(self, n_users: int, n_items: int, *, dim: int = 64, layers: int = 2, num_neighbors: int = 10,
                 num_walks: int = 50, restart_prob: float = 0.5, num_traversals: int = 3, margin: float = 0.5,
                 item_features: Optional[torch.Tensor] = None, seed: int = 0, pooling: str = "importance",
                 user_items: int = 32, pairwise_loss: str = "hinge", user_embedding: bool = False,
                 unit_items: bool = True):
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLING}")
        if pairwise_loss not in PAIRWISE:
            raise ValueError(f"unknown pairwise_loss {pairwise_loss!r}; choose one of {PAIRWISE}")
        if user_items < 1:
            raise ValueError("user_items must be at least 1")
        self.n_users, self.n_items = n_users, n_items
        self.pooling, self.user_items, self.pairwise_loss = pooling, user_items, pairwise_loss
        self.walk = dict(num_traversals=num_traversals, termination_prob=restart_prob,
                         num_random_walks=num_walks, num_neighbors=num_neighbors)
        self.margin, self.seed, self.unit_items = margin, seed, unit_items
        self.item_proj = nn.Linear(item_features.shape[1], dim) if item_features is not None else None
        self.item_emb = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.user_emb = nn.Embedding(n_users, dim) if user_embedding else None
        if self.user_emb is not None:  # zero: training starts from the item mean and learns what it misses.
            # Random vectors outweighed the unit-bounded mean and the ranking started from noise
            # (bench/results/pinsage_gowalla.md, recipe softmax_user)
            nn.init.zeros_(self.user_emb.weight)
        self.convs = nn.ModuleList(WeightedPoolingConv(dim) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self._neighbourhoods: Optional[list[dgl.DGLGraph]] = None
        self._in_edges: Optional[list[_InEdges]] = None
        self._whole: Optional[tuple[torch.device, list]] = None
        self._two_hop: Optional[tuple[RecGraph, dgl.DGLGraph]] = None  # uniform: built once per graph
        self._histories: Optional[tuple] = None  # users' items (CSR)

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "PinSage":
        """cfg: the model section; its `pinsage` options are passed as keywords."""
        return cls(graph.n_users, graph.n_items, dim=cfg.dim, layers=cfg.layers, item_features=graph.item_features,
                   seed=seed, **cfg.pinsage.model_dump())

    # ------------------------------------------------------------ neighbourhoods

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
        bipartite = dgl.edge_type_subgraph(graph.dgl_graph, [USER_ITEM, ITEM_USER])
        sampler = dgl.sampling.PinSAGESampler(bipartite, "item", "user", **self.walk)
        drawn = [sampler(items) for _ in self.convs]
        if self.pooling == "mean":
            for nbrs in drawn:
                nbrs.edata["weights"] = torch.ones_like(nbrs.edata["weights"])
        return drawn

    def two_hop_items(self, graph: RecGraph) -> dgl.DGLGraph:
        """Item -> item wherever the two share a user (each pair once, no self-loops)."""
        if self._two_hop is None or self._two_hop[0] is not graph:
            reachable = dgl.metapath_reachable_graph(graph.dgl_graph, [ITEM_USER, USER_ITEM])
            self._two_hop = (graph, dgl.remove_self_loop(reachable))
        return self._two_hop[1]

    def set_neighbourhoods(self, drawn: list[dgl.DGLGraph]) -> None:
        """Use these item -> item graphs (one per layer) until the next epoch redraws them."""
        if len(drawn) != len(self.convs):
            raise ValueError(f"{len(drawn)} neighbourhood graphs for {len(self.convs)} layers")
        self._neighbourhoods = drawn
        self._in_edges = [_InEdges(nbrs) for nbrs in drawn]
        self._whole = None  # full inference's (rows, pooling) per layer, built when first used

    def on_epoch_start(self, graph: RecGraph, epoch: int) -> None:
        dgl.seed(self.seed + epoch)
        self.set_neighbourhoods(self.neighbourhoods(graph))

    def _ensure_neighbourhoods(self, graph: RecGraph) -> list[_InEdges]:
        """The neighbourhoods, drawn if none are drawn or if they were drawn for another number of items."""
        if self._in_edges is None or any(e.n != graph.n_items for e in self._in_edges):
            dgl.seed(self.seed)
            self.set_neighbourhoods(self.neighbourhoods(graph))
        assert self._in_edges is not None
        return self._in_edges

    # ------------------------------------------------------------ full inference

    def layer0(self, graph: RecGraph, items: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Layer-0 vectors of `items` (all items when None)."""
        if items is None:
            h = self.item_emb.weight
            return h + self.item_proj(graph.item_features) if self.item_proj is not None else h
        items = items.to(graph.device)
        h = self.item_emb(items)
        if self.item_proj is None or graph.item_features is None:
            return h
        return h + self.item_proj(graph.item_features[items])

    def item_vectors(self, graph: RecGraph) -> torch.Tensor:
        """Every item's final vector, each layer over all items at once."""
        in_edges = self._ensure_neighbourhoods(graph)
        if self._whole is None or self._whole[0] != graph.device:  # the same until the neighbourhoods are redrawn
            every = torch.arange(graph.n_items)
            self._whole = (graph.device, [e.pooling(every, every, graph.device)[1:] for e in in_edges])
        h = self.layer0(graph)
        for conv, (rows, pooling) in zip(self.convs, self._whole[1]):
            h = conv.propagate(h, rows, pooling)
        return self.output(h)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The final dense layers on the last convolution's vectors (unit length unless `unit_items` is off)."""
        z = self.head(h)
        return F.normalize(z, dim=1) if self.unit_items else z

    @staticmethod
    def _user_sums(graph: RecGraph, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, i = (t.long().to(items.device) for t in graph.dgl_graph.edges(etype=USER_ITEM))
        sums = items.new_zeros(graph.n_users, items.shape[1]).index_add_(0, u, items[i])
        return sums, torch.bincount(u, minlength=graph.n_users).unsqueeze(1).float()

    def encode(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """A user is the mean of their training items. A user without any (every interaction held out,
        or a member added since) takes the mean of their user neighbours' vectors (friends, heuristic
        cold-start edges) and, with none of those either, the mean over all training pairs: the
        popular taste, not a zero vector that would score every item alike."""
        items = self.item_vectors(graph)
        sums, counts = self._user_sums(graph, items)
        users = sums / counts.clamp(min=1)
        empty = counts.squeeze(1) == 0
        if self.user_emb is not None:  # only users with training items (their vectors trained); members
            own = torch.zeros_like(users)  # added since training (rows past the table) have none
            known = min(graph.n_users, self.n_users)
            own[:known] = self.user_emb.weight[:known]
            users = users + own * (~empty).unsqueeze(1)
        if empty.any():
            popular = sums.sum(0) / counts.sum().clamp(min=1)  # the item mean over all training pairs
            users[empty] = self._without_items(graph, users, ~empty, popular)[empty]
        return users, items

    @staticmethod
    def _without_items(graph: RecGraph, users: torch.Tensor, has_items: torch.Tensor,
                       popular: torch.Tensor) -> torch.Tensor:
        """Per user, the mean of the vectors of their user neighbours that have training items;
        `popular` where a user has no such neighbour."""
        fallback = torch.zeros_like(users)
        known = users.new_zeros(len(users))
        for etype in (FRIEND, SIMILAR_USER):
            if not graph.uses(etype):
                continue
            src, dst = (t.long().to(users.device) for t in graph.dgl_graph.edges(etype=etype))
            keep = has_items[src]
            fallback.index_add_(0, dst[keep], users[src[keep]])
            known.index_add_(0, dst[keep], users.new_ones(int(keep.sum())))
        fallback /= known.clamp(min=1).unsqueeze(1)
        fallback[known == 0] = popular
        return fallback

    # ------------------------------------------------------------ mini-batch training

    def item_vectors_of(self, graph: RecGraph, items: torch.Tensor) -> torch.Tensor:
        """Final vectors of `items` (distinct item ids) from their sampled neighbourhoods only: layer
        l's nodes need layer l-1's vectors of themselves and their in-neighbours in layer l's graph."""
        layers = self._ensure_neighbourhoods(graph)
        plan = []  # per layer, top down: (rows of its nodes in the frontier below, pooling over that frontier)
        nodes = items.cpu()
        for in_edges in reversed(layers):
            nodes, *layer = in_edges.pooling(nodes, device=graph.device)
            plan.append(layer)
        h = self.layer0(graph, nodes)
        for conv, (dst_rows, pooling) in zip(self.convs, reversed(plan)):
            h = conv.propagate(h, dst_rows, pooling)
        return self.output(h)

    def histories(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indptr, items, keys): each user's training items, sorted, as CSR rows, and each entry's
        key user * n_items + item (sorted, to find a pair's position); cached per graph."""
        if self._histories is None or self._histories[0] is not graph:
            u, i = (t.long() for t in graph.dgl_graph.edges(etype=USER_ITEM))
            keys = torch.sort(u * graph.n_items + i).values
            indptr = indptr_of(torch.bincount(u, minlength=graph.n_users))
            self._histories = (graph, indptr, keys % max(graph.n_items, 1), keys)
        return self._histories[1:]

    def sample_histories(self, graph: RecGraph, users: torch.Tensor, pos: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, mask), both (B, S) with S <= user_items: for each pair, up to `user_items` of the
        user's training items other than the positive (one copy of it left out), drawn without
        replacement; all of them when the user has no more than that. `mask` marks the real entries."""
        indptr, items, keys = self.histories(graph)
        users, pos = users.long(), pos.long()
        start, deg = indptr[users], indptr[users + 1] - indptr[users]
        last = max(len(items) - 1, 0)
        # the positive's position in its user's sorted row (its first copy, if the log repeats the pair)
        at = torch.searchsorted(keys, users * graph.n_items + pos) - start
        found = (at < deg) & (keys[(start + at).clamp(max=last)] == users * graph.n_items + pos)
        others = deg - found.long()  # items other than (one copy of) the positive
        s = int(min(self.user_items, int(others.max()) if len(others) else 0))
        if s == 0:
            return torch.zeros(len(users), 0, dtype=torch.long), torch.zeros(len(users), 0, dtype=torch.bool)
        picks = torch.arange(s).expand(len(users), s).clone()  # positions among the others
        big = others > s
        if bool(big.any()):
            width = int(others[big].max())
            noise = torch.rand(int(big.sum()), width)
            noise[torch.arange(width).unsqueeze(0) >= others[big].unsqueeze(1)] = 2.0
            picks[big] = torch.topk(noise, s, dim=1, largest=False).indices
        mask = picks < others.unsqueeze(1)
        # skip the positive's own position
        picks = picks + (found.unsqueeze(1) & (picks >= at.unsqueeze(1))).long()
        index = (start.unsqueeze(1) + picks).clamp(max=last)
        return torch.where(mask, items[index], torch.zeros_like(index)), mask

    def batch_loss(self, graph: RecGraph, users, pos, neg, edge_ids=None):
        pos, neg = pos.long(), neg.long()
        device = pos.device  # the model's; the index work (histories, frontiers) is on the CPU
        history, mask = self.sample_histories(graph, users.cpu(), pos.cpu())
        rows, cols = mask.nonzero(as_tuple=True)
        items, inverse = distinct(torch.cat([pos.cpu(), neg.reshape(-1).cpu(), history[rows, cols]]), graph.n_items)
        vectors = self.item_vectors_of(graph, items).index_select(0, inverse.to(device))
        b, k = neg.shape
        p, n, h = vectors.split([b, b * k, len(rows)])
        counts = mask.sum(1, keepdim=True).clamp(min=1).to(device, p.dtype)
        u = p.new_zeros(b, p.shape[1]).index_add_(0, rows.to(device), h) / counts
        reg = 0.5 * (self.item_emb(pos).pow(2).sum() + self.item_emb(neg).pow(2).sum() / k) / len(users)
        if self.user_emb is not None:
            own = self.user_emb(users.long())
            u = u + own
            reg = reg + 0.5 * own.pow(2).sum() / len(users)
        return self.ranking_loss(u, p, n.reshape(b, k, -1)), reg

    def pairwise(self, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """PinSage's max-margin hinge, max(0, s(u, n) - s(u, p) + margin); or BPR (`pairwise_loss`)."""
        if self.pairwise_loss == "bpr":
            return super().pairwise(pos, neg)
        return torch.relu(neg - pos + self.margin).mean()
