"""Ranking metrics on a ranking computed by hand, then the chunking property."""
import math

import numpy as np
import pytest

from recsys.metrics import auc, evaluate, ranked_users

# One-dimensional embeddings make the score of item i for user u simply u * v_i.
ITEMS = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]])   # user 0 ranks items 0 > 1 > 2 > 3 > 4
USERS = np.array([[1.0], [-1.0]])                        # user 1 ranks items 4 > 3 > 2 > 1 > 0


def test_hand_computed_ranking():
    # user 0: item 0 was seen in training (masked) -> ranking 1, 2, 3, 4; targets {2, 4}
    # user 1: nothing seen -> ranking 4, 3, 2, 1, 0; targets {3}
    seen = np.array([[0, 0]])
    targets = np.array([[0, 2], [0, 4], [1, 3]])
    m = evaluate(USERS, ITEMS, targets, seen, ks=[1, 2, 3])
    # K=1: user0 top [1] no hit; user1 top [4] no hit
    assert m["recall@1"] == 0 and m["hit@1"] == 0 and m["ndcg@1"] == 0
    # K=2: user0 [1, 2] -> hit at rank 2; user1 [4, 3] -> hit at rank 2
    u0_ndcg2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    u1_ndcg2 = (1 / math.log2(3)) / 1
    assert m["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["hit@2"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((u0_ndcg2 + u1_ndcg2) / 2)
    # K=3: user0 [1, 2, 3] -> still one hit; user1 [4, 3, 2] -> one hit
    assert m["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)


def test_users_without_targets_are_not_averaged_in():
    targets = np.array([[1, 4]])
    m = evaluate(USERS, ITEMS, targets, np.zeros((0, 2), dtype=np.int64), ks=[1])
    assert m["recall@1"] == 1.0 and m["ndcg@1"] == 1.0


def test_unavailable_items_are_never_ranked():
    targets = np.array([[0, 1]])
    available = np.array([False, True, True, True, True])
    m = evaluate(USERS, ITEMS, targets, np.zeros((0, 2), dtype=np.int64), ks=[1], item_available=available)
    assert m["hit@1"] == 1.0


def test_chunk_size_does_not_change_the_result():
    users, items, targets, seen = _random_case()
    whole = evaluate(users, items, targets, seen, ks=[5, 10], chunk_size=1000)
    chunked = evaluate(users, items, targets, seen, ks=[5, 10], chunk_size=7)
    assert whole == pytest.approx(chunked)
    assert 0 < whole["recall@10"] < 1


def _random_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(50, 8)), rng.normal(size=(40, 8))
    targets = np.stack([rng.integers(50, size=200), rng.integers(40, size=200)], axis=1)
    seen = np.stack([rng.integers(50, size=300), rng.integers(40, size=300)], axis=1)
    return users, items, targets, seen


def test_a_sample_of_all_users_is_full_ranking():
    users, items, targets, seen = _random_case()
    n_with_targets = len(np.unique(targets[:, 0]))
    full = evaluate(users, items, targets, seen, ks=[5, 10])
    assert evaluate(users, items, targets, seen, ks=[5, 10], max_users=n_with_targets, sample_seed=3) == full
    assert evaluate(users, items, targets, seen, ks=[5, 10], max_users=10**6) == full


def test_a_sample_ranks_its_users_exactly_and_does_not_depend_on_the_model():
    users, items, targets, seen = _random_case()
    chosen = ranked_users(targets, 50, max_users=12, sample_seed=1)
    assert len(chosen) == 12 and len(set(chosen)) == 12
    assert set(chosen) <= set(targets[:, 0])
    assert np.array_equal(chosen, ranked_users(targets, 50, max_users=12, sample_seed=1))  # same data, same seed
    assert not np.array_equal(chosen, ranked_users(targets, 50, max_users=12, sample_seed=2))
    mask = np.zeros(50, dtype=bool)
    mask[chosen] = True
    for emb in (users, -users):  # two "models" on the same sample: the full ranking of exactly those users
        sampled = evaluate(emb, items, targets, seen, ks=[5, 10], max_users=12, sample_seed=1)
        assert sampled == evaluate(emb, items, targets, seen, ks=[5, 10], user_mask=mask)
    # a user mask narrows the candidates before the draw
    warm = np.arange(50) < 25
    assert set(ranked_users(targets, 50, warm, max_users=5, sample_seed=1)) <= set(np.flatnonzero(warm))


def test_auc_by_hand():
    # positives score 0.9 and 0.4; negatives 0.5, 0.4, 0.1.
    # pairs (pos, neg): 0.9 beats all three; 0.4 beats 0.1, ties 0.4 (one half), loses to 0.5 -> 4.5 / 6
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.4, 0.4, 0.1])
    assert auc(labels, scores) == pytest.approx(4.5 / 6)
    assert auc(labels, -scores) == pytest.approx(1.5 / 6)
    assert math.isnan(auc(np.ones(3), np.arange(3)))
