"""Warm starts (recsys/warm.py): rows move with their ids, new ids follow the documented rule, a
champion that does not fit leaves the model as built, and the choice of a start follows
train.start, train.scratch_every and the drift check. Checked by hand on tables of a few rows."""
import numpy as np
import pytest
import torch

from recsys.config import EvalConfig, TrainConfig
from recsys.data.types import IndexedData
from recsys.graph.build import pairs_graph
from recsys.models.gcn import GCN
from recsys.models.mf import MF
from recsys.warm import WarmStartError, WarmState, carry, choose


def _data(users, items, train, valid=()):
    pairs = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    held = np.asarray(valid, dtype=np.int64).reshape(-1, 2)
    return IndexedData(np.asarray(users), np.asarray(items), pairs, held, np.zeros((0, 2), np.int64),
                       np.zeros((0, 2), np.int64))


def _champion():
    """MF over users a, b, c and items x, y: user rows 1, 2, 3 (times ones), item rows 10, 20."""
    model = MF(3, 2, dim=2)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
        model.item_emb.weight.copy_(torch.tensor([[10.0, 10.0], [20.0, 20.0]]))
    return WarmState("mf", {"family": "mf", "dim": 2}, model.state_dict(), np.array(["a", "b", "c"]),
                     np.array(["x", "y"]), version="4", chain=2)


def test_rows_move_with_their_ids_and_new_users_take_their_items_mean():
    # today: c, a, then a new user d who had x and y; item y first, x second, then a new item z (user a's)
    today = _data(["c", "a", "d"], ["y", "x", "z"], [[2, 0], [2, 1], [1, 2]])
    model = MF(3, 3, dim=2)
    init_z = model.item_emb.weight[2].detach().clone()
    carried = carry(model, _champion(), "mf", today, "neighbours")
    users, items = model.user_emb.weight.detach(), model.item_emb.weight.detach()
    assert users[0].tolist() == [3.0, 3.0] and users[1].tolist() == [1.0, 1.0]  # c and a, by id
    assert items[0].tolist() == [20.0, 20.0] and items[1].tolist() == [10.0, 10.0]  # y and x
    assert users[2].tolist() == [15.0, 15.0]  # d: the mean of x (10) and y (20)
    assert items[2].tolist() == [1.0, 1.0]  # z: its one user a's carried row
    assert not torch.equal(items[2], init_z)
    assert carried == {"users_carried": 2, "users_new": 1, "items_carried": 2, "items_new": 1,
                       "new_rows": "neighbours", "shrink": 1.0, "perturb": 0.0}


def test_shrink_and_perturb_scales_the_carried_values_and_adds_the_fresh_initialisation():
    today = _data(["a", "b", "c"], ["x", "y"], [[0, 0]])
    model = MF(3, 2, dim=2)
    fresh = model.user_emb.weight.detach().clone()
    carry(model, _champion(), "mf", today, shrink=0.5, perturb=0.1)
    expected = 0.5 * torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]) + 0.1 * fresh
    assert torch.allclose(model.user_emb.weight.detach(), expected)


def test_new_rows_keep_the_usual_initialisation_with_init_or_without_carried_neighbours():
    today = _data(["a", "d", "e"], ["x", "z"], [[1, 0], [2, 1]])  # d had x (carried); e only the new z
    for rule in ("init", "neighbours"):
        model = MF(3, 2, dim=2)
        built = model.user_emb.weight.detach().clone()
        carry(model, _champion(), "mf", today, rule)
        rows = model.user_emb.weight.detach()
        assert torch.equal(rows[2], built[2])  # e: no carried neighbour either way
        assert rows[1].tolist() == ([10.0, 10.0] if rule == "neighbours" else built[1].tolist())


@pytest.mark.parametrize("case, message", [
    ("family", "is a mf model, today's is gcn"),
    ("dim", "model.dim changed"),
    ("overlap", "no user or item of today's data is known"),
])
def test_a_champion_that_does_not_fit_raises_and_leaves_the_model_as_built(case, message):
    today = _data(["p", "q"], ["r", "s"], [[0, 0], [1, 1]]) if case == "overlap" else _data(["a"], ["x"], [[0, 0]])
    if case == "family":
        model = GCN(1, 1, dim=2, layers=1)
        family = "gcn"
    else:
        model = MF(today.n_users, today.n_items, dim=3 if case == "dim" else 2)
        family = "mf"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WarmStartError, match=message):
        carry(model, _champion(), family, today)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_shared_weight_of_another_shape_is_refused():
    champion = GCN(2, 2, dim=4, layers=1)
    state = WarmState("gcn", {}, champion.state_dict(), np.array(["a", "b"]), np.array(["x", "y"]), "1")
    wider = GCN(2, 2, dim=4, layers=2)  # one more layer: a weight the champion lacks
    with pytest.raises(WarmStartError, match="has no"):
        carry(wider, state, "gcn", _data(["a", "b"], ["x", "y"], [[0, 0]]))
    same = GCN(2, 2, dim=4, layers=1)
    carry(same, state, "gcn", _data(["b", "a"], ["x", "y"], [[0, 0]]))
    for name, value in champion.state_dict().items():
        if name not in same.id_tables():
            assert torch.equal(same.state_dict()[name], value)  # shared weights as they were
    assert torch.equal(same.user_emb.weight[0], champion.user_emb.weight[1])


def test_the_choice_of_a_start():
    state = _champion()  # chain 2: two warm starts in a row behind it
    assert choose(TrainConfig(start="scratch"), state, "")[0] is None
    assert choose(TrainConfig(), None, "no champion yet") == (None, "no champion yet")
    assert choose(TrainConfig(), state, "")[0] is state
    assert choose(TrainConfig(scratch_every=3), state, "")[0] is None  # this would be the third warm start
    assert "scratch_every=3" in choose(TrainConfig(scratch_every=3), state, "")[1]
    assert choose(TrainConfig(scratch_every=4), state, "")[0] is state
    assert choose(TrainConfig(scratch_every=0), state, "")[0] is state  # never
    assert choose(TrainConfig(), state, "", drift="share of users still present 0.4 < 0.5")[0] is None
    forced = TrainConfig(start="champion", scratch_every=1)
    assert choose(forced, state, "", drift="anything")[0] is state


def test_a_warm_fit_starts_at_the_champions_validation_figure_and_keeps_it_if_nothing_beats_it():
    from recsys.train import evaluate_model, fit

    rng = np.random.default_rng(0)
    pairs = np.stack(np.meshgrid(np.arange(30), np.arange(20)), -1).reshape(-1, 2)[rng.permutation(600)[:400]]
    data = _data([f"u{i}" for i in range(30)], [f"i{i}" for i in range(20)], pairs[:300], pairs[300:])
    graph = pairs_graph(data)
    cfg = TrainConfig(epochs=4, eval_every=1, lr=0.01, l2=1e-4, average=None, progress=False,
                      max_steps_per_epoch=None, batch_size=64)
    evals = EvalConfig(ks=[20])
    champion = MF(30, 20, dim=8)
    fit(champion, graph, data, cfg, evals)
    figure = evaluate_model(champion, graph, data, "valid", evals)["ndcg@20"]
    state = WarmState("mf", {}, champion.state_dict(), data.user_ids, data.item_ids, "1")

    warm = MF(30, 20, dim=8)
    carry(warm, state, "mf", data)
    warm.warm_from = "1"
    result = fit(warm, graph, data, cfg.model_copy(update={"lr": 1e-12}), evals)  # no step can improve it
    assert result.history[0]["epoch"] == 0
    assert result.history[0]["valid_ndcg@20"] == pytest.approx(figure, abs=1e-6)
    assert result.best_epoch == 0 and result.best_score == pytest.approx(figure, abs=1e-6)
    assert evaluate_model(warm, graph, data, "valid", evals)["ndcg@20"] == pytest.approx(figure, abs=1e-6)


def test_a_later_stage_starts_from_the_champions_module_only_where_it_fits():
    from torch import nn

    from recsys.warm import load_stage

    champion = nn.Linear(4, 2)
    same, wider = nn.Linear(4, 2), nn.Linear(5, 2)
    assert load_stage(same, {"head0": champion.state_dict()}, "head0")
    assert torch.equal(same.weight, champion.weight) and torch.equal(same.bias, champion.bias)
    before = wider.weight.detach().clone()
    assert not load_stage(wider, {"head0": champion.state_dict()}, "head0")  # another shape: as built
    assert torch.equal(wider.weight, before)
    assert not load_stage(same, {"prefix": champion.state_dict()}, "head0") and not load_stage(same, None, "head0")


def test_a_warm_start_takes_larger_steps_for_its_first_epochs_only():
    from recsys.fit import warm_start
    from recsys.train import fit

    rng = np.random.default_rng(0)
    pairs = np.stack(np.meshgrid(np.arange(30), np.arange(20)), -1).reshape(-1, 2)[rng.permutation(600)[:300]]
    data = _data([f"u{i}" for i in range(30)], [f"i{i}" for i in range(20)], pairs)
    state = WarmState("mf", {}, MF(30, 20, dim=8).state_dict(), data.user_ids, data.item_ids, "1")
    cfg = TrainConfig(epochs=4, lr=0.01, l2=0.0, average=None, progress=False, max_steps_per_epoch=None,
                      batch_size=100, warm={"lr": 3, "lr_epochs": 2}, lr_milestones=[3], lr_gamma=0.5)
    for warm, expected in ((True, [0.03, 0.03, 0.01, 0.005]), (False, [0.01, 0.01, 0.01, 0.005])):
        model = MF(30, 20, dim=8)
        if warm:
            warm_start(model, state, "mf", data, cfg, "")
        result = fit(model, pairs_graph(data), data, cfg, EvalConfig(ks=[20]))
        assert [h["lr"] for h in result.history] == pytest.approx(expected)  # the milestone rides on it


def test_a_warm_start_waits_its_own_patience_and_a_scratch_start_train_patience():
    """train.warm.patience bounds how long a warm run waits for improvement; a scratch run keeps
    train.patience, and so does a warm one with warm.patience null. A learning rate too small to
    move any float32 value keeps every score where it was, so after the first trained epoch each
    evaluation ties and a run trains 1 + patience epochs."""
    from recsys.fit import warm_start
    from recsys.train import fit

    rng = np.random.default_rng(0)
    order = rng.permutation(600)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(20)), -1).reshape(-1, 2)
    data = _data([f"u{i}" for i in range(30)], [f"i{i}" for i in range(20)], grid[order[:300]], grid[order[300:360]])
    state = WarmState("mf", {}, MF(30, 20, dim=8).state_dict(), data.user_ids, data.item_ids, "1")
    base = dict(epochs=20, lr=1e-12, l2=0.0, average=None, progress=False, max_steps_per_epoch=None, batch_size=100,
                eval_every=1, patience=5)
    for warm, patience, epochs in ((True, 2, 3), (False, 2, 6), (True, None, 6)):
        cfg = TrainConfig(**base, warm={"patience": patience, "shrink": 1, "perturb": 0, "lr_epochs": 0})
        model = MF(30, 20, dim=8)
        if warm:
            assert warm_start(model, state, "mf", data, cfg, "").mode == "champion"
        result = fit(model, pairs_graph(data), data, cfg, EvalConfig(ks=[20]))
        assert result.epochs_run == epochs, (warm, patience)


def test_a_warm_start_validates_at_its_own_cadence_and_a_scratch_start_at_train_eval_every():
    """train.warm.eval_every (auto: every epoch for a family without a recipe of its own) sets which
    epochs a warm run ranks validation after; a scratch run keeps train.eval_every, and so does a
    warm one with warm.eval_every null. The last epoch is always ranked."""
    from recsys.fit import warm_start
    from recsys.train import fit

    rng = np.random.default_rng(0)
    order = rng.permutation(600)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(20)), -1).reshape(-1, 2)
    data = _data([f"u{i}" for i in range(30)], [f"i{i}" for i in range(20)], grid[order[:300]], grid[order[300:360]])
    state = WarmState("mf", {}, MF(30, 20, dim=8).state_dict(), data.user_ids, data.item_ids, "1")
    base = dict(epochs=7, lr=0.01, l2=0.0, average=None, progress=False, max_steps_per_epoch=None, batch_size=100,
                eval_every=3, patience=50)
    for warm, every, validated in ((True, "auto", [0, 1, 2, 3, 4, 5, 6, 7]), (True, 2, [0, 2, 4, 6, 7]),
                                   (True, None, [0, 3, 6, 7]), (False, "auto", [3, 6, 7])):
        cfg = TrainConfig(**base, warm={"eval_every": every, "shrink": 1, "perturb": 0})
        model = MF(30, 20, dim=8)
        if warm:
            assert warm_start(model, state, "mf", data, cfg, "").mode == "champion"
        result = fit(model, pairs_graph(data), data, cfg, EvalConfig(ks=[20]))
        assert [h["epoch"] for h in result.history if "valid_recall@20" in h] == validated, (warm, every)
