"""PinSage's mini-batch training: a batch convolves only the items its loss reads (positives,
negatives, a sample of each user's other items) through their sampled neighbourhoods, and with a
sample that holds all of a user's items its loss is the full-graph computation's."""
from __future__ import annotations

import dgl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.config import ModelConfig
from recsys.data.types import IndexedData
from recsys.graph.build import build_graph
from recsys.models import build_model
from recsys.models.pinsage import PinSage, distinct

# Users 0-5 over items 0-6; user 5 has a single item (their vector in a batch is then zero).
PAIRS = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (2, 2), (2, 4), (2, 5), (3, 3), (3, 6), (4, 5),
         (4, 6), (4, 0), (5, 4)]


def _graph(pairs=PAIRS):
    pairs = np.array(pairs, dtype=np.int64)
    n_users, n_items = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
    data = IndexedData(np.array([f"u{k}" for k in range(n_users)]), np.array([f"i{k}" for k in range(n_items)]),
                       pairs, pairs[:0], pairs[:0], np.zeros((0, 2), dtype=np.int64))
    return build_graph(data)


def _model(graph, layers=2, user_items=100, pairwise_loss="hinge", dim=4):
    torch.manual_seed(0)
    model = PinSage(graph.n_users, graph.n_items, dim=dim, layers=layers, num_neighbors=2, num_walks=20,
                    user_items=user_items, pairwise_loss=pairwise_loss)
    dgl.seed(3)
    model.set_neighbourhoods(model.neighbourhoods(graph))
    return model


def _by_hand(model, graph, users, pos, neg):
    """Every item convolved over the whole graph with plain loops, then the final dense layers, users
    the mean of their items but the positive, then PinSage's hinge: what mini-batches must reproduce."""
    h = model.item_emb.weight
    for conv, nbrs in zip(model.convs, model._neighbourhoods):
        src, dst = (t.tolist() for t in nbrs.edges())
        w = nbrs.edata["weights"].tolist()
        rows = []
        for v in range(graph.n_items):
            pooled, total = torch.zeros(h.shape[1]), 0.0
            for s, d, c in zip(src, dst, w):
                if d == v:
                    pooled = pooled + c * torch.relu(conv.Q(h[s]))
                    total += c
            pooled = pooled / max(total, 1.0)
            rows.append(F.normalize(torch.relu(conv.W(torch.cat([h[v], pooled]))), dim=0))
        h = torch.stack(rows)
    h = torch.stack([F.normalize(model.head[2](torch.relu(model.head[0](v))), dim=0) for v in h])
    history = {}
    for u, i in PAIRS:
        history.setdefault(u, []).append(i)
    losses = []
    for u, p, ns in zip(users.tolist(), pos.tolist(), neg.tolist()):
        others = list(history[u])
        others.remove(p)
        vec = torch.stack([h[i] for i in others]).mean(0) if others else torch.zeros(h.shape[1])
        for n in ns:
            losses.append(torch.relu(vec @ h[n] - vec @ h[p] + model.margin))
    return torch.stack(losses).mean()


def _batch():
    users = torch.tensor([0, 2, 4, 5, 1])
    pos = torch.tensor([1, 5, 0, 4, 3])
    neg = torch.tensor([[3, 6], [0, 6], [2, 3], [0, 1], [2, 5]])
    return users, pos, neg


@pytest.mark.parametrize("layers", [1, 2])
def test_minibatch_loss_is_the_full_graph_loss(layers):
    graph = _graph()
    model = _model(graph, layers=layers)
    users, pos, neg = _batch()
    loss, reg = model.batch_loss(graph, users, pos, neg)
    expected = _by_hand(model, graph, users, pos, neg)
    torch.testing.assert_close(loss, expected)
    # and the full inference path (encode) agrees with the loops too
    user_vecs, item_vecs = model.encode(graph)
    sums, counts = model._user_sums(graph, item_vecs)
    u = (sums[users] - item_vecs[pos]) / (counts[users] - 1).clamp(min=1)
    torch.testing.assert_close(model.ranking_loss(u, item_vecs[pos], item_vecs[neg]), expected)
    e = model.item_emb.weight
    torch.testing.assert_close(reg, 0.5 * (e[pos].pow(2).sum() + e[neg].pow(2).sum() / 2) / 5)


def test_minibatch_items_match_full_inference():
    graph = _graph()
    model = _model(graph)
    items = torch.tensor([0, 3, 6])
    torch.testing.assert_close(model.item_vectors_of(graph, items), model.item_vectors(graph)[items])


def test_gradients_reach_embeddings_and_layers():
    graph = _graph()
    model = _model(graph, dim=16)
    loss, reg = model.batch_loss(graph, *_batch())
    assert float(loss) > 0
    (loss + 1e-3 * reg).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
    assert float(model.item_emb.weight.grad.abs().sum()) > 0
    for conv in model.convs:  # every layer's transforms learn (a dead ReLU unit may leave single entries at 0)
        assert float(conv.W.weight.grad.abs().sum()) > 0 and float(conv.Q.weight.grad.abs().sum()) > 0


def test_bpr_option_and_softmax_objective():
    graph = _graph()
    model = _model(graph, pairwise_loss="bpr")
    users, pos, neg = _batch()
    loss, _ = model.batch_loss(graph, users, pos, neg)
    _, items = model.encode(graph)
    assert float(loss) == pytest.approx(float(F.softplus(torch.zeros(1)).item()), abs=0.5)  # scores within [-1, 1]
    model.set_objective("softmax", 0.1)
    loss_sm, _ = model.batch_loss(graph, users, pos, neg)
    assert bool(torch.isfinite(loss_sm))


def test_history_sample_is_bounded_distinct_and_leaves_the_positive_out():
    pairs = [(0, i) for i in range(30)] + [(1, 2), (1, 7)]
    graph = _graph(pairs)
    model = PinSage(graph.n_users, graph.n_items, dim=4, layers=1, user_items=5)
    torch.manual_seed(0)
    drawn = set()
    for _ in range(50):
        items, mask = model.sample_histories(graph, torch.tensor([0, 1, 0]), torch.tensor([4, 7, 29]))
        assert items.shape == (3, 5)
        assert mask[0].all() and mask[2].all() and mask[1].tolist() == [True] + [False] * 4
        for row, p in ((0, 4), (2, 29)):
            picked = items[row].tolist()
            assert len(set(picked)) == 5 and p not in picked and set(picked) <= set(range(30))
            drawn.update(picked)
        assert int(items[1, 0]) == 2  # user 1's only other item
    assert len(drawn) == 30  # every item of user 0 gets drawn
    everything, mask = model.sample_histories(graph, torch.tensor([1]), torch.tensor([2]))
    assert everything[mask].tolist() == [7]


def test_distinct_is_unique_with_inverse():
    nodes = torch.tensor([5, 1, 5, 3, 1, 0])
    ids, rows = distinct(nodes, 8)
    ref_ids, ref_rows = torch.unique(nodes, return_inverse=True)
    assert ids.tolist() == ref_ids.tolist() and rows.tolist() == ref_rows.tolist()


def test_options_reach_the_model_and_bad_values_are_refused():
    graph = _graph()
    cfg = ModelConfig.model_validate({"family": "pinsage", "dim": 4, "layers": 1,
                                      "pinsage": {"user_items": 3, "pairwise_loss": "bpr"}})
    model = build_model(cfg, graph)
    assert model.user_items == 3 and model.pairwise_loss == "bpr"
    assert ModelConfig().pinsage.user_items == 32 and ModelConfig().pinsage.pairwise_loss == "hinge"
    with pytest.raises(Exception, match="user_items"):
        ModelConfig.model_validate({"family": "pinsage", "pinsage": {"user_items": 0}})
    with pytest.raises(ValueError, match="pairwise_loss"):
        PinSage(2, 2, pairwise_loss="softmax")
