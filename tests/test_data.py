"""The synthetic network, the loaders on the real public data sets, and the split."""
import numpy as np
import pandas as pd
import pytest

from recsys.data.loaders import DataLoadError, load_files, load_gowalla, load_lastfm, load_ml100k, save_files
from recsys.data.split import assign_split
from recsys.data.synthetic import generate
from tests.conftest import shared


def test_synthetic_is_deterministic_by_seed(small_network):
    again = generate(n_users=300, n_items=150, n_universities=4, n_companies=8, mean_interactions=12, seed=7)
    other = generate(n_users=300, n_items=150, n_universities=4, n_companies=8, mean_interactions=12, seed=8)
    assert small_network.fingerprint() == again.fingerprint()
    assert small_network.fingerprint() != other.fingerprint()


def test_synthetic_has_the_promised_shape(small_network):
    d = small_network
    assert {"university", "title", "company", "headline"} <= set(d.users.columns)
    assert {"title", "company", "description"} <= set(d.items.columns)
    assert set(d.interactions["event"]) == {"view", "click", "apply"}
    # cold members and jobs exist and have no interactions at all
    active_users = set(d.interactions["user_id"])
    active_items = set(d.interactions["item_id"])
    assert 0 < len(set(d.users["user_id"]) - active_users) == d.meta["cold_users"]
    assert 0 < len(set(d.items["item_id"]) - active_items) == d.meta["cold_items"]
    # friendships are more often within a university than chance would give
    uni = d.users.set_index("user_id")["university"]
    same = (uni[d.social["src"]].to_numpy() == uni[d.social["dst"]].to_numpy()).mean()
    chance = (uni.value_counts(normalize=True) ** 2).sum()
    assert same > chance + 0.2


def test_temporal_split_holds_out_each_users_last_pairs():
    inter = pd.DataFrame({"user_id": ["a"] * 10 + ["b"] * 2, "item_id": list(range(10)) + [0, 1],
                          "timestamp": list(range(10)) + [5, 6]})
    out = assign_split(inter, "temporal", 0.1, 0.2)
    a = out[out.user_id == "a"].set_index("item_id")["split"]
    assert a[[8, 9]].tolist() == ["test", "test"] and a[7] == "valid" and (a[:6] == "train").all()
    assert (out[out.user_id == "b"]["split"] == "train").all()  # fewer than three pairs: all train


def test_files_round_trip_and_empty_file(tmp_path, small_network):
    paths = save_files(small_network, tmp_path / "net")
    back = load_files(paths["interactions"], paths["users"], paths["items"], paths["social"])
    assert back.fingerprint() == small_network.fingerprint()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataLoadError, match="empty"):
        load_files(empty)
    with pytest.raises(DataLoadError, match="does not exist"):
        load_files(tmp_path / "missing.csv")


def test_csv_with_named_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("member,job,ts\n1,10,100\n1,11,101\n2,10,102\n")
    data = load_files(path, columns={"member": "user_id", "job": "item_id", "ts": "timestamp"})
    assert list(data.interactions.columns) == ["user_id", "item_id", "timestamp"]
    assert sorted(data.users["user_id"]) == [1, 2] and sorted(data.items["item_id"]) == [10, 11]


def test_gowalla_loader_matches_the_published_counts():
    data = load_gowalla(shared("gowalla"))
    x = data.indexed()
    assert (x.n_users, x.n_items) == (29858, 40981)
    assert (len(x.train), len(x.test)) == (810128, 217242)


def test_ml100k_loader_reads_ratings_and_features():
    data = load_ml100k(shared("ml-100k"))
    assert (len(data.users), len(data.items), len(data.interactions)) == (943, 1682, 100000)
    assert {"age", "gender", "occupation"} <= set(data.users.columns)
    assert data.items.set_index("item_id").loc[1, "genres"] == "Animation|Children's|Comedy"


def test_lastfm_loader_brings_its_social_graph():
    data = load_lastfm(shared("lastfm"))
    assert (len(data.users), len(data.items)) == (1892, 4489)
    assert (data.interactions["split"] == "train").sum() == 42135
    assert (data.interactions["split"] == "test").sum() == 10533
    assert len(data.social) == 12717  # 25,434 directed rows = 12,717 friendships


def test_gowalla_ids_are_the_files_own_and_row_r_is_id_r():
    data = load_gowalla(shared("gowalla"))
    assert (data.users["user_id"].to_numpy() == np.arange(29858)).all()
    assert (data.items["item_id"].to_numpy() == np.arange(40981)).all()
    x = data.indexed()
    first = data.interactions.iloc[0]  # train.txt starts "0 0 1 2 ...": user 0, item 0 is row (0, 0)
    assert (first["user_id"], first["item_id"]) == (0, 0) and x.train[0].tolist() == [0, 0]


def write_lightgcn(folder, train: bytes, test: bytes):
    folder.mkdir(exist_ok=True)
    (folder / "train.txt").write_bytes(train)
    (folder / "test.txt").write_bytes(test)
    return folder


def test_lightgcn_ids_are_mapped_not_used_as_sizes(tmp_path):
    folder = write_lightgcn(tmp_path / "g", b"5 1000000000000 7\n1000000000000 7\n", b"5 3\n")
    data = load_gowalla(folder)
    assert data.users["user_id"].tolist() == [5, 1000000000000]  # two users, not 10^12 + 1
    assert data.items["item_id"].tolist() == [3, 7, 1000000000000]
    x = data.indexed()
    assert x.train.tolist() == [[0, 1], [0, 2], [1, 1]] and x.test.tolist() == [[0, 0]]


@pytest.mark.parametrize("line, fragment", [
    (b"1 2 x3\n", "train.txt, line 2: 'x3' (field 3) is not an integer id"),
    (b"1 2 3\xff\n", "train.txt, line 2: byte 0xff at offset 11 is not UTF-8 text"),
    (b"1 -\n", "train.txt, line 2: '-' (field 2) is not an integer id"),
    (b"abc\n", "train.txt, line 2: 'abc' (field 1) is not an integer id"),
])
def test_lightgcn_bad_lines_are_named(tmp_path, line, fragment):
    folder = write_lightgcn(tmp_path / "g", b"0 1 2\n" + line, b"0 3\n")
    with pytest.raises(DataLoadError) as err:
        load_gowalla(folder)
    assert fragment in str(err.value) and "`user item item ...`" in str(err.value)


def test_lastfm_ids_are_mapped_and_bad_lines_named(tmp_path):
    folder = tmp_path / "lf"
    folder.mkdir()
    (folder / "data1.txt").write_bytes(b"7\t40\t1\n1000000000000\t41\t2\n")
    (folder / "test1.txt").write_bytes(b"7\t41\t3\n")
    (folder / "trustnetwork.txt").write_bytes(b"7\t9\n9\t7\n")
    data = load_lastfm(folder)
    assert data.users["user_id"].tolist() == [7, 9, 1000000000000] and data.items["item_id"].tolist() == [40, 41]
    assert data.social.to_numpy().tolist() == [[7, 9]]
    (folder / "test1.txt").write_bytes(b"7\t41\t3\n8\t4l\t1\n")
    with pytest.raises(DataLoadError, match=r"test1.txt, line 2: '4l' \(field 2\) is not an integer id"):
        load_lastfm(folder)


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_csv_separator_is_recognised_from_the_header(tmp_path, sep):
    path = tmp_path / "log.csv"
    path.write_text(sep.join(["user_id", "item_id", "timestamp"]) + "\n" + sep.join(["a", "x", "5"]) + "\n")
    data = load_files(path)
    assert data.interactions.to_dict("list") == {"user_id": ["a"], "item_id": ["x"], "timestamp": [5]}


def test_missing_id_columns_name_the_columns_found_and_data_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("member;job;ts\n1;10;100\n")
    with pytest.raises(DataLoadError) as err:
        load_files(path)
    assert ("has no user_id / item_id column; columns found: member, job, ts. Map your names with data.columns, "
            "e.g. --set 'data.columns={member: user_id, job: item_id}'") in str(err.value)


@pytest.mark.parametrize("values, seconds", [
    ([1_700_000_000, 1_700_000_060], [1_700_000_000, 1_700_000_060]),  # seconds, as they are
    ([3, 4], [3, 4]),  # small numbers are seconds too
    ([1_700_000_000_000, 1_700_000_060_500], [1_700_000_000.0, 1_700_000_060.5]),  # from 10^11 up: milliseconds
    (["2023-11-14T22:13:20Z", "2023-11-14 23:13:20+01:00"], [1_700_000_000, 1_700_000_000]),  # ISO-8601
    (["2023-11-14", "2023-11-15T00:00:00"], [1_699_920_000, 1_700_006_400]),  # no zone: UTC
])
def test_timestamps_become_unix_seconds(tmp_path, values, seconds):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": values}).to_parquet(path)
    assert load_files(path).interactions["timestamp"].tolist() == seconds


@pytest.mark.parametrize("values, fragment", [
    (["2023-11-14", "last week"], "'last week' (row 1) is not a timestamp"),
    ([1_700_000_000, 1_700_000_000_000], "1700000000000 (row 1) reads as milliseconds but 1700000000 (row 0)"),
    ([1_700_000_000_000_000, 1], "is too large for seconds or milliseconds"),
    (["1700000000", "2023-11-14"], "'2023-11-14' (row 1) is a date but '1700000000' (row 0) a number"),
])
def test_timestamps_in_no_accepted_form_are_refused(tmp_path, values, fragment):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": values}).to_parquet(path)
    with pytest.raises(DataLoadError) as err:
        load_files(path)
    assert fragment in str(err.value) and "timestamps must be Unix seconds, Unix milliseconds" in str(err.value)


def test_ids_only_in_test_are_reported_by_validation(tmp_path):
    from recsys.config import ValidationConfig
    from validation.data import validate_data

    folder = write_lightgcn(tmp_path / "g", b"0 1 2 3\n1 1 2 3\n", b"0 4\n9 1\n")
    data = load_gowalla(folder)
    assert 9 in data.users["user_id"].tolist()  # kept as a user ...
    report = validate_data(data, ValidationConfig(min_interactions_per_user=1))
    assert report.success and len(report.warnings) == 2  # ... and reported (the default: warn)
    assert "1 users occur only in held-out (test/valid) rows, never in training" in report.summary()
    assert "e.g. 9" in report.summary() and "e.g. 4" in report.summary()
    strict = validate_data(data, ValidationConfig(min_interactions_per_user=1, test_only_ids="fail"))
    assert not strict.success and {c.column for c in strict.failures} == {"user_id", "item_id"}


def test_a_source_with_only_train_and_test_gets_validation_from_train(tmp_path):
    """LightGCN format: validation is a seeded per-user share of train.txt; test.txt stays as it is."""
    from recsys.config import DataConfig
    from recsys.data.loaders import with_split

    rng = np.random.default_rng(0)
    folder = tmp_path / "lgcn"
    folder.mkdir()
    for name, per_user in (("train.txt", 20), ("test.txt", 5)):
        lines = [" ".join(map(str, [u, *rng.choice(300, per_user, replace=False)])) for u in range(50)]
        (folder / name).write_text("\n".join(lines) + "\n")
    raw = load_gowalla(folder)
    split = with_split(raw, DataConfig(source="gowalla", path=folder))
    again = with_split(raw, DataConfig(source="gowalla", path=folder))
    labels = split.interactions["split"].astype(str).to_numpy()
    before = raw.interactions["split"].to_numpy()
    assert (labels[before == "test"] == "test").all()  # test rows untouched
    assert set(labels[before == "train"]) == {"train", "valid"}  # validation comes from train only
    per_user = split.interactions[labels == "valid"].groupby("user_id").size()
    assert len(per_user) == 50 and (per_user == 2).all()  # floor(20 x 0.1) of each user's pairs
    assert (again.interactions["split"].astype(str).to_numpy() == labels).all()  # seeded
    assert "split.seed 0" in split.meta["validation_split"]
    assert "validation_split" in split.summary()
    none = with_split(raw, DataConfig(source="gowalla", path=folder, split={"valid_fraction": 0}))
    assert (none.interactions["split"].astype(str).to_numpy() == before).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_ids_with_spaces_or_tabs_around_them_are_one_id_and_the_first_row_is_named(tmp_path, caplog, suffix):
    inter = pd.DataFrame({"user_id": ["u1", " u1", "u2\t", "u2", "u3"], "item_id": ["i1", "i2", "i1", " i3 ", "i2"]})
    path = tmp_path / f"interactions{suffix}"
    inter.to_csv(path, index=False) if suffix == ".csv" else inter.to_parquet(path, index=False)
    with caplog.at_level("WARNING", logger="graphrec.data"):
        data = load_files(path)
    assert sorted(map(str, data.users["user_id"])) == ["u1", "u2", "u3"]
    assert sorted(map(str, data.items["item_id"])) == ["i1", "i2", "i3"]
    assert list(data.interactions["user_id"].astype(str)) == ["u1", "u1", "u2", "u2", "u3"]
    where = "row 1, line 3" if suffix == ".csv" else "row 1)"
    assert f"2 user_id value(s) had spaces or tabs around the id (first: {where}" in caplog.text
    assert "1 item_id value(s)" in caplog.text and "(first: row 3" in caplog.text
