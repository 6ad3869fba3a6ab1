"""Heuristic cold-start edges, the cold-start split, and node features (text included)."""
import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import RunConfig
from recsys.data.types import IndexedData
from recsys.features import FeatureEncoder, infer_spec
from recsys.graph.build import SIMILAR_USER, build_graph
from recsys.graph.cold_start import attribute_edges, similarity_edges
from recsys.models.lightgcn import LightGCN
from recsys.prepare import prepare
from recsys.text import TextEncoder

EMPTY = np.zeros((0, 2), dtype=np.int64)


def test_attribute_edges_by_hand():
    users = pd.DataFrame({"university": ["A", "A", "B", "A"], "company": ["X", "Y", "X", "X"]})
    is_cold = np.array([False, False, False, True])
    activity = np.array([5, 9, 1, 0])
    src, dst, w = attribute_edges(users, is_cold, activity, k=2)
    # cold user 3 (A, X): user 0 shares both, user 1 shares A (more active than 2), user 2 shares X
    assert list(zip(src, dst, w)) == [(0, 3, 2.0), (1, 3, 1.0)]


def test_similarity_edges_pick_nearest_warm_items():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [1.0, 0.1]])
    is_cold = np.array([False, False, False, True])
    src, dst, w = similarity_edges(vectors, is_cold, k=2)
    assert sorted(src.tolist()) == [0, 2] and set(dst.tolist()) == {3}
    assert w.max() == pytest.approx(1 / np.linalg.norm([1.0, 0.1]))


def test_a_cold_user_reads_its_warm_neighbours_in_lightgcn():
    # users 0, 1 warm (each with one item), user 2 cold, linked from user 0 (w=2) and user 1 (w=1).
    train = np.array([[0, 0], [1, 1]])
    data = IndexedData(np.array(["a", "b", "c"]), np.array(["x", "y"]), train, EMPTY, EMPTY, EMPTY)
    edges = {SIMILAR_USER: (np.array([0, 1]), np.array([2, 2]), np.array([2.0, 1.0]))}
    graph = build_graph(data, cold_edges=edges)
    model = LightGCN(3, 2, dim=2, layers=1)
    users, _ = model.embed(graph)
    e = model.user_emb.weight.detach()
    expected = (e[2] + (2 * e[0] + 1 * e[1]) / 3) / 2  # mean of layer 0 and the weighted neighbour mean
    torch.testing.assert_close(users[2].detach(), expected)
    # and gradients flow through the one-way block correctly (transpose used in backward)
    users.sum().backward()
    assert model.user_emb.weight.grad[0].abs().sum() > 0


def test_cold_start_split_and_edges_on_the_synthetic_network(small_network):
    cfg = RunConfig.model_validate({
        "data": {"split": {"cold_user_fraction": 0.1}},
        "graph": {"cold_start": {"enabled": True, "k": 5}},
        "features": {"text": False},
    })
    p = prepare(small_network, cfg)
    held = p.data.meta["held_out_users"]
    assert held == round(0.1 * small_network.interactions["user_id"].nunique())
    # held-out users have test targets and no training pair; every cold user got at most k edges
    test_users = set(p.indexed.test[:, 0])
    assert sum(p.cold_users[u] for u in test_users) == held
    src, dst = p.graph.g.edges(etype="similar_user")
    assert set(dst.tolist()) <= set(np.flatnonzero(p.cold_users))
    assert not p.cold_users[src.numpy()].any()
    assert np.bincount(dst.numpy()).max() <= 5


def test_feature_encoder_layout_is_stable_for_new_rows():
    frame = pd.DataFrame({"gender": ["M", "F", "M"], "age": [20, 30, 40], "genres": ["A|B", "B", "C"]})
    spec = infer_spec(frame, "id")
    assert (spec.categorical, spec.numeric, spec.multi) == (["gender"], ["age"], ["genres"])
    enc = FeatureEncoder(spec).fit(frame)
    x = enc.transform(frame)
    # gender one-hot (M, F, other) | genres multi-hot (A, B, C) | age standardised
    np.testing.assert_allclose(x[0], [1, 0, 0, 1, 1, 0, -np.sqrt(1.5)], atol=1e-6)
    new = enc.transform(pd.DataFrame({"gender": ["X"], "age": [30], "genres": ["C|D"]}))
    np.testing.assert_allclose(new[0], [0, 0, 1, 0, 0, 1, 0], atol=1e-6)


def test_text_encoder_is_real_offline_and_cached(tmp_path):
    texts = ["Senior data scientist, forecasting and SQL", "Machine learning engineer working on PyTorch",
             "Registered nurse in an emergency department"]
    first = TextEncoder(tmp_path)
    v = first.encode(texts)
    assert v.shape == (3, 384) and first.encoded_count == 3
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]  # the two data jobs are closer than data and nursing
    second = TextEncoder(tmp_path)
    np.testing.assert_allclose(second.encode(texts[::-1]), v[::-1], atol=1e-6)
    assert second.encoded_count == 0
    # two stores sharing a cache folder (stores.text_cache_dir) read each other's texts
    from recsys.config_ops import StoresConfig

    shared = [StoresConfig(root=tmp_path / name, text_cache_dir=tmp_path) for name in ("a", "b")]
    assert {s.text_cache() for s in shared} == {tmp_path.resolve()}
    assert StoresConfig(root=tmp_path / "a").text_cache() == (tmp_path / "a" / "text_cache").resolve()
