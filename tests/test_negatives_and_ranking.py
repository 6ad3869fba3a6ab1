import numpy as np

from recsys.negatives import UniformNegatives
from recsys.ranking import recommend, top_k


def test_uniform_negatives_are_never_positives():
    rng = np.random.default_rng(1)
    n_users, n_items = 30, 12
    pairs = np.unique(np.stack([rng.integers(n_users, size=250), rng.integers(n_items, size=250)], 1), axis=0)
    sampler = UniformNegatives(n_items, pairs, seed=3)
    users = np.repeat(np.arange(n_users), 50)
    neg = sampler.sample(users).numpy()
    positive = set(map(tuple, pairs))
    assert not any((u, i) in positive for u, i in zip(users, neg))
    assert len(np.unique(neg)) > 6  # spread over the catalogue, not one item


def test_top_k_orders_best_first_and_breaks_ties_by_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -1.0]])
    idx, sc = top_k(scores, 3)
    assert idx.tolist() == [[1, 3, 2]]
    assert sc.tolist() == [[0.9, 0.9, 0.5]]


def test_recommend_never_returns_excluded_items_and_pads_with_minus_one():
    users = np.array([[1.0]])
    items = np.array([[3.0], [2.0], [1.0]])
    idx, _ = recommend(users, items, k=3, exclude=[np.array([0, 2])])
    assert idx.tolist() == [[1, -1, -1]]
