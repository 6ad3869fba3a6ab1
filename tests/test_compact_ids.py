"""Ids as codes (categoricals, factorised columns) give exactly what the row-by-row forms gave:
the same split, the same indexed arrays, the same fingerprint, the same validation report."""
import numpy as np
import pandas as pd
import pytest

from recsys.data.ids import as_categorical, positions, text_hashes
from recsys.data.loaders import load_files, save_files
from recsys.data.split import assign_split
from recsys.data.types import RecData
from validation.data import validate_data


def reference_split(interactions, kind, valid_fraction, test_fraction, seed):
    """The split as it was computed before codes: pandas groupby/sort/merge on the id values."""
    pairs = interactions.groupby(["user_id", "item_id"], sort=False, as_index=False)
    if kind == "temporal":
        pairs = pairs["timestamp"].min()
        pairs = pairs.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    else:
        pairs = pairs.size()[["user_id", "item_id"]]
        pairs["_r"] = np.random.default_rng(seed).random(len(pairs))
        pairs = pairs.sort_values(["user_id", "_r"], kind="stable")
    rank = pairs.groupby("user_id", sort=False).cumcount().to_numpy()
    n = pairs.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    n_test = np.where((n >= 3) & (test_fraction > 0), np.maximum(np.floor(n * test_fraction).astype(int), 1), 0)
    n_valid = np.where((n >= 3) & (valid_fraction > 0), np.maximum(np.floor(n * valid_fraction).astype(int), 1), 0)
    label = np.full(len(pairs), "train", dtype=object)
    label[rank >= n - n_test] = "test"
    label[(rank >= n - n_test - n_valid) & (rank < n - n_test)] = "valid"
    pairs["split"] = label
    return interactions.drop(columns=["split"], errors="ignore").merge(
        pairs[["user_id", "item_id", "split"]], on=["user_id", "item_id"], how="left")


def random_log(seed: int, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": [f"u{k}" for k in rng.integers(0, 150, n)],
        "item_id": [f"i{k}" for k in rng.integers(0, 90, n)],  # i10 < i9 as text: ties go by text order
        "timestamp": rng.integers(0, 40, n),  # many ties in time
        "event": rng.choice(["view", "click"], n),
    })


@pytest.mark.parametrize("kind", ["temporal", "random"])
@pytest.mark.parametrize("seed", [0, 1])
def test_split_on_codes_equals_the_groupby_split(kind, seed):
    log = random_log(seed)
    expected = reference_split(log, kind, 0.1, 0.2, seed)
    for frame in (log, log.assign(user_id=as_categorical(log["user_id"]), item_id=as_categorical(log["item_id"]))):
        got = assign_split(frame, kind, 0.1, 0.2, seed)
        assert got["split"].tolist() == expected["split"].tolist()
        assert list(got.columns) == list(expected.columns)


def test_temporal_split_with_fractional_and_missing_times():
    log = random_log(3).astype({"timestamp": float})
    log.loc[log.index % 7 == 0, "timestamp"] = np.nan  # some pairs have no time at all
    log["timestamp"] += 0.5
    expected = reference_split(log, "temporal", 0.1, 0.2, 0)
    assert assign_split(log, "temporal", 0.1, 0.2, 0)["split"].tolist() == expected["split"].tolist()
    wide = random_log(4).assign(timestamp=lambda f: f["timestamp"] * 2 ** 50)  # too wide to pack: lexsort
    expected = reference_split(wide, "temporal", 0.1, 0.2, 0)
    assert assign_split(wide, "temporal", 0.1, 0.2, 0)["split"].tolist() == expected["split"].tolist()


def test_split_of_integer_ids_and_a_row_without_id():
    log = random_log(2).assign(user_id=lambda f: f["user_id"].str[1:].astype(int),
                               item_id=lambda f: f["item_id"].str[1:].astype(int))
    expected = reference_split(log, "temporal", 0.1, 0.1, 0)
    assert assign_split(log, "temporal", 0.1, 0.1, 0)["split"].tolist() == expected["split"].tolist()
    holed = log.astype({"user_id": object})
    holed.loc[5, "user_id"] = None
    got = assign_split(holed, "temporal", 0.1, 0.1, 0)["split"]
    assert pd.isna(got[5]) and got.drop(index=5).isin(["train", "valid", "test"]).all()


def test_categorical_ids_give_the_same_indexed_arrays_and_fingerprint(small_network):
    data = RecData("net", small_network.users, small_network.items,
                   assign_split(small_network.interactions, "temporal", 0.1, 0.1, 0), small_network.social)
    compact = RecData("net", data.users, data.items,
                      data.interactions.assign(user_id=as_categorical(data.interactions["user_id"]),
                                               item_id=as_categorical(data.interactions["item_id"])),
                      data.social.assign(src=as_categorical(data.social["src"]),
                                         dst=as_categorical(data.social["dst"])))
    assert isinstance(compact.interactions["user_id"].dtype, pd.CategoricalDtype)
    a, b = data.indexed(), compact.indexed()
    for name in ("user_ids", "item_ids", "train", "valid", "test", "social"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    # the hand-made mapping: row r of the interactions is user position of its text id
    u = pd.Index(data.users["user_id"].astype(str)).get_indexer(data.interactions["user_id"].astype(str))
    assert np.array_equal(positions(compact.interactions["user_id"], pd.Index(a.user_ids)), u)
    assert data.fingerprint() == compact.fingerprint()


def test_fingerprint_counts_ids_by_text_and_rows_as_a_multiset():
    users = pd.DataFrame({"user_id": [1, 2]})
    items = pd.DataFrame({"item_id": ["a", "b"]})
    inter = pd.DataFrame({"user_id": [1, 2, 2], "item_id": ["a", "a", "b"], "timestamp": [5, 6, 7]})
    one = RecData("t", users, items, inter)
    as_text = RecData("t", users.astype(str), items, inter.astype({"user_id": str}))
    shuffled = RecData("t", users, items, inter.iloc[[2, 0, 1]])
    later = RecData("t", users, items, inter.assign(timestamp=[5, 6, 8]))
    assert one.fingerprint() == as_text.fingerprint() == shuffled.fingerprint() != later.fingerprint()
    # each id's hash is pandas' hash of its text, computed once per distinct id
    col = pd.Series(["x", 7, "y", "x"], dtype=object)
    assert np.array_equal(text_hashes(col), pd.util.hash_array(col.astype(str).to_numpy()))
    assert np.array_equal(text_hashes(as_categorical(col)), text_hashes(col))
    nulls = pd.Series([None, np.nan], dtype=object)  # a missing id hashes as the text 'nan'
    assert set(text_hashes(nulls)) == set(pd.util.hash_array(np.array(["nan"], dtype=object)))


def test_files_load_ids_as_categoricals_and_validate_the_same(tmp_path, small_network):
    back = load_files(**{k: v for k, v in save_files(small_network, tmp_path).items()})
    for frame, col in ((back.interactions, "user_id"), (back.interactions, "item_id"), (back.social, "src")):
        assert isinstance(frame[col].dtype, pd.CategoricalDtype), col
    assert back.interactions["user_id"].tolist() == small_network.interactions["user_id"].tolist()
    inter = back.interactions.copy()
    inter.loc[4, "item_id"] = np.nan
    inter = pd.concat([inter, inter.iloc[10:12]], ignore_index=True)
    gone = inter["user_id"].iloc[0]  # this member's rows now name an unknown user
    users = back.users[back.users["user_id"] != gone]
    report = validate_data(RecData("t", users, back.items, inter, back.social), require_timestamp=True)
    bad = {(c.table, c.column, c.expectation): c for c in report.failures}
    assert bad[("interactions", "item_id", "expect_column_values_to_not_be_null")].unexpected_count == 1
    unknown = bad[("interactions", "user_id", "expect_column_values_to_be_in_id_table")]
    assert unknown.unexpected_count == (inter["user_id"] == gone).sum() and unknown.examples[0] == gone
    dup = bad[("interactions", "user_id,item_id,timestamp,event", "expect_compound_columns_to_be_unique")]
    assert dup.unexpected_count == 4
    assert dup.examples[0] == {k: inter.loc[10, k] for k in ("user_id", "item_id", "timestamp", "event")}


def test_the_type_of_a_categorical_id_is_checked_on_its_values():
    users = pd.DataFrame({"user_id": ["a", "b"]})
    items = pd.DataFrame({"item_id": ["x", "y", "z"]})
    ids = pd.Series(pd.Categorical(["a", "a", "a", 2.5, 2.5]))  # a float among text ids
    inter = pd.DataFrame({"user_id": ids, "item_id": ["x", "y", "z", "x", "y"]})
    report = validate_data(RecData("t", users, items, inter))
    check = {(c.table, c.column, c.expectation): c for c in report.failures}[
        ("interactions", "user_id", "expect_column_values_to_be_in_type_list")]
    assert check.unexpected_count == 2 and check.examples == [2.5] and "1 distinct values" in check.detail


def test_feature_kinds_are_shares_of_rows_not_of_distinct_values():
    from recsys.features import infer_spec

    long = "a phrase of well over twenty-four characters"
    frame = pd.DataFrame({"id": range(100), "label": [long] + ["x"] * 99, "prose": [long] * 99 + ["x"]})
    spec = infer_spec(frame, "id")
    assert spec.categorical == ["label"] and spec.text == ["prose"]  # by distinct values both would be 50/50
