"""PinSage's `pooling` option: importance (visit counts), mean (same neighbours, equal weights),
uniform (T items drawn uniformly from the 2-hop item-user-item neighbourhood)."""
from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch

from recsys.config import ModelConfig
from recsys.data.types import IndexedData
from recsys.graph.build import build_graph
from recsys.models import build_model
from recsys.models.pinsage import PinSage


def _graph(pairs):
    pairs = np.array(pairs, dtype=np.int64)
    n_users, n_items = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
    data = IndexedData(np.array([f"u{k}" for k in range(n_users)]), np.array([f"i{k}" for k in range(n_items)]),
                       pairs, pairs[:0], pairs[:0], np.zeros((0, 2), dtype=np.int64))
    return build_graph(data)


@pytest.fixture
def hub_graph():
    # Item 0 is a hub: users 0-3 all have it. Item 1 shares three users with item 0, item 2 one,
    # item 3 shares user 4 with item 2 only (two hops from 2, four from 0); item 4's one user has
    # nothing else, so it has no neighbour two hops away.
    return _graph([(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 2), (4, 2), (4, 3), (5, 4)])


def _model(graph, pooling, num_neighbors=2):
    return PinSage(graph.n_users, graph.n_items, dim=4, layers=2, num_neighbors=num_neighbors, num_walks=30,
                   pooling=pooling)


def test_the_two_hop_neighbourhood_by_hand(hub_graph):
    two_hop = _model(hub_graph, "uniform").two_hop_items(hub_graph)
    pairs = set(zip(*(t.tolist() for t in two_hop.edges())))
    # 0-1 (users 0-2), 0-2 (user 3), 2-3 (user 4), both directions; no self-loops, item 4 alone
    assert pairs == {(0, 1), (1, 0), (0, 2), (2, 0), (2, 3), (3, 2)}


def test_mean_pooling_keeps_the_walk_neighbours_with_equal_weights(hub_graph):
    dgl.seed(7)
    importance = _model(hub_graph, "importance").neighbourhoods(hub_graph)
    dgl.seed(7)
    mean = _model(hub_graph, "mean").neighbourhoods(hub_graph)
    assert len(mean) == 2
    for imp, eq in zip(importance, mean):
        torch.testing.assert_close(torch.stack(imp.edges()), torch.stack(eq.edges()))
        assert bool((eq.edata["weights"] == 1).all())
    assert any(bool((imp.edata["weights"] > 1).any()) for imp in importance)  # visit counts differ


def test_uniform_neighbours_are_real_two_hop_neighbours(hub_graph):
    model = _model(hub_graph, "uniform", num_neighbors=1)
    users_of = [set() for _ in range(hub_graph.n_items)]
    for u, i in zip(*(t.tolist() for t in hub_graph.g.edges(etype="interacts"))):
        users_of[i].add(u)
    dgl.seed(0)
    counts = {1: 0, 2: 0}
    for _ in range(400):
        for nbrs in model.neighbourhoods(hub_graph):
            src, dst = nbrs.edges()
            assert bool((nbrs.edata["weights"] == 1).all())
            assert int(nbrs.in_degrees().max()) <= 1 and int(nbrs.in_degrees()[4]) == 0
            for s, d in zip(src.tolist(), dst.tolist()):
                assert s != d and users_of[s] & users_of[d]  # a shared user: two hops apart
            counts[int(src[dst == 0])] += 1
    # Uniform over the distinct 2-hop items: item 1 (three shared users) no likelier than item 2 (one).
    assert counts[1] / (counts[1] + counts[2]) == pytest.approx(0.5, abs=0.07)


def test_the_option_reaches_the_model_and_unknown_values_are_refused(hub_graph):
    cfg = ModelConfig.model_validate({"family": "pinsage", "dim": 4, "layers": 1, "pinsage": {"pooling": "uniform"}})
    model = build_model(cfg, hub_graph)
    assert model.pooling == "uniform" and ModelConfig().pinsage.pooling == "importance"
    users, items = model.embed(hub_graph)
    assert users.shape == (hub_graph.n_users, 4) and bool(torch.isfinite(items).all())
    with pytest.raises(ValueError, match="pooling"):
        _model(hub_graph, "max")
    with pytest.raises(Exception, match="pooling"):
        ModelConfig.model_validate({"family": "pinsage", "pinsage": {"pooling": "max"}})
