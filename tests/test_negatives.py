"""Negative samplers: never a positive, the right distribution, harder when asked."""
import numpy as np
import pytest
import torch

from recsys.config import DataConfig, EvalConfig, NegativesConfig, TrainConfig
from recsys.data.loaders import with_split
from recsys.graph.build import build_graph
from recsys.models.lightgcn import LightGCN
from recsys.negatives import (
    ModelMinedNegatives,
    PopularityNegatives,
    PositiveSet,
    PPRNegatives,
    ScoreView,
    UniformNegatives,
    build_sampler,
)
from recsys.train import fit


@pytest.fixture(scope="module")
def trained(small_network):
    data = with_split(small_network, DataConfig()).indexed()
    graph = build_graph(data)
    model = LightGCN(data.n_users, data.n_items, dim=16, layers=2)
    fit(model, graph, data, TrainConfig(epochs=8, batch_size=512, lr=0.01, progress=False, eval_every=100,
                                        average=None, negatives={"kind": "uniform", "per_positive": 1}),
        EvalConfig())
    return data, graph, model


@pytest.mark.parametrize("kind", ["uniform", "popularity", "in_batch", "model", "ppr"])
def test_no_sampled_negative_is_ever_a_positive(kind, trained):
    data, graph, model = trained
    negatives = NegativesConfig(kind=kind, curriculum=False, max_hard=2, candidates=8)
    sampler = build_sampler(negatives, data.n_users, data.n_items, data.train, seed=1)
    positives = set(map(tuple, data.train))
    batch = data.train[np.random.default_rng(0).permutation(len(data.train))[:3000]]
    neg = sampler.sample(batch[:, 0], batch[:, 1], ScoreView(model, graph))
    neg = neg.reshape(len(batch), -1).numpy()
    assert not any((u, i) in positives for u, row in zip(batch[:, 0], neg) for i in row)


def test_popularity_frequencies_match_the_smoothed_power_law():
    counts = np.array([0, 1, 3, 7, 15, 31, 63, 127, 255, 511])
    pairs = np.stack([np.ones(counts.sum(), int), np.repeat(np.arange(10), counts)], 1)  # user 1 has them all
    sampler = PopularityNegatives(10, pairs, exponent=0.75, seed=0)
    draws = sampler.sample(np.zeros(200_000, dtype=int)).numpy()  # user 0 has no positives: no redraws
    expected = (counts + 1.0) ** 0.75
    expected = expected / expected.sum() * len(draws)
    observed = np.bincount(draws, minlength=10)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 27.88  # chi-square, 9 degrees of freedom, p = 0.001
    assert observed[9] > 10 * observed[0]


def test_model_mined_negatives_score_higher_than_uniform_ones(trained):
    data, graph, model = trained
    users = np.repeat(np.arange(data.n_users), 5)
    view = ScoreView(model, graph)
    uniform = UniformNegatives(data.n_items, data.train, seed=2).sample(users)
    hardest = ModelMinedNegatives(data.n_items, data.train, candidates=16, seed=2).sample(users, None, view)
    softer = ModelMinedNegatives(data.n_items, data.train, candidates=16, temperature=1.0, seed=2)
    softer = softer.sample(users, None, view)
    guarded = ModelMinedNegatives(data.n_items, data.train, candidates=16, max_score_percentile=75,
                                  seed=2).sample(users, None, view)
    score = lambda items: float(view(users, items[:, None]).mean())  # noqa: E731
    assert score(hardest) > score(softer) > score(uniform)
    assert score(hardest) > score(guarded) > score(uniform)  # the guard drops the top quarter


def test_ppr_curriculum_adds_one_hard_negative_per_epoch_up_to_the_cap(trained):
    data, _, _ = trained
    sampler = PPRNegatives(data.n_users, data.n_items, data.train, band=(0.05, 0.3), pool_size=8, max_hard=2)
    users = np.arange(10)
    shapes = []
    for epoch in (1, 2, 3, 4):
        sampler.set_epoch(epoch)
        shapes.append(sampler.sample(users).reshape(10, -1).shape[1])
    assert shapes == [1, 2, 3, 3]


def test_ppr_pool_avoids_the_users_own_top_ranked_items(trained):
    data, _, _ = trained
    sampler = PPRNegatives(data.n_users, data.n_items, data.train, band=(0.1, 0.2), pool_size=16)
    # The pool holds band ranks only; a user's training items rank at the top, so they are (almost) never in it,
    # while a pool drawn at random would hold them at the data's density (several percent).
    own = {(u, i) for u, i in data.train}
    in_pool_and_own = sum((u, i) in own for u in range(data.n_users) for i in sampler.pool[u].tolist())
    assert in_pool_and_own < 0.02 * sampler.pool.numel()


def test_training_with_several_negatives_per_positive(trained):
    data, graph, _ = trained
    model = LightGCN(data.n_users, data.n_items, dim=8, layers=1)
    cfg = TrainConfig(epochs=2, batch_size=512, progress=False, eval_every=100,
                      negatives=NegativesConfig(kind="popularity", per_positive=4))
    result = fit(model, graph, data, cfg, EvalConfig())
    assert result.epochs_run == 2 and np.isfinite(result.history[-1]["loss"])


def test_a_seed_draws_the_host_generators_stream():
    """Random ids come from numpy's generator on the host, whatever the device: a user without
    positives gets exactly numpy's draws, so a seed means the same negatives on the CPU and a GPU."""
    pairs = np.array([[1, 0], [1, 1]])
    drawn = UniformNegatives(50, pairs, seed=7).sample(np.zeros(1000, dtype=int))
    assert drawn.tolist() == np.random.default_rng(7).integers(50, size=1000).tolist()


@pytest.mark.parametrize("q", [0, 12.5, 50, 75, 99, 100])
def test_the_score_guards_percentile_is_numpys(q):
    from recsys.negatives import percentile

    scores = np.random.default_rng(3).standard_normal((40, 17))
    expected = np.percentile(scores, q, axis=1, keepdims=True)
    assert percentile(torch.from_numpy(scores), q).numpy() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("per_user, n_items, expected", [(5, 100, 8), (22, 4489, 16), (3, 5000, 64), (100, 100, 2)])
def test_auto_candidates_follow_the_logs_density(per_user, n_items, expected):
    """1.5 / sqrt(density) to the nearest power of two within 2..64: density 0.05 (MovieLens-100K's)
    gives 6.7 -> 8, LastFM's 0.0049 gives 21 -> 16, 0.0006 (Gowalla's) 61 -> 64, a full matrix 2."""
    from recsys.negatives import auto_candidates

    pairs = np.array([(u, i) for u in range(20) for i in range(per_user)])
    assert auto_candidates(pairs, n_items) == expected


@pytest.mark.parametrize("n_pairs", [0, 1, 500, 20_000])
def test_the_positive_set_answers_as_a_python_set_does(n_pairs):
    """Every (user, item) checked, positives and not, including users and items past the largest
    positive key, answers as membership in a set of the pairs."""
    rng = np.random.default_rng(n_pairs)
    n_users, n_items = 300, 700
    pairs = np.stack([rng.integers(0, n_users - 20, n_pairs), rng.integers(0, n_items - 30, n_pairs)], 1)
    kept = PositiveSet(pairs, n_items)
    asked_u = np.concatenate([pairs[:, 0], rng.integers(0, n_users, 50_000 - n_pairs)])
    asked_i = np.concatenate([pairs[:, 1], rng.integers(0, n_items, 50_000 - n_pairs)])
    truth = {(int(u), int(i)) for u, i in pairs}
    expected = [(int(u), int(i)) in truth for u, i in zip(asked_u, asked_i)]
    assert kept.contains(torch.from_numpy(asked_u), torch.from_numpy(asked_i)).tolist() == expected
    as_rows = kept.contains(torch.from_numpy(asked_u).reshape(-1, 10), torch.from_numpy(asked_i).reshape(-1, 10))
    assert as_rows.reshape(-1).tolist() == expected
