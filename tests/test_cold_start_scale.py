"""Cold-start edges in linear time: the bounded attribute join and the ANN neighbour search against
the previous all-pairs implementations (kept here as references)."""
import numpy as np
import pandas as pd
import pytest

from recsys.graph.cold_start import attribute_edges, similarity_edges


def reference_attribute_edges(attributes, is_cold, activity, k=10):
    """Every cold user against every warm user sharing a value (the implementation before issue 19)."""
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    if len(cold) == 0 or len(warm) == 0 or attributes.shape[1] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    pairs = []
    for col in attributes.columns:
        values = attributes[col].astype(str).where(attributes[col].notna(), None).to_numpy()
        warm_by_value = pd.Series(warm).groupby(values[warm]).apply(np.asarray).to_dict()
        for c in cold:
            match = warm_by_value.get(values[c]) if values[c] is not None else None
            if match is not None:
                pairs.append(np.stack([np.full(len(match), c), match], axis=1))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    pairs = np.concatenate(pairs)
    frame = pd.DataFrame({"cold": pairs[:, 0], "warm": pairs[:, 1]})
    frame = frame.groupby(["cold", "warm"], sort=False).size().rename("shared").reset_index()
    frame["activity"] = activity[frame["warm"].to_numpy()]
    frame = frame.sort_values(["cold", "shared", "activity", "warm"], ascending=[True, False, False, True])
    frame = frame.groupby("cold", sort=False).head(k)
    return (frame["warm"].to_numpy(np.int64), frame["cold"].to_numpy(np.int64),
            frame["shared"].to_numpy(np.float32))


def reference_similarity_edges(vectors, is_cold, k=10, chunk_size=1024):
    """All cold x all warm cosines (the implementation before issue 19)."""
    cold = np.flatnonzero(is_cold)
    warm = np.flatnonzero(~is_cold)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    kk = min(k, len(warm))
    src, dst, w = [], [], []
    for start in range(0, len(cold), chunk_size):
        rows = cold[start:start + chunk_size]
        sims = unit[rows] @ unit[warm].T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, axis=1)
        keep = top_sims > 0
        src.append(warm[top[keep]])
        dst.append(np.repeat(rows, kk).reshape(-1, kk)[keep])
        w.append(top_sims[keep])
    return np.concatenate(src), np.concatenate(dst), np.concatenate(w)


def random_members(rng, n):
    """Attributes with few values (large groups), missing values, numbers and their text spelling."""
    uni = rng.choice(["A", "B", "C", "D", None], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    company = rng.integers(0, 12, size=n).astype(object)
    mixed = np.where(rng.random(n) < 0.5, company, company.astype(str))  # 3 and "3" are one value
    title = pd.Series(rng.choice(["eng", "pm", "ds"], size=n)).where(rng.random(n) > 0.1)  # NaN: no match
    frame = pd.DataFrame({"university": uni, "company": mixed, "title": title,
                          "level": pd.Categorical(rng.choice(["jr", "sr"], size=n))})
    is_cold = rng.random(n) < 0.2
    activity = np.where(is_cold, 0, rng.integers(0, 4, size=n))  # many ties in activity
    return frame, is_cold, activity


@pytest.mark.parametrize("seed", range(6))
def test_attribute_edges_equal_all_pairs_whatever_the_group_sizes(seed):
    # groups of up to ~100 warm users, candidate lists of k: exact while every combination is listed
    rng = np.random.default_rng(seed)
    frame, is_cold, activity = random_members(rng, 300)
    k = int(rng.integers(1, 8))
    expected = reference_attribute_edges(frame, is_cold, activity, k)
    got = attribute_edges(frame, is_cold, activity, k, max_combination=4)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
    assert [g.dtype for g in got] == [np.int64, np.int64, np.float32]


@pytest.mark.parametrize("seed", range(3))
def test_attribute_edges_equal_all_pairs_when_value_groups_fit_the_candidates(seed):
    rng = np.random.default_rng(10 + seed)
    frame, is_cold, activity = random_members(rng, 300)
    expected = reference_attribute_edges(frame, is_cold, activity, 5)
    got = attribute_edges(frame, is_cold, activity, 5, candidates=int((~is_cold).sum()), max_combination=1)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)


def test_attribute_edges_default_candidates_are_exact_for_small_groups():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"u": rng.integers(0, 60, size=400), "c": rng.integers(0, 80, size=400).astype(str)})
    is_cold = rng.random(400) < 0.1
    activity = rng.integers(0, 20, size=400)
    expected = reference_attribute_edges(frame, is_cold, activity, 3)
    for e, g in zip(expected, attribute_edges(frame, is_cold, activity, 3)):
        np.testing.assert_array_equal(g, e)


def test_attribute_edges_beyond_max_combination_are_at_most_as_good_per_rank():
    rng = np.random.default_rng(5)
    frame, is_cold, activity = random_members(rng, 1500)
    ref_src, ref_dst, ref_w = reference_attribute_edges(frame, is_cold, activity, 6)
    src, dst, w = attribute_edges(frame, is_cold, activity, 6, max_combination=1)
    assert set(dst.tolist()) == set(ref_dst.tolist())  # every cold user with a match gets edges
    for c in np.unique(ref_dst):
        mine, best = w[dst == c], ref_w[ref_dst == c]
        assert len(mine) == len(best) and (mine <= best).all()  # the r-th weight never beats the exact r-th
    assert (w != ref_w).any()  # the approximation does bite on this data


def test_attribute_edges_with_few_candidates_keep_exact_weights_and_the_most_active():
    rng = np.random.default_rng(3)
    frame, is_cold, activity = random_members(rng, 2000)
    src, dst, w = attribute_edges(frame, is_cold, activity, k=5, candidates=6)
    assert is_cold[dst].all() and not is_cold[src].any()
    assert np.bincount(dst).max() <= 5
    text = frame.astype(str).where(frame.notna(), None).to_numpy()
    shared = [sum(a is not None and a == b for a, b in zip(text[c], text[u])) for u, c in zip(src, dst)]
    np.testing.assert_array_equal(w, shared)  # weights count every shared attribute, not only nominating ones
    # a cold user whose only value is shared by many warm users gets the most active of them
    solo = pd.DataFrame({"g": ["x"] * 50})
    cold = np.zeros(50, bool)
    cold[0] = True
    act = np.arange(50)
    src, dst, w = attribute_edges(solo, cold, act, k=3, candidates=4)
    assert src.tolist() == [49, 48, 47] and dst.tolist() == [0, 0, 0]


def test_attribute_edges_without_matches_or_columns():
    frame = pd.DataFrame({"a": ["x", "y", None]})
    assert all(len(a) == 0 for a in attribute_edges(frame, np.array([False, False, True]), np.ones(3), 2))
    assert all(len(a) == 0 for a in attribute_edges(frame[[]], np.array([False, True, True]), np.ones(3), 2))


def _triples(src, dst, w):
    order = np.lexsort((src, dst))
    return src[order], dst[order], w[order]


@pytest.mark.parametrize("n_warm, n_cold", [(300, 40), (50, 2000), (5000, 3)])
def test_similarity_edges_are_exact_below_the_threshold(n_warm, n_cold):
    rng = np.random.default_rng(n_warm)
    vectors = rng.normal(size=(n_warm + n_cold, 16))
    is_cold = rng.permutation(np.r_[np.zeros(n_warm, bool), np.ones(n_cold, bool)])
    expected = _triples(*reference_similarity_edges(vectors, is_cold, k=7))
    got = _triples(*similarity_edges(vectors, is_cold, k=7, exact_below=100))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-6)


@pytest.mark.parametrize("clustered", [False, True])
def test_similarity_edges_above_the_threshold_find_most_exact_neighbours(clustered):
    rng = np.random.default_rng(1)
    n, d, k = 6000, 32, 10
    vectors = rng.normal(size=(n, d))
    if clustered:  # content vectors: topics plus noise
        vectors = 3 * rng.normal(size=(40, d))[rng.integers(0, 40, size=n)] + vectors
    is_cold = rng.random(n) < 0.05
    exact = reference_similarity_edges(vectors, is_cold, k=k)
    src, dst, w = similarity_edges(vectors, is_cold, k=k, exact_below=100)
    assert is_cold[dst].all() and not is_cold[src].any() and (w > 0).all()
    assert np.bincount(dst).max() <= k
    found = set(zip(src.tolist(), dst.tolist()))
    truth = set(zip(exact[0].tolist(), exact[1].tolist()))
    assert len(found & truth) / len(truth) >= 0.9
