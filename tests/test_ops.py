"""Operations from the command line, on real MLflow, Prefect and Great Expectations:
gates, promotion by hand (with and without --force), rollback of champion and CURRENT, clear
errors for versions that do not exist, and the refresh-only flow re-embedding new users with an
inductive champion."""
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from deploy.gates import canary_gate, embedding_gate, metric_gate
from deploy.registry import gate_record
from deploy.snapshot import Snapshot, read_manifest
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import load_config
from recsys.config_ops import CanaryConfig, EmbeddingGateConfig
from recsys.data.loaders import save_files
from tests.conftest import TINY_NETWORK

TINY = [*TINY_NETWORK, "train.eval_every=1", "train.epochs=4"]


def run(root, command, *args, sets=()):
    argv = [command, *args]
    for item in [f"stores.root={root}", *TINY, *sets]:
        argv += ["--set", item]
    return cli_main(argv)


def test_embedding_gate_names_bad_vectors_and_wrong_counts():
    cfg = EmbeddingGateConfig(min_norm=1e-3, max_norm=10)
    good = np.ones((3, 2))
    assert embedding_gate(["a", "b", "c"], good, ["x", "y"], good[:2], 3, 2, cfg).passed
    bad = good.copy()
    bad[1, 0] = np.nan
    gate = embedding_gate(["a", "b", "c"], bad, ["x", "y"], good[:2] * 100, 3, 2, cfg)
    assert not gate.passed and gate.figures["user_nonfinite"] == 1
    assert "'b (norm nan)'" in gate.detail and "'x (norm 141)'" in gate.detail
    short = embedding_gate(["a", "b"], good[:2], ["x", "y"], good[:2], 3, 2, cfg)
    assert not short.passed and "expected exactly 3 rows" in short.detail


def test_canary_passes_sound_lists_and_catches_broken_vectors():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(20, 4)), rng.normal(size=(30, 4))
    seen = np.array([[u, i] for u in range(20) for i in range(u % 5)])
    available = np.ones(30, bool)
    cfg = CanaryConfig(users=10, k=5)
    assert canary_gate(users, items, seen, available, cfg).passed
    users[:] = np.nan
    broken = canary_gate(users, items, seen, available, cfg)
    assert not broken.passed and broken.figures["empty_lists"] == 10


def test_the_gates_score_a_refit_versions_validation_chosen_vectors(tmp_path):
    from deploy.champion import align
    from deploy.pyfunc import RecommenderModel, save_embeddings
    from recsys.data.types import IndexedData

    served, chosen = np.ones((2, 3)), np.full((2, 3), 2.0)
    seen = np.array([[0, 0]])
    plain = RecommenderModel().load(str(save_embeddings(tmp_path / "a.npz", ["u1", "u0"], served, ["i0", "i1"],
                                                        served, seen)))
    refit = RecommenderModel().load(str(save_embeddings(tmp_path / "b.npz", ["u1", "u0"], served, ["i0", "i1"],
                                                        served, seen, gate_vectors=(chosen, chosen * 3))))
    empty = np.zeros((0, 2), np.int64)
    data = IndexedData(np.array(["u0", "u1", "u2"]), np.array(["i1", "i0"]), empty, empty, empty, empty)
    users, items, _ = align(refit, data, gate=True)
    assert users.tolist() == [[2.0] * 3, [2.0] * 3, [0.0] * 3] and items.tolist() == [[6.0] * 3] * 2
    assert align(refit, data)[0][0].tolist() == [1.0] * 3  # served vectors otherwise
    assert align(plain, data, gate=True)[0][0].tolist() == [1.0] * 3  # a version without them: its served ones


def test_metric_gate_tolerance():
    assert metric_gate("ndcg@20", 0.30, 0.31, "1", 0.02).passed
    gate = metric_gate("ndcg@20", 0.28, 0.31, "1", 0.02)
    assert not gate.passed and "challenger 0.2800 < champion v1 0.3100 - 0.02" in gate.detail


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops")
    prepare_prefect(root)
    assert run(root, "retrain") == 0  # v1: champion
    # v2: rejected by the metric gate (from scratch: started from v1, it would stand where v1 does)
    assert run(root, "retrain", sets=["train.epochs=1", "train.lr=1e-5", "train.start=scratch"]) == 0
    return root


def client_for(root):
    cfg = load_config(None, [f"stores.root={root}"])
    uri = cfg.stores.resolved_tracking_uri()
    return MlflowClient(uri, registry_uri=uri), cfg  # not the registry another test pointed MLflow at


def aliases(root):
    client, cfg = client_for(root)
    return {a: str(v) for a, v in client.get_registered_model(cfg.stores.registered_model).aliases.items()}


def test_promote_by_hand_force_and_rollback(store, capsys):
    client, cfg = client_for(store)
    name, snapshots = cfg.stores.registered_model, cfg.stores.resolved_snapshots()
    assert aliases(store) == {"champion": "1", "challenger": "2"}
    v1_snapshot = read_manifest(snapshots)["name"]

    assert run(store, "promote", "--version", "2") == 4  # the gates still apply
    assert aliases(store)["champion"] == "1"
    assert client.get_model_version(name, "2").tags["gate.metric"].startswith("FAIL: ndcg@20: challenger ")
    assert run(store, "promote", "--version", "2", "--force") == 2  # --force needs a reason

    assert run(store, "promote", "--version", "2", "--force", "--reason", "hotfix drill") == 0
    tags = client.get_model_version(name, "2").tags
    assert aliases(store)["champion"] == "2"
    assert tags["promotion.forced"] == "hotfix drill" and tags["promotion.previous_champion"] == "1"
    assert read_manifest(snapshots)["model_version"] == "2"

    capsys.readouterr()
    assert run(store, "models") == 0
    listing = capsys.readouterr().out
    assert "forced: hotfix drill" in listing and "replaced v1" in listing
    row = next(line for line in listing.splitlines() if line.split()[0] == "2")
    metric = next(g for g in gate_record(tags)["gates"] if g["name"] == "metric")["figures"]
    assert row.split()[4:6] == [str(metric["challenger"])[:9], str(metric["champion"])[:9]]  # from the JSON
    assert row.split()[6:8] == ["pass", "pass"]  # embedding and canary verdicts

    assert run(store, "rollback", "--reason", "drill over") == 0
    assert aliases(store)["champion"] == "1"
    assert read_manifest(snapshots)["name"] == v1_snapshot  # the old snapshot, not a rewrite
    assert client.get_model_version(name, "2").tags["promotion.rollback_reason"] == "drill over"
    assert len(Snapshot.open(snapshots).recommend("u000001", k=5)) == 5

    capsys.readouterr()
    assert run(store, "rollback") == 2
    assert "replaced no earlier champion" in capsys.readouterr().err


def test_versions_that_do_not_exist_are_clear_errors(store, capsys):
    before = read_manifest(load_config(None, [f"stores.root={store}"]).stores.resolved_snapshots())["name"]
    assert run(store, "promote", "--version", "99") == 2
    assert "has no version '99' (versions: 1, 2)" in capsys.readouterr().err
    assert run(store, "refresh", sets=["refresh.version=42"]) == 2
    assert "has no version '42'" in capsys.readouterr().err
    assert aliases(store)["champion"] == "1"
    assert read_manifest(load_config(None, [f"stores.root={store}"]).stores.resolved_snapshots())["name"] == before


def test_refresh_reembeds_new_users_with_an_inductive_champion(tmp_path, small_network):
    from recsys.data.types import RecData

    full = small_network
    newcomers = full.users["user_id"].iloc[-10:]
    old = RecData(full.name, full.users[~full.users["user_id"].isin(newcomers)], full.items,
                  full.interactions[~full.interactions["user_id"].isin(newcomers)],
                  full.social[~full.social["src"].isin(newcomers) & ~full.social["dst"].isin(newcomers)], full.meta)
    sets = []
    for tag, data in (("old", old), ("new", full)):
        files = save_files(data, tmp_path / tag)
        sets.append(["data.source=files"] + [f"data.{k}={v}" for k, v in files.items()]
                    + ["model.family=sage", "model.sage.fanouts=[5, 5]", "train.epochs=2"])
    root = tmp_path / "store"
    prepare_prefect(root)
    assert run(root, "retrain", sets=sets[0]) == 0
    snapshots = load_config(None, [f"stores.root={root}"]).stores.resolved_snapshots()
    assert read_manifest(snapshots)["counts"]["users"] == len(old.users)

    assert run(root, "refresh", sets=sets[1]) == 0
    manifest = read_manifest(snapshots)
    assert manifest["vectors"] == "reembedded" and manifest["model_version"] == "1"
    assert manifest["counts"]["users"] == len(full.users)
    snap = Snapshot.open(snapshots)
    rows = snap.rows(newcomers)
    assert np.isfinite(snap.user_vectors[rows]).all() and (np.abs(snap.user_vectors[rows]).sum(1) > 0).all()
    someone = newcomers.iloc[0]
    their_items = set(full.interactions.loc[full.interactions["user_id"] == someone, "item_id"])
    recs = snap.recommend(someone, k=10)
    assert len(recs) == 10 and not set(recs["item_id"]) & their_items
    assert run(root, "refresh", sets=sets[1]) == 0  # same champion, same data: nothing new written
    assert read_manifest(snapshots)["name"] == manifest["name"]


def test_promote_with_a_metric_that_is_not_computed_names_the_ones_that_are(store, capsys):
    before = aliases(store)
    capsys.readouterr()
    assert run(store, "promote", "--version", "2", sets=["promotion.metric=recall@7"]) == 2
    err = capsys.readouterr().err
    assert "promotion.metric='recall@7' is not computed; choose one of" in err and "recall@20" in err
    assert aliases(store) == before  # nothing moved
