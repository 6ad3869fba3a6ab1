"""The training loop: it learns something popularity cannot, stops early, and obeys callbacks."""
import numpy as np
import pytest
import torch

from recsys.config import DataConfig, EvalConfig, TrainConfig
from recsys.data.loaders import with_split
from recsys.graph.build import build_graph
from recsys.metrics import evaluate
from recsys.models.lightgcn import LightGCN
from recsys.train import Callback, StopTraining, evaluate_model, fit
from recsys.train_state import EarlyStopping


@pytest.fixture(scope="module")
def prepared(small_network):
    data = with_split(small_network, DataConfig()).indexed()
    return data, build_graph(data)


def test_lightgcn_beats_popularity_on_the_synthetic_network(prepared):
    data, graph = prepared
    model = LightGCN(data.n_users, data.n_items, dim=32, layers=2)
    cfg = TrainConfig(epochs=30, batch_size=512, lr=0.01, eval_every=5, patience=3, progress=False)
    fit(model, graph, data, cfg, EvalConfig(ks=[20]))
    ours = evaluate_model(model, graph, data, "test", EvalConfig(ks=[20]))
    popularity = np.bincount(data.train[:, 1], minlength=data.n_items).astype(np.float32)[:, None]
    pop = evaluate(np.ones((data.n_users, 1), np.float32), popularity, data.test, data.seen_before("test"), [20])
    assert ours["recall@20"] > 1.5 * pop["recall@20"], (ours, pop)


def test_early_stopping_after_patience_evaluations_without_improvement(prepared):
    data, graph = prepared
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    # A learning rate this small leaves the ranking unchanged, so no evaluation improves on the first.
    cfg = TrainConfig(epochs=50, batch_size=4096, lr=1e-12, eval_every=1, patience=2, progress=False)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]))
    assert (result.best_epoch, result.epochs_run) == (1, 3)
    assert "valid_ndcg@20" in result.history[0]


def test_callbacks_see_every_epoch_and_can_stop_training(prepared):
    data, graph = prepared

    class Recorder(Callback):  # inherits the hooks it does not override
        def __init__(self):
            self.epochs, self.starts, self.steps = [], [], []

        def on_epoch_start(self, epoch):
            self.starts.append(epoch)

        def on_step(self, step, logs):
            self.steps.append(step)

        def on_epoch_end(self, epoch, logs):
            self.epochs.append((epoch, logs["loss"]))
            if epoch == 2:
                raise StopTraining

    rec = Recorder()
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    result = fit(model, graph, data, TrainConfig(epochs=10, eval_every=1, progress=False), EvalConfig(), [rec])
    assert [e for e, _ in rec.epochs] == [1, 2] and result.epochs_run == 2 and rec.starts == [1, 2]
    batches = -(-len(data.train) // TrainConfig().batch_size)
    assert rec.steps == list(range(1, 2 * batches + 1))
    assert all(np.isfinite(loss) for _, loss in rec.epochs)


def test_objectives_by_hand():
    import math

    from recsys.models.base import RecModel
    m = RecModel()
    u, p = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    n = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]])        # scores: positive 2, negatives 0 and 1
    assert math.isclose(m.ranking_loss(u, p, n).item(), (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2,
                        rel_tol=1e-6)
    m.set_objective("softmax", temperature=0.5)         # logits 4, 0, 2
    expected = -math.log(math.exp(4) / (math.exp(4) + 1 + math.exp(2)))
    assert math.isclose(m.ranking_loss(u, p, n).item(), expected, rel_tol=1e-6)
    m.cosine = True                                     # cosines 1, 0, 1 -> logits 2, 0, 2
    assert math.isclose(m.ranking_loss(u, p, n).item(), -math.log(math.exp(2) / (2 * math.exp(2) + 1)), rel_tol=1e-6)


def test_learning_rate_steps_down_at_the_milestones(prepared):
    data, graph = prepared
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    cfg = TrainConfig(epochs=4, batch_size=4096, lr=0.01, lr_milestones=[1, 3], lr_gamma=0.5, eval_every=10,
                      progress=False)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]))
    assert [h["lr"] for h in result.history] == pytest.approx([0.01, 0.005, 0.005, 0.0025])


def test_early_stopping_keeps_the_best_state_and_counts_patience():
    import torch

    model = torch.nn.Linear(1, 1)
    stop = EarlyStopping(patience=2)
    scores = [0.1, 0.3, 0.2, float("nan"), 0.5]
    decisions = []
    for epoch, score in enumerate(scores, 1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        decisions.append(stop.update(model, score, epoch))
    assert decisions == [False, False, False, True, False]  # 0.2 and NaN: two without improvement
    assert (stop.best_epoch, stop.best_score) == (5, 0.5)
    stop = EarlyStopping(patience=1)
    assert not stop.restore(model)  # nothing recorded: the model is left as it is
    with torch.no_grad():
        model.weight.fill_(7.0)
    stop.update(model, 0.9, 1)
    with torch.no_grad():
        model.weight.fill_(-1.0)
    assert stop.update(model, 0.1, 2) and stop.restore(model) and float(model.weight) == 7.0


def test_a_baseline_can_be_kept_but_patience_follows_the_trained_epochs():
    import torch

    model = torch.nn.Linear(1, 1)
    stop = EarlyStopping(patience=2)
    with torch.no_grad():
        model.weight.fill_(0.0)
    assert not stop.update(model, 0.5, 0, baseline=True)  # a warm start's state before any step
    decisions = []
    for epoch, score in enumerate([0.2, 0.3, 0.4, 0.45, 0.44, 0.43], 1):  # a dip, a climb that stays below it
        with torch.no_grad():
            model.weight.fill_(epoch)
        decisions.append(stop.update(model, score, epoch))
    assert decisions == [False, False, False, False, False, True]  # stops once its own curve stops rising
    assert stop.best_epoch == 0 and stop.restore(model) and float(model.weight) == 0.0  # the baseline is kept


def test_bounded_steps_per_epoch_grow_the_batch_and_its_learning_rate(prepared, monkeypatch):
    from recsys import families
    from recsys.recipe import resolve
    from recsys.train import batch_plan

    exact = TrainConfig(batch_size=100, lr=0.01, max_steps_per_epoch=None)
    assert batch_plan(exact, 10_000) == (100, 0.01)  # the exact mode
    auto = TrainConfig(batch_size=100, lr=0.01)  # the default: the family's bound (64 for lightgcn)
    assert batch_plan(resolve(auto, "lightgcn"), 10_000)[0] == 157  # ceil(10k / 64)
    assert batch_plan(resolve(auto, "pinsage"), 10_000) == (100, 0.01)  # 1024 steps of 100 hold 10k pairs
    unbounded = families.Family("unbounded", "", "", auto_steps=None)
    monkeypatch.setitem(families.FAMILIES, "unbounded", unbounded)
    assert batch_plan(resolve(auto, "unbounded"), 10_000) == (100, 0.01)  # a family without a bound
    assert batch_plan(resolve(auto, "lightgcn"), 6_400) == (100, 0.01)  # 64 steps of batch_size hold this log
    with pytest.raises(ValueError, match="resolved settings"):
        batch_plan(auto, 10_000)
    assert batch_plan(TrainConfig(batch_size=100, lr=0.01, max_steps_per_epoch=200), 10_000) == (100, 0.01)
    batch, lr = batch_plan(TrainConfig(batch_size=100, lr=0.01, max_steps_per_epoch=25), 10_000)
    assert batch == 400 and abs(lr - 0.02) < 1e-12  # 4x the pairs per step, sqrt(4) x the rate
    assert batch_plan(TrainConfig(batch_size=100, lr=0.01, max_steps_per_epoch=25, lr_batch_scaling="linear"),
                      10_000)[1] == 0.04
    data, graph = prepared

    class Steps(Callback):
        def __init__(self):
            self.steps = 0

        def on_step(self, step, logs):
            self.steps += 1

    counter = Steps()
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.01, max_steps_per_epoch=3, progress=False, eval_every=5)
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    result = fit(model, graph, data, cfg, EvalConfig(), [counter])
    assert counter.steps == 6 and result.batch_size == -(-len(data.train) // 3) > 64
    expected_lr = 0.01 * (result.batch_size / 64) ** 0.5
    assert all(abs(h["lr"] - expected_lr) < 1e-12 for h in result.history)


def test_the_bounded_mode_takes_the_exact_modes_objective_over_more_pairs(prepared):
    """At the initial weights the two modes' objectives agree: the scalable mode's first step (every
    pair in one batch, max_steps_per_epoch=1) has the loss the exact mode's batches of 64 average to,
    weighted by their sizes. The exact mode runs with a learning rate too small to move a float32
    weight, so each of its batches is scored at the initial weights too; negatives are a fixed
    function of the positive, so both see the same triples. The documented difference is only the
    step: one Adam step with lr x sqrt(batch ratio) instead of many."""
    data, graph = prepared

    class Fixed:
        def sample(self, users, pos_items, model_state=None):
            return (pos_items + 1) % data.n_items

        def set_epoch(self, epoch):
            pass

        def to(self, device):
            return self

    class Losses(Callback):
        def __init__(self):
            self.losses = []

        def on_step(self, step, logs):
            self.losses.append(logs["loss"])

    def first_epoch(**cfg):
        seen = Losses()
        torch.manual_seed(0)  # the same initial weights for both modes
        model = LightGCN(data.n_users, data.n_items, dim=8, layers=2)
        fit(model, graph, data, TrainConfig(epochs=1, progress=False, eval_every=5, **cfg), EvalConfig(), [seen],
            sampler=Fixed())
        return seen.losses

    (whole,) = first_epoch(batch_size=64, lr=0.01, max_steps_per_epoch=1)
    exact = first_epoch(batch_size=64, lr=1e-30)
    n = len(data.train)
    sizes = [min(64, n - s) for s in range(0, n, 64)]
    assert len(exact) == len(sizes) > 10
    assert np.average(exact, weights=sizes) == pytest.approx(whole, rel=1e-5)


def test_the_parameter_average_is_the_hand_computed_moving_average():
    """One parameter, plain SGD with lr 1 and gradient 1: it goes 0, -1, -2, ...; the average
    follows a_t = d_t a_{t-1} + (1 - d_t) p_t with d_t = min(decay, (1 + t) / (10 + t))."""
    from recsys.train_state import ParameterAverage

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    average = ParameterAverage(layer, optimizer, decay=0.5)
    expected = 0.0
    for t in range(1, 6):
        optimizer.zero_grad()
        layer.weight.sum().backward()
        optimizer.step()
        d = min(0.5, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * (-t)
    assert average.shadow[0].item() == pytest.approx(expected)
    with average.swapped():
        assert layer.weight.item() == pytest.approx(expected)
    assert layer.weight.item() == -5.0  # the trained value is back after the block
    average.close()
    optimizer.step()  # no longer followed
    assert average.steps == 5


def test_fit_keeps_the_average_when_asked(small_network):
    """With train.average and no validation, the trained model holds the average, not the last step."""
    from recsys.train_state import ParameterAverage

    data = with_split(small_network, DataConfig()).indexed()
    data = type(data)(data.user_ids, data.item_ids, data.train, data.train[:0], data.test, data.social)
    graph = build_graph(data)
    cfg = dict(epochs=2, batch_size=256, lr=0.01, progress=False, max_steps_per_epoch=None)
    plain, averaged = (LightGCN(data.n_users, data.n_items, dim=8, layers=1) for _ in range(2))
    averaged.load_state_dict(plain.state_dict())
    twin = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    twin.load_state_dict(plain.state_dict())
    fit(plain, graph, data, TrainConfig(**cfg, average=None), EvalConfig())
    fit(averaged, graph, data, TrainConfig(**cfg, average=0.9), EvalConfig())
    # the same steps again, followed by a hand-held average: the model must equal it
    watcher = ParameterAverage(twin, None, 0.9)  # follows every optimiser's steps
    fit(twin, graph, data, TrainConfig(**cfg, average=None), EvalConfig())
    watcher.close()
    assert torch.allclose(plain.user_emb.weight, twin.user_emb.weight)  # same seed, same steps
    assert torch.allclose(averaged.user_emb.weight, watcher.shadow[0], atol=1e-6)
    assert not torch.allclose(averaged.user_emb.weight, plain.user_emb.weight)


def test_row_l2_pays_each_row_once_whatever_its_degree():
    from recsys.models.base import l2, row_l2

    users, items = torch.ones(4, 2), 2 * torch.ones(3, 2)
    assert row_l2(users, items).item() == pytest.approx(0.5 * (2 + 2 * 8))
    # equal degrees: the occurrence form's batch with each row once gives the same figure
    u, p, n = users, items[[0, 1, 2, 0]], items[[1, 2, 0, 1]]
    assert l2(u, p, n).item() == pytest.approx(row_l2(users, items).item())
    # a user met 10 times in a batch pays 10 times in the occurrence form, once in the row form
    table = torch.zeros(4, 2, requires_grad=True)
    l2(table[[0] * 10 + [1]] + 1, items[[0] * 11], items[[1] * 11]).backward()
    occurrence = table.grad[0, 0] / table.grad[1, 0]
    table.grad = None
    row_l2(table + 1, items).backward()
    assert occurrence.item() == pytest.approx(10) and (table.grad[0, 0] / table.grad[1, 0]).item() == 1


def test_a_refit_takes_the_selection_runs_optimiser_steps_by_hand():
    from recsys.fit import refit_plan

    cfg = TrainConfig(epochs=40, batch_size=100, lr=0.01, l2=0.0, average=None, max_steps_per_epoch=None,
                      lr_milestones=[20], progress=False, warm={"lr_epochs": 0})
    # 10 epochs of ceil(900 / 100) = 9 steps chosen on validation; 1000 pairs take 10 steps an epoch
    epochs, plan = refit_plan(cfg, best_epoch=10, selection_batches=9, n_pairs=1000)
    assert (epochs, plan.epochs, plan.lr_milestones) == (9, 36, [18])
    # bounded steps per epoch (64): the batch grows with the pairs, so the epochs stay the same
    bounded = cfg.model_copy(update={"max_steps_per_epoch": 64})
    assert refit_plan(bounded, best_epoch=10, selection_batches=64, n_pairs=100_000)[0] == 10
    boosted = cfg.model_copy(update={"warm": cfg.warm.model_copy(update={"lr": 3.0, "lr_epochs": 2})})
    assert refit_plan(boosted, best_epoch=10, selection_batches=9, n_pairs=450)[1].warm.lr_epochs == 4  # x 1.8


def test_refit_trains_a_fresh_model_on_training_and_validation_for_the_chosen_budget(small_network):
    from recsys.config import load_config
    from recsys.fit import train
    from recsys.prepare import prepare

    cfg = load_config(None, ["features.text=false", "model.dim=16", "train.progress=false", "train.epochs=6",
                             "train.eval_every=2", "train.max_steps_per_epoch=null", "model.family=mf"])
    assert cfg.train.refit  # the default
    prepared = prepare(small_network, cfg)
    x = prepared.indexed
    trained = train(prepared, cfg)
    selected = trained.selection
    assert selected is not None and selected.indexed is None and selected.best_epoch == trained.best_epoch
    assert len(trained.indexed.train) == len(x.train) + len(x.valid) and len(trained.indexed.valid) == 0
    assert trained.graph.g.num_edges("interacts") == len(x.train) + len(x.valid)
    batches = lambda n: -(-n // cfg.train.batch_size)  # noqa: E731
    expected = max(1, round(selected.best_epoch * batches(len(x.train)) / batches(len(trained.indexed.train))))
    assert trained.result.epochs_run == trained.result.recipe["refit_epochs"] == expected
    assert trained.score == selected.score  # what a search or a gate reads: the model chosen on validation
    assert not torch.equal(trained.model.user_emb.weight, selected.model.user_emb.weight)
    no_refit = train(prepared, cfg.model_copy(update={"train": cfg.train.model_copy(update={"refit": False})}))
    assert no_refit.selection is None and no_refit.indexed is None
    assert torch.equal(no_refit.model.user_emb.weight, selected.model.user_emb.weight)  # the same seed, the same model


def test_a_stage_stopped_early_shows_its_own_bar_to_the_end(prepared, monkeypatch):
    """fit(stop_after=...) (a refit's budget): the bar is labelled with its stage and counts to the
    epochs it runs, not to the epochs its schedule is planned for."""
    seen: dict = {}

    class Bar:  # what the loop tells its progress bar
        def __init__(self, total, desc, **kwargs):
            seen.update(total=total, desc=desc, n=0)

        def update(self, n):
            seen["n"] += n

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr("recsys.train.tqdm", Bar)
    data, graph = prepared
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    cfg = TrainConfig(epochs=12, batch_size=4096, eval_every=50, progress=True)
    result = fit(model, graph, data, cfg, EvalConfig(ks=[20]), stage="refit", stop_after=3)
    assert result.epochs_run == 3 and seen == {"total": 3, "desc": "refit", "n": 3}
