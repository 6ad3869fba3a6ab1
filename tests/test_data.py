"""The synthetic network, the loaders on the real public data sets, and the split."""
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
