"""Each family's forward pass against a small case checked by hand, then its properties."""
import math

import dgl
import numpy as np
import pytest
import torch

from recsys.config import EvalConfig, RunConfig, TrainConfig
from recsys.data.types import IndexedData
from recsys.families import FAMILIES
from recsys.graph.build import SIMILAR_USER, build_graph
from recsys.models import build_model
from recsys.models.gcn import GCN, NEGATIVE_SLOPE
from recsys.models.pinsage import PinSage, WeightedPoolingConv
from recsys.models.sage import GraphSAGE, SAGELayer
from recsys.prepare import prepare
from recsys.train import evaluate_model, fit

EMPTY = np.zeros((0, 2), dtype=np.int64)


def five_node_data():
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2]])
    return IndexedData(np.array(["u0", "u1"]), np.array(["i0", "i1", "i2"]), train, EMPTY, EMPTY, EMPTY)


def test_gcn_two_layers_match_the_dense_formula():
    # A + I on the 5-node graph: degrees become 3, 3, 2, 3, 2.
    a = np.zeros((5, 5))
    for u, i in [(0, 0), (0, 1), (1, 1), (1, 2)]:
        a[u, 2 + i] = a[2 + i, u] = 1
    a += np.eye(5)
    d = a.sum(1)
    a_hat = a / np.sqrt(np.outer(d, d))
    assert a_hat[0, 2] == pytest.approx(1 / math.sqrt(3 * 2))
    graph = build_graph(five_node_data())
    np.testing.assert_allclose(graph.norm_adj(self_loops=True).matrix.to_dense().numpy(), a_hat, atol=1e-7)

    torch.manual_seed(0)
    model = GCN(2, 3, dim=3, layers=2)
    users, items = model.embed(graph)
    e = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    w1, w2 = (w.weight.detach().double().numpy().T for w in model.weights)
    hidden = a_hat @ e @ w1
    expected = a_hat @ np.where(hidden > 0, hidden, NEGATIVE_SLOPE * hidden) @ w2
    assert NEGATIVE_SLOPE == 0.2 and (hidden < 0).any()  # the leak is exercised
    np.testing.assert_allclose(torch.cat([users, items]).detach().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("aggregator, expected", [
    # node 0 has in-neighbours 1 (h=2) and 2 (h=-4); self h=1; weights 1, biases 0:
    ("mean", 1 + (2 - 4) / 2),
    ("sum", 1 + (2 - 4)),
    ("max", 1 + 2),
    ("pool", 1 + max(max(2, 0), max(-4, 0))),  # max of ReLU(identity transform)
])
def test_sage_aggregators_by_hand(aggregator, expected):
    g = dgl.graph((torch.tensor([1, 2]), torch.tensor([0, 0])), num_nodes=3)
    layer = SAGELayer(1, 1, aggregator)
    with torch.no_grad():
        for lin in (layer.self_lin, layer.neigh_lin, layer.pool):
            if lin is not None:
                lin.weight.fill_(1.0)
                if lin.bias is not None:
                    lin.bias.zero_()
    out = layer(g, torch.tensor([[1.0], [2.0], [-4.0]]))
    assert out[0, 0].item() == pytest.approx(expected)
    assert out[1, 0].item() == pytest.approx(2.0)  # no in-neighbours: self term only


def test_pinsage_importance_pooling_by_hand():
    # item 0 has neighbours 1 (visited 3 times) and 2 (visited once); Q = identity, W picks the pooled half.
    g = dgl.graph((torch.tensor([1, 2]), torch.tensor([0, 0])), num_nodes=3)
    g.edata["weights"] = torch.tensor([3, 1])
    conv = WeightedPoolingConv(1)
    with torch.no_grad():
        conv.Q.weight.fill_(1.0)
        conv.Q.bias.zero_()
        conv.W.weight.copy_(torch.tensor([[0.0, 1.0]]))
        conv.W.bias.zero_()
    h = torch.tensor([[5.0], [2.0], [6.0]])
    pooled = (3 * 2.0 + 1 * 6.0) / 4
    out = conv(g, h)
    assert out[0, 0].item() == pytest.approx(pooled / abs(pooled))  # then L2-normalised (1-D: sign)


@pytest.fixture(scope="module")
def prepared(small_network):
    cfg = RunConfig.model_validate({"features": {"text": False}, "model": {"family": "sage"}})
    return prepare(small_network, cfg)


def test_pinsage_neighbourhoods_and_user_vectors(prepared):
    graph = prepared.graph
    model = PinSage(graph.n_users, graph.n_items, dim=8, layers=1, num_neighbors=5, num_walks=20,
                    item_features=graph.item_features)
    (nbrs,) = model.neighbourhoods(graph)
    assert nbrs.num_nodes() == graph.n_items
    assert int(nbrs.in_degrees().max()) <= 5 and bool((nbrs.edata["weights"] > 0).all())
    users, items = model.embed(graph)
    u, i = graph.g.edges(etype="interacts")
    first = int(u[0])
    mine = i[u == first].long()
    torch.testing.assert_close(users[first], items[mine].mean(0))


def test_pinsage_user_without_items_gets_neighbours_or_popular_taste():
    # u0: items 0, 1; u1: items 1, 2; u2: none, a cold-start edge from u0; u3: none, no edges.
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2]])
    data = IndexedData(np.array(["u0", "u1", "u2", "u3"]), np.array(["i0", "i1", "i2"]), train, EMPTY, EMPTY, EMPTY)
    cold = {SIMILAR_USER: (torch.tensor([0]), torch.tensor([2]), torch.tensor([1.0]))}
    graph = build_graph(data, cold_edges=cold)
    model = PinSage(graph.n_users, graph.n_items, dim=4, layers=1, num_neighbors=2, num_walks=4)
    with torch.no_grad():
        users, items = model.embed(graph)
    torch.testing.assert_close(users[0], items[[0, 1]].mean(0))
    torch.testing.assert_close(users[2], users[0])  # its one neighbour with items
    torch.testing.assert_close(users[3], items[[0, 1, 1, 2]].mean(0))  # item mean over the training pairs
    assert users[3].norm() > 0


def test_pinsage_user_embedding_adds_a_trained_vector_to_the_item_mean():
    # u0: items 0, 1; u1: items 1, 2; u2: none (a cold-start edge from u0); u3: a member added after training.
    train = np.array([[0, 0], [0, 1], [1, 1], [1, 2]])
    data = IndexedData(np.array(["u0", "u1", "u2"]), np.array(["i0", "i1", "i2"]), train, EMPTY, EMPTY, EMPTY)
    cold = {SIMILAR_USER: (torch.tensor([0]), torch.tensor([2]), torch.tensor([1.0]))}
    torch.manual_seed(0)  # a draw where items 0 and 2 get different vectors (at width 4 they may coincide)
    model = PinSage(3, 3, dim=4, layers=1, num_neighbors=2, num_walks=4, user_embedding=True)
    with torch.no_grad():
        model.user_emb.weight.normal_()  # trained vectors are not zero (they start so)
        users, items = model.embed(build_graph(data, cold_edges=cold))
    own = model.user_emb.weight.detach()
    torch.testing.assert_close(users[0], items[[0, 1]].mean(0) + own[0])
    torch.testing.assert_close(users[2], users[0])  # no items: its neighbour's vector, not its untrained own
    grown = IndexedData(np.append(data.user_ids, "u3"), data.item_ids, np.vstack([train, [[3, 2]]]),
                        EMPTY, EMPTY, EMPTY)
    with torch.no_grad():
        users, items = model.embed(build_graph(grown))
    torch.testing.assert_close(users[3], items[2])  # added after training: the mean of its items alone
    # training reads the user's own vector: the loss's gradient reaches it, and only the batch's users' rows
    model.margin = 10.0  # the hinge active whatever the scores (the vector starts at zero: L2's gradient is 0)
    ranking, reg = model.batch_loss(build_graph(data), torch.tensor([0]), torch.tensor([0]), torch.tensor([[2]]))
    (ranking + reg).backward()
    grad = model.user_emb.weight.grad
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


def test_sage_embeds_a_new_node_without_retraining(prepared):
    graph, data = prepared.graph, prepared.indexed
    model = GraphSAGE(graph.n_users, graph.n_items, dim=8, fanouts=(5, 5),
                      user_features=graph.user_features, item_features=graph.item_features, chunk_size=97)
    fit(model, graph, data, TrainConfig(epochs=2, batch_size=1024, progress=False, eval_every=10), EvalConfig())
    assert model.inductive
    before = {k: v.clone() for k, v in model.state_dict().items()}

    # A new member: a copy of user 0's profile, with three of user 1's jobs.
    new_items = data.train[data.train[:, 0] == 1][:3, 1]
    grown = IndexedData(np.append(data.user_ids, "newcomer"), data.item_ids,
                        np.concatenate([data.train, np.stack([np.full(3, data.n_users), new_items], 1)]),
                        EMPTY, EMPTY, EMPTY)
    user_x = torch.cat([graph.user_features, graph.user_features[:1]])
    grown_graph = build_graph(grown, user_features=user_x, item_features=graph.item_features)
    with torch.no_grad():
        users, items = model.embed(grown_graph)  # chunked, layer by layer
        hg = grown_graph.homogeneous()
        h = model.input_vectors(torch.arange(hg.num_nodes()), grown_graph)
        whole = model._forward([hg, hg], h)  # the trained model on the whole grown graph at once
    torch.testing.assert_close(users[-1], whole[grown.n_users - 1])
    torch.testing.assert_close(torch.cat([users, items]), whole)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert users[-1].abs().sum() > 0


@pytest.mark.parametrize("aggregator, layers", [("mean", 2), ("sum", 2), ("mean", 1), ("mean", 3)])
def test_sage_aggregating_features_before_projecting_them_equals_projecting_first(prepared, aggregator, layers):
    """Layer 1 over the features themselves (GraphSAGE.linear_first): the vectors and every parameter's
    gradient of the usual order (project each input node, then aggregate), on the same sampled blocks."""
    import dgl

    graph = prepared.graph
    torch.manual_seed(0)
    model = GraphSAGE(graph.n_users, graph.n_items, dim=8, aggregator=aggregator, fanouts=(4,) * layers,
                      user_features=graph.user_features, item_features=graph.item_features)
    assert model.linear_first
    dgl.seed(0)
    inputs, blocks = model.sample_blocks(graph, torch.arange(0, graph.n_nodes, 5))
    out = {}
    for order, forward in (("features first", lambda: model._from_inputs(blocks, inputs, graph)),
                           ("vectors first", lambda: model._forward(blocks, model.input_vectors(inputs, graph)))):
        model.zero_grad()
        y = forward()
        y.pow(2).sum().backward()
        out[order] = (y.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(out["features first"][0], out["vectors first"][0])
    assert out["features first"][1].keys() == out["vectors first"][1].keys()
    for name, grad in out["vectors first"][1].items():  # float32 sums in another order: within 1e-6 of the largest
        scale = float(grad.abs().max())
        torch.testing.assert_close(out["features first"][1][name], grad, rtol=1e-5, atol=1e-6 * scale, msg=name)
    assert not GraphSAGE(graph.n_users, graph.n_items, dim=8, aggregator="max", user_features=graph.user_features,
                         item_features=graph.item_features).linear_first  # a maximum does not commute


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_and_beats_random(family, prepared):
    cfg = RunConfig.model_validate({"model": {"family": family, "dim": 16, "layers": 2,
                                              "sage": {"fanouts": [10, 5]}}})
    graph, data = prepared.graph, prepared.indexed
    model = build_model(cfg.model, graph)
    if any(p.requires_grad for p in model.parameters()):
        fit(model, graph, data, TrainConfig(epochs=4, batch_size=512, lr=0.01, progress=False, eval_every=10),
            EvalConfig())
    else:  # fitted whole, without gradients (the graph filter)
        model.fit(graph)
    m = evaluate_model(model, graph, data, "test", EvalConfig(ks=[20]))
    random_recall = 20 / data.n_items
    assert m["recall@20"] > 1.5 * random_recall, (family, m)


def test_lightgcn_with_features_uses_them(prepared):
    cfg = RunConfig.model_validate({"model": {"dim": 8, "layers": 2, "lightgcn": {"use_features": True}}})
    graph = prepared.graph
    model = build_model(cfg.model, graph)
    users, items = model.embed(graph)
    assert users.shape[1] == 16 and items.shape[1] == 16
    (users.sum() + items.sum()).backward()
    assert model.user_proj.weight.grad.abs().sum() > 0 and model.item_proj.weight.grad.abs().sum() > 0


def test_the_seed_fixes_the_initial_weights(prepared):
    cfg = RunConfig().model
    a, b = (build_model(cfg, prepared.graph, seed=3) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_model(cfg, prepared.graph, seed=4)
    assert not torch.equal(a.user_emb.weight, c.user_emb.weight)


def test_sage_batch_reads_its_fan_out_and_never_its_own_edges(prepared):
    graph, data = prepared.graph, prepared.indexed
    model = GraphSAGE(graph.n_users, graph.n_items, dim=8, fanouts=(4, 3))
    hg = graph.homogeneous()
    pairs = torch.arange(0, len(data.train), 7)
    seeds = torch.unique(torch.cat([torch.from_numpy(data.train[pairs.numpy(), 0]),
                                    torch.from_numpy(data.train[pairs.numpy(), 1]) + graph.n_users]))
    _, blocks = model.sample_blocks(graph, seeds, pairs)
    hidden = set(pairs.tolist()) | set((pairs + graph.g.num_edges("interacts")).tolist())
    for block, fanout in zip(blocks, model.fanouts):
        eids = block.edata[dgl.EID]
        assert not hidden & set(eids.tolist())
        dst = block.dstdata[dgl.NID]
        degree = hg.in_degrees(dst)
        own = torch.tensor([len(hidden & set(hg.in_edges(int(v), form="eid").tolist())) for v in dst])
        read = block.in_degrees()
        # DGL drops the draws of a hidden edge after sampling: nodes without hidden edges show the rule
        expected = torch.minimum(degree, torch.tensor(fanout))
        untouched = own == 0
        torch.testing.assert_close(read[untouched], expected[untouched])
        assert bool((read <= expected).all()) and bool((read[degree == own] == 0).all())
    assert blocks[-1].num_dst_nodes() == len(seeds)


def test_sage_training_repeats_exactly_with_the_same_seed(prepared):
    graph, data = prepared.graph, prepared.indexed
    cfg = TrainConfig(epochs=2, batch_size=1024, progress=False, eval_every=10)
    losses = []
    for _ in range(2):
        dgl.seed(12345 + len(losses))  # whatever state DGL's generator was left in
        torch.manual_seed(0)
        model = GraphSAGE(graph.n_users, graph.n_items, dim=8, fanouts=(3, 3), seed=7)
        losses.append([h["loss"] for h in fit(model, graph, data, cfg, EvalConfig()).history])
    assert losses[0] == losses[1]
