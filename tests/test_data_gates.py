"""Data gates that compare with the champion (issue 17, item 1).

Hand-checked first: top-k never returns a masked item, a model that knows none of the ids scores
0, the drift figures of two tiny profiles, and the metric gate on the champion's own evaluation
users with hand-made vectors. Then through the real command line against one store with a
champion: the two wrong files of the finding (one user's 25 rows; every row given to one user)
stop `retrain` with exit 3 before training, naming the figures, with the champion, its aliases,
the versions and CURRENT unchanged; `--allow-shrink` lets one through, recorded on the run, and
the metric gate then refuses a challenger that cannot serve the champion's users; a normal
retrain of the same data passes the check.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from deploy.gates import ReferenceScores, metric_gate
from deploy.profile import Reference
from deploy.pyfunc import RecommenderModel, save_embeddings
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import EvalConfig, load_config
from recsys.config_ops import DataDriftConfig
from recsys.data.loaders import load_data, save_files
from recsys.data.types import RecData
from recsys.metrics import evaluate
from recsys.ranking import recommend
from tests.conftest import TINY_NETWORK
from validation.drift import compare_profiles, profile_data

TINY = [*TINY_NETWORK, "train.epochs=1", "train.eval_every=1"]


# -- top-k never returns a masked item ---------------------------------------------------------

def test_recommend_returns_fewer_items_rather_than_masked_ones():
    user = np.array([[1.0, 0.0]])
    items = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])  # scores 3, 2, 1
    idx, scores = recommend(user, items, k=3, exclude=[np.array([0, 1])])
    assert idx.tolist() == [[2, -1, -1]]
    assert scores[0, 0] == 1.0 and np.isnan(scores[0, 1:]).all()
    # A non-finite score is no recommendation either, wherever it would sort.
    items[0, 0] = np.nan
    items[1, 0] = np.inf
    idx, _ = recommend(user, items, k=3)
    assert idx.tolist() == [[2, -1, -1]]


def test_a_masked_target_is_never_a_hit_and_a_model_knowing_no_ids_scores_zero():
    # One user, three items, target item 0. Item 0 is also seen (masked): with k=3 and only two
    # items left, the list is [1, 2], not [1, 2, 0]; no hit.
    users, items = np.ones((1, 2)), np.ones((3, 2))
    targets, seen = np.array([[0, 0]]), np.array([[0, 0]])
    m = evaluate(users, items, targets, seen, ks=[3])
    assert m["hit@3"] == 0.0 and m["recall@3"] == 0.0 and m["ndcg@3"] == 0.0
    # Without the mask it is a hit at rank 1 of equal scores (ties: lower index first): ndcg 1.
    assert evaluate(users, items, targets, np.zeros((0, 2), np.int64), ks=[3])["ndcg@3"] == 1.0
    # A model that knows none of the items, or not the user, ranks nothing: 0, not chance.
    none = np.zeros(3, bool)
    nothing = evaluate(users, items, targets, np.zeros((0, 2), np.int64), ks=[3], item_available=none)
    assert set(nothing.values()) == {0.0}
    unknown_user = evaluate(users, items, targets, np.zeros((0, 2), np.int64), ks=[3],
                            user_available=np.zeros(1, bool))
    assert set(unknown_user.values()) == {0.0}


def test_evaluate_counts_an_unknown_user_in_the_mean():
    # Two users, each with target item u; user 1 is unknown: recall@1 is (1 + 0) / 2.
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([[1.0, 0.0], [0.0, 1.0]])
    targets = np.array([[0, 0], [1, 1]])
    m = evaluate(users, items, targets, np.zeros((0, 2), np.int64), ks=[1], user_available=np.array([True, False]))
    assert m["recall@1"] == 0.5
    assert evaluate(torch.tensor(users), torch.tensor(items), targets, np.zeros((0, 2), np.int64), ks=[1])[
        "recall@1"] == 1.0


# -- drift figures -----------------------------------------------------------------------------

def frame(rows) -> RecData:
    inter = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return RecData("t", pd.DataFrame({"user_id": inter["user_id"].unique()}),
                   pd.DataFrame({"item_id": inter["item_id"].unique()}), inter)


def test_drift_figures_of_two_hand_made_profiles():
    # Champion: 4 users with 2 items each (8 rows, items a..d). Today: user 1 alone, 5 rows.
    champion = profile_data(frame([(u, i) for u in (1, 2, 3, 4) for i in ("ab" if u % 2 else "cd")]))
    assert (champion.users, champion.items, champion.interactions) == (4, 4, 8)
    assert champion.per_user["p50"] == 2.0 and champion.per_user["max"] == 2.0
    today = profile_data(frame([(1, i) for i in "abcde"]))
    report = compare_profiles(today, champion, "1", DataDriftConfig())
    by_name = {f.name: f for f in report.figures}
    assert not by_name["active users"].passed and by_name["active users"].note == "ratio 0.25"
    assert by_name["active items"].passed  # 5 / 4 = 1.25
    assert by_name["interaction rows"].passed  # 5 / 8
    kept = by_name["share of champion's users kept"]
    assert kept.today == 0.25 and kept.note == "1 of 4" and not kept.passed
    assert by_name["share of champion's items kept"].today == 1.0
    assert not by_name["interactions per user p50"].passed  # 5 / 2 = 2.5 > 2
    text = report.summary()
    assert "active users: today 1, champion 4 (ratio 0.25; bound ratio 0.5..2)" in text
    assert "--allow-shrink" in text
    same = compare_profiles(champion, champion, "1", DataDriftConfig())
    assert same.success and len(same.figures) == 7
    assert compare_profiles(today, None, "1", DataDriftConfig(), "registered before").skipped


# -- the metric gate on the champion's own evaluation users -------------------------------------

def model(tmp_path, name, user_ids, user_vectors, item_ids, item_vectors) -> RecommenderModel:
    path = save_embeddings(tmp_path / f"{name}.npz", user_ids, np.asarray(user_vectors), item_ids,
                           np.asarray(item_vectors), np.zeros((0, 2), np.int64))
    return RecommenderModel().load(str(path))


def test_metric_gate_scores_both_on_the_champions_users(tmp_path):
    from deploy.champion import score_reference

    # Champion's evaluation users a, b: a's target is item x, b's is item y, b has seen x.
    reference = Reference("test", np.array(["a", "b"]), np.array(["x", "y"]), np.array([[0, 0], [1, 1]]),
                          np.array([[1, 0]]))
    catalogue = np.array(["x", "y", "z"])
    eye = np.eye(3, dtype=np.float32)
    champion = model(tmp_path, "champion", ["a", "b"], eye[:2], catalogue, eye)
    metrics, coverage = score_reference(champion, reference, catalogue, EvalConfig(ks=[1]))
    assert coverage == 1.0 and metrics["recall@1"] == 1.0  # a -> x, b -> y
    # A challenger trained on one user's file: it knows a only (and ranks x first for a).
    lone = model(tmp_path, "lone", ["a"], eye[:1], catalogue, eye)
    metrics, coverage = score_reference(lone, reference, catalogue, EvalConfig(ks=[1]))
    assert coverage == 0.5 and metrics["recall@1"] == 0.5  # b cannot be served: 0 for b

    gate = metric_gate("recall@1", 0.9, 0.8, "1", 0.0, ReferenceScores(2, 0.5, 0.5, 1.0), min_coverage=0.9)
    assert not gate.passed
    assert "challenger 0.9000 >= champion v1 0.8000 - 0" in gate.detail  # today's data alone would pass
    assert "holds vectors for 50.0% (1 of 2) of champion v1's evaluation users" in gate.detail
    assert "challenger 0.5000 < champion 1.0000 - 0" in gate.detail
    assert gate.figures["reference_coverage"] == 0.5
    assert metric_gate("recall@1", 0.9, 0.8, "1", 0.0, ReferenceScores(2, 1.0, 1.0, 1.0)).passed
    worse = metric_gate("recall@1", 0.9, 0.8, "1", 0.0, ReferenceScores(2, 1.0, 0.7, 1.0))
    assert not worse.passed and "on champion v1's 2 evaluation users (test): challenger 0.7000 <" in worse.detail
    old = metric_gate("recall@1", 0.9, 0.8, "1", 0.0, ReferenceScores.missing("1"))
    assert old.passed and "has no recorded evaluation users" in old.detail


def test_a_champion_registered_before_profiles_is_said_so_and_passes(tmp_path):
    """A version registered without a profile (as every version before this change): the drift
    check reports it as skipped, and there are no evaluation users to score on; nothing fails."""
    from deploy.champion import champion_profile
    from deploy.profile import version_reference
    from deploy.registry import CHAMPION
    from deploy.tracking import configure, log_and_register_model

    stores = load_config(None, [f"stores.root={tmp_path}"]).stores
    experiment = configure(stores)
    client = MlflowClient()
    run_id = client.create_run(experiment).info.run_id
    vectors = np.eye(3, dtype=np.float32)
    version = log_and_register_model(run_id, stores.registered_model, ["a", "b", "c"], vectors, ["x", "y", "z"],
                                     vectors, np.array([[0, 0]]))
    client.set_registered_model_alias(stores.registered_model, CHAMPION, version)
    profile, champion, why = champion_profile(stores)
    assert profile is None and champion == "1"
    assert why.startswith("champion v1 was registered before data profiles were recorded")
    today = profile_data(frame([(1, "x"), (1, "y")]))
    report = compare_profiles(today, profile, champion, DataDriftConfig(), why)
    assert report.success and report.summary() == f"data drift check skipped: {why}"
    assert version_reference(stores.registered_model, "1") is None


# -- through the command line, against a store with a champion ----------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny retrain: v1 is champion with its data profile; the network it trained on as files."""
    root = tmp_path_factory.mktemp("data-gates")
    prepare_prefect(root)
    assert run(root, ["retrain"]) == 0
    network = load_data(load_config(None, TINY).data)
    return root, network


def run(root, argv, sets=()) -> int:
    args = list(argv)
    for item in [f"stores.root={root}", *TINY, *sets]:
        args += ["--set", item]
    return cli_main(args)


def state(root) -> dict:
    cfg = load_config(None, [f"stores.root={root}"])
    client, name = registry(root)
    pointer = cfg.stores.resolved_snapshots() / "CURRENT"
    return {"aliases": {a: str(v) for a, v in client.get_registered_model(name).aliases.items()},
            "versions": sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")),
            "CURRENT": pointer.read_bytes()}


def registry(root):
    cfg = load_config(None, [f"stores.root={root}"])
    uri = cfg.stores.resolved_tracking_uri()
    return MlflowClient(uri, registry_uri=uri), cfg.stores.registered_model


def metric_figures(tags: dict) -> dict:
    from deploy.registry import gate_record

    return next(g for g in gate_record(tags)["gates"] if g["name"] == "metric")["figures"]


def one_user_file(folder, network) -> list[str]:
    """The first wrong file: one member's 25 rows, nothing else."""
    user = network.users["user_id"].iloc[7]
    rows = pd.DataFrame({"user_id": user, "item_id": network.items["item_id"].iloc[:25].to_numpy(),
                         "timestamp": 1_700_000_000 + 3600 * np.arange(25)})
    path = folder / "one_user.csv"
    rows.to_csv(path, index=False)
    return ["data.source=files", f"data.interactions={path}"]


def all_rows_one_user(folder, network) -> list[str]:
    """The second: the whole log with every row given to one member (id tables unchanged)."""
    inter = network.interactions.copy()
    inter["user_id"] = network.users["user_id"].iloc[0]
    key = ["user_id", "item_id"] + [c for c in ("timestamp", "event") if c in inter]
    wrong = RecData("wrong", network.users, network.items, inter.drop_duplicates(key), network.social)
    files = save_files(wrong, folder / "all_one_user")
    return ["data.source=files"] + [f"data.{k}={v}" for k, v in files.items()]


@pytest.mark.parametrize("wrong", [one_user_file, all_rows_one_user])
def test_a_wrong_file_that_passes_validation_stops_before_training(store, wrong, tmp_path, capsys):
    root, network = store
    before = state(root)
    sets = wrong(tmp_path, network)
    assert run(root, ["validate"], sets) == 0  # every row-level check passes
    capsys.readouterr()
    assert run(root, ["retrain"], sets) == 3
    err = capsys.readouterr().err
    assert "stopped at validation" in err and "differs from champion v1's data beyond the bounds" in err
    n_users = network.interactions["user_id"].nunique()
    assert f"active users: today 1, champion {n_users} (ratio {1 / n_users:.4g}; bound ratio 0.5..2)" in err
    assert f"share of champion's users kept: today {round(1 / n_users, 4):.4g}" in err
    assert "--allow-shrink" in err
    assert run(root, ["refresh"], sets) == 3  # nor does the hourly refresh write a snapshot of it
    assert "differs from champion v1's data beyond the bounds" in capsys.readouterr().err
    assert state(root) == before
    client, name = registry(root)
    runs = client.search_runs([client.get_experiment_by_name(
        load_config(None, [f"stores.root={root}"]).stores.experiment).experiment_id])
    assert len(runs) == len(before["versions"])  # no run was started: nothing trained


def test_a_normal_retrain_passes_then_the_override_is_recorded_and_the_gate_refuses(store, tmp_path):
    root, network = store
    client, name = registry(root)
    # The same data again: within every bound, scored on v1's evaluation users too.
    assert run(root, ["retrain"]) == 0
    v2 = client.get_model_version(name, "2")
    tags = client.get_run(v2.run_id).data.tags
    assert tags["data_drift.result"] == "passed" and tags["data_drift.champion"] == "v1"
    figures = metric_figures(v2.tags)
    assert figures["reference_coverage"] == 1.0 and figures["reference_users"] > 0
    before = state(root)

    # One member's 25 rows, let through by hand: trained and registered, recorded on the run...
    assert run(root, ["retrain", "--allow-shrink"], one_user_file(tmp_path, network)) == 0
    after = state(root)
    assert after["versions"] == before["versions"] + [3]
    v3 = client.get_model_version(name, "3")
    recorded = client.get_run(v3.run_id).data
    assert recorded.tags["data_drift.allowed"] == "true" and "active users: today 1" in recorded.tags[
        "data_drift.failed"]
    assert recorded.params["promotion.data_drift.allow"] == "True"
    # ... but it cannot serve the champion's users: the metric gate refuses it.
    assert v3.tags["promotion.decision"] == "rejected" and v3.tags["gate.metric"].startswith("FAIL: ")
    assert "it cannot serve them" in v3.tags["gate.metric"]
    figures = metric_figures(v3.tags)
    n = figures["reference_users"]
    assert figures["reference_coverage"] <= 1 / n  # the one member, if v1 evaluated them
    assert figures["reference_challenger"] < figures["reference_champion"]
    assert after["aliases"]["champion"] == before["aliases"]["champion"]
    assert after["aliases"]["challenger"] == "3"
