"""Sparse products over the graph's normalised adjacency, as autograd operators.

Every model family propagates over a CSR operator A (RecGraph.norm_adj), and the training loop
runs those products once or more per batch, so they are written here by hand rather than left to
torch's autograd:

  SpMM        y = A x. Its backward is A^T g, taken with the transpose the operator already stores
              (A itself when A is symmetric), through the compiled kernel (recsys/kernels.py);
              autograd through a COO product is several times slower.
  propagate   mean(x, A x, A^2 x, ..., A^K x), LightGCN's final embedding for every node, built on
              SpMM.
  BatchRows   the same mean at a batch's rows r only, with the exact gradient to layer 0. A batch's
              loss reads only rows r of the final embedding, so layer K is needed only there (one
              row slice A[r] x instead of a whole product), and the backward's first product,
              A^T applied to a matrix that is zero outside r, reduces to A[r]^T h, which touches
              only the rows of r. For K = 3 that is 4 whole-graph products per batch (2 forward,
              2 backward) instead of 6, for the gradient autograd through propagate would give.
  RowProducts the products BatchRows needs against one operator (whole-graph, row slice and
              transposed row slice) plus reusable scratch matrices. It holds state (the scratch,
              an index map), so there is one per operator: RecGraph.row_products caches it.
  EdgeMean    the weighted mean (or sum) over each node's in-edges of a sampled neighbourhood, as
              one SpMM: the sampling families' aggregation (PinSage's importance pooling,
              GraphSAGE's mean and sum), on any device, without DGL's message passing.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from recsys.kernels import csr_mm, masked_mm


@dataclass
class SparseOperator:
    """A sparse matrix and its transpose (the same object when symmetric), for y = A x with autograd."""

    matrix: torch.Tensor
    transpose: torch.Tensor

    def to(self, device: torch.device) -> "SparseOperator":
        matrix = self.matrix.to(device)
        return SparseOperator(matrix, matrix if self.transpose is self.matrix else self.transpose.to(device))


class SpMM(torch.autograd.Function):
    """y = A x for a CSR A. Backward: A^T g, with the operator's stored transpose (the same matrix
    when A is symmetric), which is several times faster than autograd through a COO product."""

    @staticmethod
    def forward(ctx, op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
        ctx.op = op
        return csr_mm(op.matrix, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, csr_mm(ctx.op.transpose, grad)


class RowProducts:
    """A CSR operator A's products for a batch's rows r, both ways: A[r] x, and A[r]^T h, which
    equals A^T y where y holds h at the rows r and zeros everywhere else. The scratch matrices are
    kept from batch to batch (nothing handed back to autograd is stored in them)."""

    def __init__(self, op: SparseOperator):
        self.a, self.at = op.matrix, op.transpose
        self.n, self.device = self.a.shape[0], self.a.device
        self.local = torch.full((self.n,), -1, dtype=torch.long, device=self.device)  # row -> its position in r, or -1
        self._buffers: dict = {}

    def buffer(self, k: int, width: int) -> torch.Tensor:
        """Scratch matrix number k, n x width."""
        b = self._buffers.get(k)
        if b is None or b.shape[1] != width:
            b = self._buffers[k] = torch.empty(self.n, width, device=self.device)
        return b

    def matmul(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """A x, written into scratch matrix k."""
        return csr_mm(self.a, x, out=self.buffer(k, x.shape[1]))

    def at_rows(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """A[r] x, of shape len(r) x d."""
        return csr_mm(self.a, x, rows=r)

    def gradient(self, r: torch.Tensor, h: torch.Tensor, first: Optional[torch.Tensor], layers: int) -> torch.Tensor:
        """BatchRows' gradient to layer 0 (n x d): h / (K + 1) is the batch's gradient at the rows r,
        `first` the L2 term's at layer 0 (or None)."""
        if layers == 0:
            d = torch.zeros(self.n, h.shape[1], device=h.device).index_add_(0, r, h)
        else:
            d = self.transposed(r, h, k=None if layers == 1 else 5)
            d.index_add_(0, r, h)
            for k in range(1, layers):
                out = torch.empty_like(d) if k == layers - 1 else self.buffer(3 + k % 2, d.shape[1])
                d = csr_mm(self.at, d, out=out)
                d.index_add_(0, r, h)
        if first is not None:  # the L2 term used layer 0 at r
            d.index_add_(0, r, first)
        return d

    def transposed(self, r: torch.Tensor, h: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """A[r]^T h for h of shape (len(r), d) and r with no repeats: n x d (into scratch matrix k
        when k is given)."""
        self.local[r] = torch.arange(len(r), device=self.device)
        try:
            return masked_mm(self.at, self.local, h, out=None if k is None else self.buffer(k, h.shape[1]))
        finally:
            self.local[r] = -1


class BatchRows(torch.autograd.Function):
    """LightGCN's final embedding at the rows r only, and its exact gradient to layer 0.

    Forward: layers 1..K-1 over the whole graph, then layer K at r alone (a row slice of A).
    Backward: let y be grad / (K + 1) placed at the rows r (zero elsewhere). The gradient to
    layer 0 is y + A^T y + ... + (A^T)^K y, evaluated as Horner's rule: start from D = y and apply
    D <- y + A^T D K times. Since the first of those products acts on y, which is zero outside r,
    it is A[r]^T h and reads only r's rows. K = 3 thus takes 4 whole-graph products per batch rather
    than 6, with identical numbers. Layer 0 at r is returned too, so that the L2 term needs no
    gradient over the whole embedding table of its own.
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
        d = ctx.rows.gradient(r, grad / (ctx.layers + 1), grad_first, ctx.layers)
        return d[: ctx.n_users], d[ctx.n_users:], None, None, None


def propagate(op: SparseOperator, x: torch.Tensor, layers: int) -> torch.Tensor:
    """The mean of x, A x, A^2 x, ..., A^K x (K = layers)."""
    total = x
    for _ in range(layers):
        x = SpMM.apply(op, x)
        total = total + x
    return total / (layers + 1)


def indptr_of(counts: torch.Tensor) -> torch.Tensor:
    """CSR row pointers for rows holding `counts` entries each."""
    indptr = torch.zeros(len(counts) + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr


class EdgeMean:
    """y = P x with P[d, s] = w_sd / sum_s' w_s'd for each edge s -> d (rows: destination nodes,
    columns: source rows): the weighted mean of each destination's in-neighbours (0 for a node
    without any), so no per-edge copy of x is made; with `normalise=False`, the weighted sum.
    Built on the CPU (the edges come from DGL's samplers) as CSR with its transpose, for the
    backward, then placed on `device`: graphrec's compiled kernel on the CPU, torch's product on a GPU."""

    def __init__(self, edge_dst: torch.Tensor, src_rows: torch.Tensor, weights: Optional[torch.Tensor], n_dst: int,
                 n_src: int, device: Optional[torch.device] = None, normalise: bool = True,
                 sorted_by_dst: bool = True):
        """`sorted_by_dst`: each destination's edges together, in node order (else they are sorted here).
        weights None: every edge weighs 1."""
        edge_dst, src_rows = edge_dst.long(), src_rows.long()
        c = torch.ones(len(edge_dst)) if weights is None else weights.to(torch.float32)
        if not sorted_by_dst:
            order = torch.argsort(edge_dst, stable=True)
            edge_dst, src_rows, c = edge_dst[order], src_rows[order], c[order]
        values = c
        if normalise:
            total = torch.zeros(n_dst).index_add_(0, edge_dst, c).clamp(min=1)
            values = c / total[edge_dst]
        order = torch.argsort(src_rows, stable=True)
        with warnings.catch_warnings():  # torch calls its CSR tensors beta; they are what csr_mm takes
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            op = SparseOperator(
                torch.sparse_csr_tensor(indptr_of(torch.bincount(edge_dst, minlength=n_dst)), src_rows, values,
                                        size=(n_dst, n_src)),
                torch.sparse_csr_tensor(indptr_of(torch.bincount(src_rows, minlength=n_src)), edge_dst[order],
                                        values[order], size=(n_src, n_dst)))
        self.op = op if device is None else op.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return SpMM.apply(self.op, x.contiguous())
