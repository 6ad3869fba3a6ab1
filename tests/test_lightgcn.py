"""LightGCN against a dense-matrix reference on a 5-node graph computed by hand.

Graph: users u0, u1; items i0, i1, i2; edges u0-i0, u0-i1, u1-i1, u1-i2.
Node order u0, u1, i0, i1, i2. Degrees 2, 2, 1, 2, 1, so the normalised weights are
u0-i0 = 1/sqrt(2*1), u0-i1 = 1/sqrt(2*2) = 0.5, u1-i1 = 0.5, u1-i2 = 1/sqrt(2*1).
"""
import math

import numpy as np
import torch

from recsys.data.types import IndexedData
from recsys.graph.build import build_graph
from recsys.models.lightgcn import LightGCN

R2 = 1 / math.sqrt(2)
HAND_ADJ = np.array([
    # u0   u1   i0   i1   i2
    [0.0, 0.0, R2, 0.5, 0.0],   # u0
    [0.0, 0.0, 0.0, 0.5, R2],   # u1
    [R2, 0.0, 0.0, 0.0, 0.0],   # i0
    [0.5, 0.5, 0.0, 0.0, 0.0],  # i1
    [0.0, R2, 0.0, 0.0, 0.0],   # i2
])


def five_node_graph():
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2]])
    empty = np.zeros((0, 2), dtype=np.int64)
    data = IndexedData(np.array(["u0", "u1"]), np.array(["i0", "i1", "i2"]), train, empty, empty, empty)
    return data, build_graph(data)


def test_normalised_adjacency_matches_the_hand_computed_matrix():
    _, graph = five_node_graph()
    np.testing.assert_allclose(graph.norm_adj().matrix.to_dense().numpy(), HAND_ADJ, atol=1e-7)


def test_one_layer_by_hand():
    # E0 = 1 on u0, 0 elsewhere; K = 1: final = (E0 + A E0) / 2.
    # A E0 is u0's column: i0 gets 1/sqrt(2), i1 gets 0.5.
    data, graph = five_node_graph()
    model = LightGCN(2, 3, dim=1, layers=1)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0], [0.0]]))
        model.item_emb.weight.zero_()
    users, items = model.embed(graph)
    np.testing.assert_allclose(users.detach().numpy().ravel(), [0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(items.detach().numpy().ravel(), [R2 / 2, 0.25, 0.0], atol=1e-7)


def test_three_layers_equal_the_dense_reference_and_so_do_gradients():
    data, graph = five_node_graph()
    torch.manual_seed(0)
    model = LightGCN(2, 3, dim=4, layers=3)
    users, items = model.embed(graph)

    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().requires_grad_(True)
    a = torch.tensor(HAND_ADJ)
    layers = [e0]
    for _ in range(3):
        layers.append(a @ layers[-1])
    dense = torch.stack(layers).mean(0)
    np.testing.assert_allclose(torch.cat([users, items]).detach().numpy(), dense.detach().numpy(), atol=1e-6)

    weights = torch.arange(20, dtype=torch.float64).reshape(5, 4)
    (torch.cat([users, items]).double() * weights).sum().backward()
    (dense * weights).sum().backward()
    ours = torch.cat([model.user_emb.weight.grad, model.item_emb.weight.grad]).numpy()
    np.testing.assert_allclose(ours, e0.grad.numpy(), atol=1e-5)


def test_isolated_nodes_keep_their_layer0_share_only():
    # A cold item (no edges) has a zero row in the adjacency: its final vector is E0 / (K + 1).
    train = np.array([[0, 0], [1, 1]])
    empty = np.zeros((0, 2), dtype=np.int64)
    data = IndexedData(np.array(["a", "b"]), np.array(["x", "y", "cold"]), train, empty, empty, empty)
    graph = build_graph(data)
    model = LightGCN(2, 3, dim=3, layers=2)
    _, items = model.embed(graph)
    np.testing.assert_allclose(items[2].detach().numpy(), model.item_emb.weight[2].detach().numpy() / 3, atol=1e-7)
