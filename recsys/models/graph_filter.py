"""A graph filter on the normalised interaction graph: no gradient descent, one truncated factorisation.

After GF-CF (Shen et al., CIKM 2021) and ChebyCF (Kim et al., SIGIR 2025). With R the training
interactions (users x items, 0/1), R~ = D_U^-a R D_I^-a (a: `norm_power`, the symmetric 1/2 by
default) and P = R~' R~ / (its largest eigenvalue) the normalised item-item graph (eigenvalues in
[0, 1]; near 1: signals that vary little between items users share), a user's scores are their
interaction row r filtered on that graph:

    s(r) = D_I^b [ g(P) + w V_e V_e' ] D_I^-b r

  g      `kind` linear: g(P) = P (GF-CF's linear filter); cheby: a Chebyshev polynomial of degree
         `order` in L = I - 2P that interpolates a smooth low-pass step (1 at eigenvalue 1, 0 at 0,
         half at 1/2; the larger `flatness`, the longer it stays near a half around the middle)
  w V V' the ideal low-pass: the top `ideal_rank` eigenvectors of P, weighted `ideal_weight`
  b      `degree_power`: an item's degree to the power -b before the filter and +b after, which takes
         weight from popular items and gives it back

`exact_scores` applies this to rows with sparse products: nothing items x items or users x items
is ever formed (a chunk of rows x items, and chunk x users in between). Served, the filter is its
best rank-k form: the top `rank` eigenpairs of P (right singular vectors of R~, from a randomized
SVD: `singular`) give item input vectors Z = D^-b V_k diag(g(l_k) + w [j < e]) and item output
vectors Y = D^b V_k. A user's vector is the sum of their items' input vectors (r Z), so a user who
arrives after the fit is embedded from their interactions alone (`inductive`); a score is x_u . y_i,
which equals the exact score when the rank reaches the number of items. Memory: the served vectors
(items x rank, twice), the SVD's blocks (users x (rank + oversample) and items x the same) and, for
exact scores, a chunk x items block per product.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from recsys.graph.build import SIMILAR_ITEM, SIMILAR_USER, USER_ITEM, RecGraph
from recsys.kernels import csr_mm
from recsys.models.base import RecModel


class GraphFilter(RecModel):
    inductive = True      # users are embedded from their interactions (encode)
    warm_startable = False  # nothing is trained: each fit is complete (recsys/fit.py starts it afresh)

    def __init__(self, n_items: int, options):
        super().__init__()
        self.options = options
        self.register_buffer("item_in", torch.zeros(n_items, options.rank))
        self.register_buffer("item_out", torch.zeros(n_items, options.rank))
        self.register_buffer("eigenvalues", torch.zeros(options.rank))  # of P, the served pairs', falling
        self.register_buffer("scale", torch.ones(()))  # the largest eigenvalue of R~'R~, which P is divided by

    @classmethod
    def from_config(cls, cfg, graph: RecGraph, seed: int = 0) -> "GraphFilter":
        """cfg: the model section (its `filter` options)."""
        return cls(graph.n_items, cfg.filter)

    # ------------------------------------------------------------------ the filter's response

    def response(self, eigenvalues: torch.Tensor) -> torch.Tensor:
        """g at eigenvalues of P (float64)."""
        lam = eigenvalues.double()
        if self.options.kind == "linear":
            return lam
        return torch.from_numpy(np.polynomial.chebyshev.chebval((1 - 2 * lam).numpy(), self.coefficients()))

    def coefficients(self) -> np.ndarray:
        """The Chebyshev coefficients of g in L = I - 2P (numpy's interpolation at Chebyshev points)."""
        flat = self.options.flatness
        return np.polynomial.chebyshev.chebinterpolate(
            lambda x: 0.5 - 0.5 * np.sign(x) * np.abs(x) ** flat, self.options.order)

    # ------------------------------------------------------------------ fit, encode, exact scores

    @torch.no_grad()
    def fit(self, graph: RecGraph) -> dict:
        """The served vectors from `graph`'s training interactions; what it took."""
        t0 = time.perf_counter()
        o = self.options
        ops = operators(graph, o.norm_power)
        n_users, n_items = ops["shape"]
        q = min(o.rank + o.oversample, n_users, n_items)
        key = ("filter_svd", o.norm_power, q, o.iterations)  # one factorisation serves every filter on it (a search)
        if key not in graph._cache:
            graph._cache[key] = singular(ops, q, o.iterations)
        sing, vecs = graph._cache[key]
        take = min(o.rank, q)
        self.scale.fill_(float(sing[0]) ** 2)  # P's largest eigenvalue (1 at norm_power 0.5): P / it has [0, 1]
        lam, vecs = (sing[:take] ** 2 / self.scale).clamp(max=1.0), vecs[:, :take]
        gain = self.response(lam.cpu())
        gain[:o.ideal_rank] += o.ideal_weight
        pre, post = degree_scaling(ops["degree"], o.degree_power)
        self.item_in.zero_()
        self.item_out.zero_()
        self.eigenvalues.zero_()
        self.item_in[:, :take] = (pre[:, None] * vecs * gain.to(vecs)[None, :]).to(self.item_in)
        self.item_out[:, :take] = (post[:, None] * vecs).to(self.item_out)
        self.eigenvalues[:take] = lam.to(self.eigenvalues)
        return {"fit_seconds": time.perf_counter() - t0, "svd_rank": q, "eigenvalue_top": float(lam[0]),
                "eigenvalue_last_served": float(lam[-1])}

    def encode(self, graph: RecGraph, **_) -> tuple[torch.Tensor, torch.Tensor]:
        """Users: the sums of their training items' input vectors; items: their output vectors. A user
        or item with no training pair takes its cold-start neighbours' vectors, weighted
        (recsys/graph/cold_start.py), where the graph has such edges."""
        ops = operators(graph, self.options.norm_power)
        users = torch.sparse.mm(ops["binary"], self.item_in)
        return (borrowed(users, graph, SIMILAR_USER, ops["user_degree"]),
                borrowed(self.item_out, graph, SIMILAR_ITEM, ops["degree"]))

    @torch.no_grad()
    def exact_scores(self, graph: RecGraph, users: np.ndarray) -> torch.Tensor:
        """The filter applied to these users' training rows by sparse products: (len(users), n_items).
        The ideal part uses the fit's eigenvectors (the top `ideal_rank` of the served ones)."""
        o, ops = self.options, operators(graph, self.options.norm_power)
        rows = dense_rows(ops["binary"], torch.as_tensor(users, dtype=torch.long, device=ops["degree"].device))
        pre, post = degree_scaling(ops["degree"], o.degree_power)
        y = (rows * pre).T.contiguous()  # items x chunk

        def gram(x):  # P x
            return csr_mm(ops["norm_t"], csr_mm(ops["norm"], x)) / self.scale

        if o.kind == "linear":
            out = gram(y)
        else:
            coeffs = self.coefficients()
            prev, cur = y, y - 2 * gram(y)
            out = coeffs[0] * prev + (coeffs[1] * cur if o.order >= 1 else 0)
            for c in coeffs[2:]:
                prev, cur = cur, 2 * (cur - 2 * gram(cur)) - prev
                out = out + c * cur
        if o.ideal_rank and o.ideal_weight:
            vecs = self.item_out[:, :o.ideal_rank] / torch.where(post > 0, post, 1.0)[:, None]
            out = out + o.ideal_weight * (vecs @ (vecs.T @ y))
        return (out * post[:, None]).T.contiguous()


def operators(graph: RecGraph, power: float = 0.5) -> dict:
    """The training interactions as sparse matrices, cached on the graph: `binary` R (CSR, users x
    items), `degree` / `user_degree`, `shape`; and, for this normalisation exponent, `norm` R~ =
    D_U^-power R D_I^-power and `norm_t` its transpose (CSR; `norm_coo` as COO)."""
    if "filter_interactions" not in graph._cache:
        src, dst = graph.edges(USER_ITEM)
        n_users, n_items = graph.n_users, graph.n_items
        keys = torch.unique(src.long().cpu() * n_items + dst.long().cpu())
        u, i = keys // n_items, keys % n_items
        ones = torch.ones(len(keys))
        with warnings.catch_warnings():  # torch calls its CSR tensors beta; they are what csr_mm takes
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            binary = torch.sparse_coo_tensor(torch.stack([u, i]), ones, (n_users, n_items)).coalesce().to_sparse_csr()
        graph._cache["filter_interactions"] = {
            "index": torch.stack([u, i]), "shape": (n_users, n_items), "binary": binary,
            "user_degree": torch.zeros(n_users).index_add_(0, u, ones),
            "degree": torch.zeros(n_items).index_add_(0, i, ones)}
    base = graph._cache["filter_interactions"]
    key = ("filter_operators", power)
    if key not in graph._cache:
        index, shape, device = base["index"], base["shape"], graph.device
        weight = base["user_degree"][index[0]].pow(-power) * base["degree"][index[1]].pow(-power)
        norm = torch.sparse_coo_tensor(index, weight, shape).coalesce()
        with warnings.catch_warnings():  # torch calls its CSR tensors beta; they are what csr_mm takes
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            graph._cache[key] = {
                "binary": base["binary"].to(device), "norm": norm.to_sparse_csr().to(device),
                "norm_coo": norm.to(device), "norm_t": norm.t().coalesce().to_sparse_csr().to(device),
                "degree": base["degree"].to(device), "user_degree": base["user_degree"].to(device),
                "shape": shape}
    return graph._cache[key]


def degree_scaling(degree: torch.Tensor, power: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(degree^-power, degree^+power), the first 0 where the degree is (an item with no pairs)."""
    pre, post = degree.pow(-power), degree.pow(power)
    pre[degree == 0] = 0
    return pre, post


def borrowed(vectors: torch.Tensor, graph: RecGraph, etype: tuple, degree: torch.Tensor) -> torch.Tensor:
    """`vectors` with each row of degree 0 (nothing to filter) replaced by the weighted mean of its
    cold-start neighbours' rows (edges run warm -> cold), or, without any, by the mean of the rows
    that have training pairs: a user with no history is scored as the average user is (by
    popularity, in effect); an item with none is an average item."""
    cold = degree == 0
    if not bool(cold.any()):
        return vectors
    out = vectors.clone()
    out[cold] = vectors[~cold].mean(0) if bool((~cold).any()) else 0
    if graph.uses(etype):
        src, dst = (t.long().to(vectors.device) for t in graph.edges(etype))
        weight = graph.dgl_graph.edges[etype].data["weight"].float().to(vectors.device)
        keep = cold[dst]
        src, dst, weight = src[keep], dst[keep], weight[keep]
        total = torch.zeros_like(vectors).index_add_(0, dst, vectors[src] * weight[:, None])
        mass = torch.zeros(len(vectors), device=vectors.device).index_add_(0, dst, weight)
        filled = mass > 0
        out[filled] = total[filled] / mass[filled, None]
    return out


def singular(ops: dict, q: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R~'s top q singular values (falling) and right singular vectors (items x q): a randomized SVD
    (Halko et al. 2011) with `iterations` power iterations, seeded. scikit-learn's on the CPU (torch's
    CPU sparse product slows tenfold on the column-major blocks its QR returns), torch's on a GPU."""
    norm = ops["norm_coo"]
    if norm.device.type != "cpu":
        torch.manual_seed(0)
        _, sing, vecs = torch.svd_lowrank(norm, q=q, niter=iterations)
        return sing, vecs
    import scipy.sparse as sp
    from sklearn.utils.extmath import randomized_svd

    index = norm.indices().numpy()
    matrix = sp.csr_matrix((norm.values().numpy(), (index[0], index[1])), shape=tuple(norm.shape))
    _, sing, vt = randomized_svd(matrix, q, n_oversamples=0, n_iter=iterations, random_state=0)
    return torch.from_numpy(np.ascontiguousarray(sing, dtype=np.float32)), torch.from_numpy(
        np.ascontiguousarray(vt.T, dtype=np.float32))


def dense_rows(csr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """These rows of a sparse CSR matrix, dense."""
    crow, col = csr.crow_indices(), csr.col_indices()
    starts, counts = crow[rows], crow[rows + 1] - crow[rows]
    local = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), counts)
    offsets = torch.arange(int(counts.sum()), device=rows.device) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts)
    at = torch.repeat_interleave(starts, counts) + offsets
    out = torch.zeros(len(rows), csr.shape[1], device=csr.device)
    out[local, col[at]] = csr.values()[at]
    return out
