"""The graph-filter family (recsys/models/graph_filter.py) against dense references computed by hand
with numpy on the full matrices: its exact scores, its served rank-k vectors as the rank grows, and a
user it has never seen, embedded from their interactions by the serving bundle."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import RunConfig
from recsys.data.types import IndexedData
from recsys.graph.build import build_graph
from recsys.inductive import Bundle
from recsys.models import build_model

N_USERS, N_ITEMS = 40, 12


def tiny(seed: int = 0) -> IndexedData:
    """A random log of 40 users over 12 items (every user and item has a pair), as indices."""
    rng = np.random.default_rng(seed)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.3
    dense[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = True
    dense[rng.integers(0, N_USERS, N_ITEMS), np.arange(N_ITEMS)] = True
    pairs = np.argwhere(dense).astype(np.int64)
    empty = np.zeros((0, 2), dtype=np.int64)
    return IndexedData(np.array([f"u{k}" for k in range(N_USERS)]), np.array([f"i{k}" for k in range(N_ITEMS)]),
                       pairs, empty, empty, empty)


def model_for(data: IndexedData, **options):
    cfg = RunConfig.model_validate({"model": {"family": "filter", "filter": {"rank": N_ITEMS, "ideal_rank": 3,
                                                                             "iterations": 6, **options}}})
    graph = build_graph(data)
    return build_model(cfg.model, graph), graph, cfg


def interactions(data: IndexedData) -> np.ndarray:
    r = np.zeros((data.n_users, data.n_items))
    r[data.train[:, 0], data.train[:, 1]] = 1
    return r


def reference(data: IndexedData, rows: np.ndarray, o) -> np.ndarray:
    """The filter fitted on `data`'s full matrices (P's eigen-decomposition, the response on its
    eigenvalues), applied to interaction rows (n x items)."""
    r = interactions(data)
    du, di = r.sum(1), r.sum(0)
    norm = r / (du[:, None] ** o.norm_power) / (di[None, :] ** o.norm_power)
    lam, vecs = np.linalg.eigh(norm.T @ norm)
    lam, vecs = lam / lam.max(), vecs
    lam, vecs = lam[::-1], vecs[:, ::-1]  # falling
    if o.kind == "linear":
        gain = lam.copy()
    else:  # the low-pass step, interpolated at Chebyshev points, evaluated at 1 - 2 lambda
        step = np.polynomial.chebyshev.chebinterpolate(
            lambda x: 0.5 - 0.5 * np.sign(x) * np.abs(x) ** o.flatness, o.order)
        gain = np.polynomial.chebyshev.chebval(1 - 2 * lam, step)
    gain[:o.ideal_rank] += o.ideal_weight
    filt = np.diag(di ** o.degree_power) @ vecs @ np.diag(gain) @ vecs.T @ np.diag(di ** -o.degree_power)
    return rows @ filt.T


@pytest.mark.parametrize("options", [
    {"kind": "cheby", "order": 6, "flatness": 1.5, "ideal_weight": 0.2, "degree_power": 0.4},
    {"kind": "linear", "ideal_weight": 0.3, "degree_power": 0.0},
    {"kind": "cheby", "order": 3, "flatness": 0.7, "ideal_weight": 0.0, "degree_power": 0.25, "norm_power": 0.3},
])
def test_exact_and_full_rank_scores_equal_the_dense_reference(options):
    data = tiny()
    model, graph, cfg = model_for(data, **options)
    model.fit(graph)
    want = reference(data, interactions(data), cfg.model.filter)
    exact = model.exact_scores(graph, np.arange(N_USERS)).double().numpy()
    np.testing.assert_allclose(exact, want, atol=2e-4)
    user_vectors, item_vectors = model.embed(graph)
    served = (user_vectors @ item_vectors.T).double().numpy()
    np.testing.assert_allclose(served, want, atol=2e-4)  # rank = number of items: the whole filter


def test_the_rank_k_vectors_converge_to_the_exact_scores():
    data = tiny(1)
    errors = []
    for rank in (2, 5, 8, N_ITEMS):
        model, graph, _ = model_for(data, rank=rank, ideal_rank=2)
        model.fit(graph)
        exact = model.exact_scores(graph, np.arange(N_USERS))
        users, items = model.embed(graph)
        errors.append(float((users @ items.T - exact).abs().max()))
    assert errors[-1] < 2e-4, errors
    assert all(a >= b - 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 100 * errors[-1], errors  # a low rank is measurably not the filter


def test_a_new_user_is_scored_from_their_items_by_the_serving_bundle():
    data = tiny(2)
    model, graph, cfg = model_for(data)
    model.fit(graph)
    assert model.inductive
    bundle = Bundle(cfg.model.model_dump(), model.state_dict(), data, False, None, None, None)
    items = ["i1", "i4", "i7", "nobody"]  # an id the model never saw is left out
    vector = bundle.embed_new_users(pd.DataFrame(index=range(1)), [items], [[]])
    _, item_vectors = model.embed(graph)
    scores = torch.as_tensor(vector) @ item_vectors.T
    row = np.zeros((1, N_ITEMS))
    row[0, [1, 4, 7]] = 1
    np.testing.assert_allclose(scores.double().numpy(), reference(data, row, cfg.model.filter), atol=2e-4)
