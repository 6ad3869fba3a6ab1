"""The interaction graph in DGL, and the matrices and views the model families propagate over.

Node types `user` and `item`; edge types:
  user -interacts-> item, item -interacted_by-> user   training pairs, both directions
  user -friend-> user                                   social edges, both directions (optional)
  user -similar_user-> user, item -similar_item-> item heuristic cold-start edges, warm -> cold,
                                                        with a `weight` (optional, see cold_start.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from recsys.data.types import IndexedData
from recsys.graph.propagation import RowProducts, SparseOperator

if TYPE_CHECKING:
    import dgl

USER_ITEM = ("user", "interacts", "item")
ITEM_USER = ("item", "interacted_by", "user")
FRIEND = ("user", "friend", "user")
SIMILAR_USER = ("user", "similar_user", "user")
SIMILAR_ITEM = ("item", "similar_item", "item")


@dataclass
class RecGraph:
    """A DGL heterograph of training edges, node features, and derived views cached on first use.

    `g` is None for a graph held as edge lists alone (`pairs_graph`: training pairs and friendships):
    what the propagation families (LightGCN, GCN, MF) read, on a machine without DGL (bench/gpu.py)."""

    g: Optional[dgl.DGLHeteroGraph]
    n_users: int
    n_items: int
    use_social: bool = False
    user_features: Optional[torch.Tensor] = None
    item_features: Optional[torch.Tensor] = None
    device: torch.device = torch.device("cpu")  # where features and derived operators live (DGL's graph: CPU)
    pairs: Optional[dict] = None  # where g is None: edge type -> (src, dst)
    _cache: dict = field(default_factory=dict, repr=False)

    def to(self, device: torch.device) -> "RecGraph":
        """The same graph with its features, and the operators it derives, on `device` (recsys/device.py);
        kept, so that its operators are built once per device. The DGL graph stays on the CPU, where DGL
        samples."""
        from recsys.device import indexed

        device = indexed(device)
        if device == self.device:
            return self
        key = ("on", str(device))
        if key not in self._cache:
            move = lambda t: None if t is None else t.to(device)  # noqa: E731
            self._cache[key] = RecGraph(self.g, self.n_users, self.n_items, self.use_social, move(self.user_features),
                                        move(self.item_features), device, self.pairs)
        return self._cache[key]

    @property
    def dgl_graph(self) -> dgl.DGLHeteroGraph:
        """The DGL heterograph, which the sampling families read (a graph of bare pairs has none)."""
        if self.g is None:
            raise ValueError("this needs a DGL graph; the graph holds bare edge pairs (pairs_graph)")
        return self.g

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def etypes(self) -> list[tuple]:
        return self.g.canonical_etypes if self.g is not None else list(self.pairs or {})

    def uses(self, etype: tuple) -> bool:
        """Whether the models read this edge type: it is in the graph and, for friendships, switched on."""
        return etype in self.etypes and (etype != FRIEND or self.use_social)

    @property
    def has_cold_start_edges(self) -> bool:
        return SIMILAR_USER in self.etypes or SIMILAR_ITEM in self.etypes

    def edges(self, etype: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, destination) node ids of one edge type."""
        return self.g.edges(etype=etype) if self.g is not None else (self.pairs or {})[etype]

    def norm_adj(self, self_loops: bool = False) -> SparseOperator:
        key = ("norm_adj", self_loops)
        if key not in self._cache:
            self._cache[key] = normalized_adjacency(self, self_loops).to(self.device)
        return self._cache[key]

    def row_products(self, self_loops: bool = False) -> RowProducts:
        """Batch-row products with norm_adj(self_loops) (see recsys/graph/propagation.py), one per
        graph: it keeps scratch matrices between batches."""
        key = ("row_products", self_loops)
        if key not in self._cache:
            op = self.norm_adj(self_loops)
            self._cache[key] = RowProducts(op)
        return self._cache[key]

    def homogeneous(self) -> dgl.DGLGraph:
        """One node space (users 0..n_users-1, then items) with every edge type, for samplers."""
        import dgl

        if "homogeneous" not in self._cache:
            src, dst, w = _all_edges(self)
            hg = dgl.graph((src, dst), num_nodes=self.n_nodes)
            hg.edata["weight"] = w
            self._cache["homogeneous"] = hg
        return self._cache["homogeneous"]


def _offset(ntype: str, graph: RecGraph) -> int:
    return 0 if ntype == "user" else graph.n_users


def _all_edges(graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges of every type in the shared node space, interaction edges first in training order
    (edge k and edge m + k are the two directions of training pair k)."""
    order = [USER_ITEM, ITEM_USER, FRIEND, SIMILAR_USER, SIMILAR_ITEM]
    src, dst, w = [], [], []
    for etype in order:
        if not graph.uses(etype):
            continue
        s, d = graph.dgl_graph.edges(etype=etype)
        src.append(s + _offset(etype[0], graph))
        dst.append(d + _offset(etype[2], graph))
        data = graph.dgl_graph.edges[etype].data
        w.append(data["weight"].float() if "weight" in data else torch.ones(len(s)))
    return torch.cat(src).long(), torch.cat(dst).long(), torch.cat(w)


def build_graph(
    data: IndexedData,
    social_edges: bool = False,
    cold_edges: Optional[dict] = None,
    user_features: Optional[np.ndarray | torch.Tensor] = None,
    item_features: Optional[np.ndarray | torch.Tensor] = None,
) -> RecGraph:
    """Training pairs in both directions; friendships if asked; cold-start edges if given as
    {SIMILAR_USER: (src, dst, weight), SIMILAR_ITEM: (...)} (see cold_start.py)."""
    import dgl

    u = torch.from_numpy(data.train[:, 0])
    i = torch.from_numpy(data.train[:, 1])
    edges = {USER_ITEM: (u, i), ITEM_USER: (i, u)}
    if social_edges:
        s = torch.from_numpy(np.concatenate([data.social[:, 0], data.social[:, 1]]))
        d = torch.from_numpy(np.concatenate([data.social[:, 1], data.social[:, 0]]))
        edges[FRIEND] = (s, d)
    weights = {}
    for etype, (s, d, w) in (cold_edges or {}).items():
        edges[etype] = (torch.as_tensor(s, dtype=torch.int64), torch.as_tensor(d, dtype=torch.int64))
        weights[etype] = torch.as_tensor(w, dtype=torch.float32)
    g = dgl.heterograph(edges, num_nodes_dict={"user": data.n_users, "item": data.n_items})
    for etype, w in weights.items():
        g.edges[etype].data["weight"] = w
    as_tensor = lambda x: None if x is None else torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    return RecGraph(g, data.n_users, data.n_items, social_edges, as_tensor(user_features), as_tensor(item_features))


def pairs_graph(data: IndexedData, social_edges: bool = False) -> RecGraph:
    """build_graph's interaction and friendship edges as edge lists, without DGL: enough for LightGCN,
    GCN and MF (their operators come from the edges), not for the families that sample with DGL."""
    u, i = (torch.from_numpy(data.train[:, c].astype(np.int64)) for c in (0, 1))
    pairs = {USER_ITEM: (u, i), ITEM_USER: (i, u)}
    if social_edges:
        s, d = (torch.from_numpy(data.social[:, c].astype(np.int64)) for c in (0, 1))
        pairs[FRIEND] = (torch.cat([s, d]), torch.cat([d, s]))
    return RecGraph(None, data.n_users, data.n_items, social_edges, pairs=pairs)


def normalized_adjacency(graph: RecGraph, self_loops: bool = False) -> SparseOperator:
    """D^-1/2 A D^-1/2 over users then items (node u is row u, item i is row n_users + i), as CSR.

    A holds the training edges (and friendships) in both directions, so this part is symmetric.
    Isolated nodes (cold users and items) have degree zero and an all-zero row, so they keep only
    their layer-0 embedding, unless cold-start edges are present: then a cold node's row averages
    its warm neighbours by edge weight (a row-normalised, one-way block, hence the transpose).
    With `self_loops`, A + I is normalised instead (Kipf and Welling's GCN).
    """
    nu, n = graph.n_users, graph.n_nodes
    src, dst = graph.edges(USER_ITEM)
    rows, cols = [src, dst + nu], [dst + nu, src]
    if graph.uses(FRIEND):
        s, d = graph.edges(FRIEND)
        rows.append(s)
        cols.append(d)
    if self_loops:
        rows.append(torch.arange(n))
        cols.append(torch.arange(n))
    r, c = torch.cat(rows).long(), torch.cat(cols).long()
    deg = torch.bincount(r, minlength=n).float()
    inv_sqrt = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    values = inv_sqrt[r] * inv_sqrt[c]
    symmetric = not graph.has_cold_start_edges
    for etype in (SIMILAR_USER, SIMILAR_ITEM):
        if not graph.uses(etype):
            continue
        s, d = graph.dgl_graph.edges(etype=etype)
        w = graph.dgl_graph.edges[etype].data["weight"].float()
        off = _offset(etype[0], graph)
        dst_rows = d.long() + off
        row_sum = torch.zeros(n).index_add_(0, dst_rows, w)
        r = torch.cat([r, dst_rows])
        c = torch.cat([c, s.long() + off])
        values = torch.cat([values, w / row_sum[dst_rows]])
    matrix = _csr(r, c, values, n)
    return SparseOperator(matrix, matrix if symmetric else _csr(c, r, values, n))


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n))
        return coo.coalesce().to_sparse_csr()
