"""LightGCN (He et al., SIGIR 2020), as in the paper.

No weight matrices, no nonlinearity: E(k+1) = D^-1/2 A D^-1/2 E(k), and the final embedding is
the mean of layers 0..K. The only parameters are the layer-0 ID embeddings. Training uses BPR with
L2 on the batch's layer-0 embeddings (the paper's eq. 15); see recsys/train.py.
"""
from __future__ import annotations

import torch
from torch import nn

from recsys.graph.build import RecGraph, SparseOperator
from recsys.kernels import csr_mm, masked_mm
from recsys.models.base import RecModel, l2


class SpMM(torch.autograd.Function):
    """y = A x with a CSR A; the gradient A^T g uses the stored transpose (A itself when symmetric),
    which is several times faster than autograd through a COO product."""

    @staticmethod
    def forward(ctx, op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
        ctx.op = op
        return csr_mm(op.matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, csr_mm(ctx.op.transpose, grad)


class RowProducts:
    """Products with a CSR operator A for a batch's rows r, in both directions: A[r] x, and
    A[r]^T h = A^T y for the y that holds h at the rows r and zero elsewhere. Scratch matrices are
    reused across batches (nothing returned to autograd lives in them)."""

    def __init__(self, op: SparseOperator):
        self.a, self.at = op.matrix, op.transpose
        self.n = self.a.shape[0]
        self.local = torch.full((self.n,), -1, dtype=torch.long)  # row -> its place in r, or -1
        self._buffers: dict = {}

    def buffer(self, k: int, width: int) -> torch.Tensor:
        """Scratch matrix k, n x width."""
        b = self._buffers.get(k)
        if b is None or b.shape[1] != width:
            b = self._buffers[k] = torch.empty(self.n, width)
        return b

    def matmul(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """A x into scratch matrix k."""
        return csr_mm(self.a, x, out=self.buffer(k, x.shape[1]))

    def at_rows(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A[r] x, len(r) x d."""
        return csr_mm(self.a, x, rows=r)

    def transposed(self, r: torch.Tensor, h: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """A[r]^T h for h of shape (len(r), d), r without repeats: n x d (in scratch matrix k if given)."""
        self.local[r] = torch.arange(len(r))
        try:
            return masked_mm(self.at, self.local, h, out=None if k is None else self.buffer(k, h.shape[1]))
        finally:
            self.local[r] = -1


def row_products(op: SparseOperator) -> RowProducts:
    if getattr(op, "_rows", None) is None:
        op._rows = RowProducts(op)
    return op._rows


class BatchRows(torch.autograd.Function):
    """LightGCN's final embedding at rows r only, with its exact gradient to layer 0.

    Forward: layers 1..K-1 over the whole graph, layer K only at r (a row slice). Backward, with
    h = grad / (K + 1) placed at r (call it y): the gradient is sum_k (A^T)^k y, by Horner's rule
    D = y + A^T D repeated K times, whose first product A^T y = A[r]^T h gathers only r's rows.
    So K = 3 costs 4 whole-graph products per batch instead of 6, with the same numbers. Also
    returns layer 0 at r, so the L2 term needs no whole-table gradient of its own.
    """

    @staticmethod
    def forward(ctx, user_w, item_w, r, rows: RowProducts, layers: int):
        n_users = user_w.shape[0]
        e0 = rows.buffer(0, user_w.shape[1])
        torch.cat([user_w, item_w], out=e0)
        acc = e0[r]
        first = acc.clone()
        x = e0
        for k in range(1, layers):
            x = rows.matmul(x, 1 + k % 2)
            acc += x[r]
        if layers:
            acc += rows.at_rows(r, x)
        ctx.rows, ctx.layers, ctx.n_users = rows, layers, n_users
        ctx.save_for_backward(r)
        return acc / (layers + 1), first

    @staticmethod
    def backward(ctx, grad, grad_first):
        (r,) = ctx.saved_tensors
        rows, layers = ctx.rows, ctx.layers
        h = grad / (layers + 1)
        if layers == 0:
            d = torch.zeros(rows.n, h.shape[1]).index_add_(0, r, h)
        else:
            d = rows.transposed(r, h, k=None if layers == 1 else 5)
            d.index_add_(0, r, h)
            for k in range(1, layers):
                out = torch.empty_like(d) if k == layers - 1 else rows.buffer(3 + k % 2, d.shape[1])
                d = csr_mm(rows.at, d, out=out)
                d.index_add_(0, r, h)
        if grad_first is not None:  # layer 0 at r was used (the L2 term)
            d.index_add_(0, r, grad_first)
        return d[: ctx.n_users], d[ctx.n_users:], None, None, None


def propagate(op: SparseOperator, x: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of x, Ax, A^2x, ..., A^K x."""
    total = x
    for _ in range(layers):
        x = SpMM.apply(op, x)
        total = total + x
    return total / (layers + 1)


class LightGCN(RecModel):
    """Plain LightGCN by default. With `transform`, a weight matrix and ReLU per layer come back:
    E(k+1) = ReLU(A E(k) W_k), the final embedding still the mean over layers. With node features
    (`user_features` / `item_features` given; implies `transform`), layer 0 is the ID embedding
    concatenated with a linear projection of the features. Output width: dim, or 2 * dim with features."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layers: int = 3,
                 user_features: torch.Tensor | None = None, item_features: torch.Tensor | None = None,
                 transform: bool = False):
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
        self.transform = transform or self.with_features
        if self.transform:
            width = 2 * dim if self.with_features else dim
            self.weights = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def _layer0(self, graph: RecGraph) -> torch.Tensor:
        ids = torch.cat([self.user_emb.weight, self.item_emb.weight])
        if not self.with_features:
            return ids
        parts = []
        for proj, feats, n in ((self.user_proj, graph.user_features, self.n_users),
                               (self.item_proj, graph.item_features, self.n_items)):
            parts.append(proj(feats) if proj is not None else torch.zeros(n, ids.shape[1]))
        return torch.cat([ids, torch.cat(parts)], dim=1)

    def encode(self, graph: RecGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (user, item) embeddings after K propagation steps over the whole graph."""
        e0 = self._layer0(graph)
        if not self.transform:
            out = propagate(graph.norm_adj(), e0, self.layers)
        else:
            x, total = e0, e0
            for w in self.weights:
                x = torch.relu(w(SpMM.apply(graph.norm_adj(), x)))
                total = total + x
            out = total / (self.layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def batch_loss(self, graph, users, pos, neg, edge_ids=None):
        """The objective + L2 on layer 0 (the paper's eq. 15), with final embeddings computed only at
        the batch's rows (see BatchRows)."""
        if self.transform:
            return super().batch_loss(graph, users, pos, neg, edge_ids)
        b, k = neg.shape
        rows = torch.cat([users, pos + self.n_users, neg.reshape(-1) + self.n_users])
        uniq, inverse = torch.unique(rows, return_inverse=True)
        final, first = BatchRows.apply(self.user_emb.weight, self.item_emb.weight, uniq,
                                       row_products(graph.norm_adj()), self.layers)
        out = []
        for t in (final[inverse], first[inverse]):
            u, p, n = t.split([b, b, b * k])
            out.append((u, p, n.reshape(b, k, -1)))
        return self.ranking_loss(*out[0]), l2(*out[1])

    def regularised(self, users, pos, neg) -> list[torch.Tensor]:
        """The paper's L2 is on the batch's layer-0 (ID) embeddings."""
        return [self.user_emb(users), self.item_emb(pos), self.item_emb(neg)]
