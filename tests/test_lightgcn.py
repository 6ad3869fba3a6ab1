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
from recsys.models.base import RecModel
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


def _full_batch_loss(model, graph, users, pos, neg):
    """The plain definition: propagate everything, then index (what RecModel.batch_loss does)."""
    return RecModel.batch_loss(model, graph, users, pos, neg)


def _check_batch_rows_against_full_propagation(graph, n_users, n_items, layers, seed=0, k=1,
                                               objective="bpr", cosine=False):
    torch.manual_seed(seed)
    fast = LightGCN(n_users, n_items, dim=8, layers=layers)
    slow = LightGCN(n_users, n_items, dim=8, layers=layers)
    slow.load_state_dict(fast.state_dict())
    for m in (fast, slow):
        m.set_objective(objective, 0.2)
        m.cosine = cosine
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(n_users, (40,), generator=g)  # repeats on purpose
    pos = torch.randint(n_items, (40,), generator=g)
    neg = torch.randint(n_items, (40, k), generator=g)
    (a, ra), (b, rb) = fast.batch_loss(graph, users, pos, neg), _full_batch_loss(slow, graph, users, pos, neg)
    assert abs(a.item() - b.item()) < 1e-6 and abs(ra.item() - rb.item()) < 1e-6
    (a + 0.3 * ra).backward()
    (b + 0.3 * rb).backward()
    for p, q in ((fast.user_emb, slow.user_emb), (fast.item_emb, slow.item_emb)):
        np.testing.assert_allclose(p.weight.grad.numpy(), q.weight.grad.numpy(), atol=1e-6)


def test_batch_rows_only_training_step_equals_full_propagation(small_network):
    data = small_network.indexed()
    graph = build_graph(data)
    for layers in (0, 1, 2, 3):
        _check_batch_rows_against_full_propagation(graph, data.n_users, data.n_items, layers)
    # several negatives per positive, the softmax objective and cosine scores go through the same path
    _check_batch_rows_against_full_propagation(graph, data.n_users, data.n_items, 3, k=4, objective="softmax",
                                               cosine=True)


def test_batch_rows_only_with_one_way_cold_start_edges(small_network):
    # Cold-start blocks make the operator non-symmetric: the backward must use A^T, not A.
    from recsys.config import RunConfig
    from recsys.prepare import prepare
    cfg = RunConfig.model_validate({"data": {"split": {"cold_user_fraction": 0.05, "cold_item_fraction": 0.05}},
                                    "graph": {"cold_start": {"enabled": True, "k": 5}}})
    p = prepare(small_network, cfg)
    assert p.graph.norm_adj().transpose is not p.graph.norm_adj().matrix
    _check_batch_rows_against_full_propagation(p.graph, p.indexed.n_users, p.indexed.n_items, 3)


def test_transform_variant_equals_the_dense_reference_with_weights_and_relu():
    # transform=True without features: E(k+1) = ReLU(A E(k) W_k + b_k), mean over layers 0..K.
    data, graph = five_node_graph()
    torch.manual_seed(0)
    model = LightGCN(2, 3, dim=4, layers=2, transform=True)
    users, items = model.embed(graph)
    a = torch.tensor(HAND_ADJ, dtype=torch.float32)
    x = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    total = x
    for w in model.weights:
        x = torch.relu(a @ x @ w.weight.detach().T + w.bias.detach())
        total = total + x
    np.testing.assert_allclose(torch.cat([users, items]).detach().numpy(), (total / 3).numpy(), atol=1e-6)
    # the weights train: a batch loss reaches them
    ranking, _ = model.batch_loss(graph, torch.tensor([0]), torch.tensor([0]), torch.tensor([[2]]))
    ranking.backward()
    assert model.weights[0].weight.grad is not None and model.weights[0].weight.grad.abs().sum() > 0


def test_row_products_are_cached_per_graph():
    _, graph = five_node_graph()
    rows = graph.row_products()
    assert graph.row_products() is rows and rows.a is graph.norm_adj().matrix
    assert graph.row_products(self_loops=True) is not rows
    _, other = five_node_graph()
    assert other.row_products() is not rows


def test_batch_rows_gradient_equals_autograd_through_propagate():
    from recsys.graph.propagation import BatchRows, propagate
    g = torch.Generator().manual_seed(3)
    n_users, n_items = 30, 40
    train = np.unique(np.stack([torch.randint(n_users, (150,), generator=g).numpy(),
                                torch.randint(n_items, (150,), generator=g).numpy()], 1), axis=0)
    empty = np.zeros((0, 2), dtype=np.int64)
    data = IndexedData(np.arange(n_users).astype(str), np.arange(n_items).astype(str), train, empty, empty, empty)
    graph = build_graph(data)
    r = torch.unique(torch.randint(n_users + n_items, (25,), generator=g))
    for layers in (0, 1, 2, 3):
        w = [torch.randn(n, 6, generator=g, dtype=torch.float32) for n in (n_users, n_items)]
        fast_w = [t.clone().requires_grad_(True) for t in w]
        slow_w = [t.clone().requires_grad_(True) for t in w]
        up, up0 = torch.randn(len(r), 6, generator=g), torch.randn(len(r), 6, generator=g)
        final, first = BatchRows.apply(*fast_w, r, graph.row_products(), layers)
        e0 = torch.cat(slow_w)
        reference = propagate(graph.norm_adj(), e0, layers)[r]
        np.testing.assert_allclose(final.detach().numpy(), reference.detach().numpy(), atol=1e-6)
        np.testing.assert_array_equal(first.detach().numpy(), e0[r].detach().numpy())
        ((final * up).sum() + (first * up0).sum()).backward()
        ((reference * up).sum() + (e0[r] * up0).sum()).backward()
        for a, b in zip(fast_w, slow_w):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), atol=1e-6)
