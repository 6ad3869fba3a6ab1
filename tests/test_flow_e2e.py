"""The real retraining flow, end to end: Prefect's ephemeral API, MLflow on SQLite in a temporary
folder, real Great Expectations and DGL.

Run 1 trains on files exported from the synthetic network: champion v1 and its snapshot.
Run 2 is fed a corrupted interactions file: it stops at validation with the report, registers
nothing, and CURRENT still names v1's snapshot, which still answers recommend.
"""

import json

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from deploy.registry import gate_record
from flows.cli import prepare_prefect
from recsys.config import load_config
from recsys.data.loaders import save_files
from validation.report import DataValidationError


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_network):
    root = tmp_path_factory.mktemp("graphrec")
    files = save_files(small_network, root / "data")
    prepare_prefect(root)
    return root, files


def task_runs_of(flow_run_id, expected: set[str]) -> set[str]:
    """The task names Prefect's server recorded for a flow run (its recorder writes them from the
    engine's events, a moment after they happen), read back through Prefect's client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.conftest import wait_until

    def recorded():
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        names = {run.name.rsplit("-", 1)[0] for run in runs}
        return names if expected <= names else None

    return wait_until(recorded, "Prefect's server to record the flow run's task runs", bound=300)


def aliases(client, name) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def config(root, interactions, files, **extra):
    sets = [
        "data.source=files", f"data.interactions={interactions}", f"data.users={files['users']}",
        f"data.items={files['items']}", f"data.social={files['social']}",
        "train.epochs=6", "train.eval_every=2", "train.progress=false", "model.dim=16",
        f"stores.root={root / 'store'}",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_config(None, sets)


def test_two_runs_champion_then_rejected_data(workspace):
    from deploy.snapshot import Snapshot, current_name
    from flows.retrain import retrain_flow

    root, files = workspace
    cfg = config(root, files["interactions"], files)

    state = retrain_flow(cfg, return_state=True)
    assert state.is_completed(), state
    out = state.result()
    # Prefect's own record of the run: its task runs, which the history's task graph draws
    tasks = task_runs_of(state.state_details.flow_run_id, {"validate", "build_graph", "train", "register", "crown"})
    assert {"validate", "train", "evaluate", "register", "promote", "refresh", "crown"} <= tasks
    assert out["version"] == "1" and out["promoted"]
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    name = cfg.stores.registered_model
    assert aliases(client, name) == {"champion": "1", "challenger": "1"}
    run = client.get_run(out["run_id"])
    fingerprint = run.data.params["data.fingerprint"]
    assert run.data.params["model.family"] == "lightgcn" and fingerprint
    assert run.info.run_name == f"lightgcn · files-{fingerprint[:6]} · v1"
    (given,) = run.inputs.dataset_inputs
    assert given.dataset.digest == fingerprint and given.dataset.source_type == "local"
    assert json.loads(given.dataset.source)["uri"] == str(files["interactions"].resolve())
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "test_ndcg_at_20" in run.data.metrics
    phases = out["phase_seconds"]  # each phase's time, in the result and on the run
    assert {"load", "validate", "drift", "build_graph", "train", "evaluate", "register", "promote",
            "refresh"} <= set(phases) and min(phases.values()) >= 0
    assert {f"phase_{name}_seconds" for name in phases} <= set(run.data.metrics)
    peaks = out["phase_peak_rss_mb"]  # and its peak resident memory
    assert set(peaks) == set(phases) and min(peaks.values()) > 50
    assert {f"phase_{name}_peak_rss_mb" for name in phases} <= set(run.data.metrics)
    assert "eval_users_test" in run.data.metrics
    assert len(client.get_metric_history(out["run_id"], "loss")) == 6
    artifacts = {a.path for a in client.list_artifacts(out["run_id"], "plots")}
    assert "plots/training_curves.png" in artifacts
    mlflow.set_tracking_uri(cfg.stores.resolved_tracking_uri())
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(
        pd.DataFrame({"user_id": ["u000001", "u000002"]}), params={"k": 3})
    assert served.groupby("user_id")["rank"].apply(list).to_dict() == {"u000001": [1, 2, 3], "u000002": [1, 2, 3]}
    v1 = client.get_model_version(name, "1")
    assert v1.tags["promotion.decision"] == "promoted"
    # train.refit (the default): the served model trained on train and validation pairs for the chosen
    # budget; the gate judged the model chosen on validation, whose vectors the version keeps
    from deploy.champion import align
    from deploy.tracking import load_registered
    from recsys.data.loaders import load_data
    from recsys.metrics import evaluate
    from recsys.prepare import prepare

    assert v1.tags["graphrec.refit"] == "true"
    refit_epochs = int(run.data.params["train_used.refit_epochs"])
    assert refit_epochs >= 1 and len(client.get_metric_history(out["run_id"], "refit_loss")) == refit_epochs
    indexed = prepare(load_data(cfg.data), cfg).indexed
    champion = load_registered(name, "champion")
    assert len(champion.seen_pairs()) == len(indexed.train) + len(indexed.valid)
    judged = evaluate(*align(champion, indexed, gate=True)[:2], indexed.valid, indexed.seen_before("valid"),
                      **cfg.eval.ranking())
    metric = next(g for g in gate_record(v1.tags)["gates"] if g["name"] == "metric")["figures"]
    assert metric["challenger"] == pytest.approx(judged["ndcg@20"], abs=1e-6)
    # the run as MLflow shows it (runs table, compare page) has the figure the gate judged, not the last epoch's
    assert run.data.metrics["valid_ndcg_at_20"] == pytest.approx(metric["challenger"], abs=1e-6)
    assert judged["ndcg@20"] == pytest.approx(out["metrics"]["valid"]["ndcg@20"], abs=1e-6)
    served = evaluate(*align(champion, indexed)[:2], indexed.valid, indexed.seen_before("valid"), **cfg.eval.ranking())
    assert served["ndcg@20"] > judged["ndcg@20"]  # it trained on them
    snapshot_name = current_name(cfg.stores.resolved_snapshots())
    before = Snapshot.open(cfg.stores.resolved_snapshots()).recommend("u000001", k=5)
    assert len(before) == 5

    # Run 2: unknown ids and a null id in the interactions file.
    bad = pd.read_parquet(files["interactions"])
    bad["user_id"] = bad["user_id"].astype(object)
    bad.loc[0, "user_id"] = None
    bad.loc[1, "item_id"] = "j424242"
    bad_path = root / "data" / "corrupted.csv"
    bad.to_csv(bad_path, index=False)
    state = retrain_flow(config(root, bad_path, files), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationError) as err:
        state.result()
    assert "j424242" in str(err.value)
    assert [str(v.version) for v in client.search_model_versions(f"name='{name}'")] == ["1"]
    assert aliases(client, name) == {"champion": "1", "challenger": "1"}
    assert current_name(cfg.stores.resolved_snapshots()) == snapshot_name
    after = Snapshot.open(cfg.stores.resolved_snapshots()).recommend("u000001", k=5)
    pd.testing.assert_frame_equal(before, after)


def test_a_worse_challenger_never_becomes_champion(workspace):
    from flows.retrain import retrain_flow

    root, files = workspace
    # One epoch with a tiny learning rate from scratch is worse than the six-epoch champion of the test
    # above (from the champion, it would start where the champion stands).
    cfg = config(root, files["interactions"], files, **{"train.epochs": 1, "train.lr": 1e-5, "train.start": "scratch"})
    out = retrain_flow(cfg, return_state=True).result()
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    name = cfg.stores.registered_model
    assert not out["promoted"]
    assert aliases(client, name) == {"champion": "1", "challenger": out["version"]}
    tags = client.get_model_version(name, out["version"]).tags
    assert tags["promotion.decision"] == "rejected"
    assert tags["gate.metric"].startswith("FAIL: ")
    assert tags["gate.embedding"] == "pass" and tags["gate.canary"] == "pass"
    metric = next(g for g in gate_record(tags)["gates"] if g["name"] == "metric")["figures"]
    assert metric["champion"] > metric["challenger"]
    assert client.get_run(out["run_id"]).info.run_name.endswith(f" · v{out['version']}")


def test_sage_through_the_flow_serves_a_user_it_has_never_seen(workspace):
    from flows.retrain import retrain_flow

    root, files = workspace
    cfg = config(root, files["interactions"], files, **{
        "model.family": "sage", "model.sage.fanouts": "[5, 5]", "train.epochs": 2,
        "stores.registered_model": "sage-model", "stores.root": str(root / "sage-store")})
    out = retrain_flow(cfg, return_state=True).result()
    assert out["version"] == "1" and out["promoted"]
    mlflow.set_tracking_uri(cfg.stores.resolved_tracking_uri())
    model = mlflow.pyfunc.load_model("models:/sage-model@champion")
    tags = MlflowClient().get_model_version("sage-model", "1").tags
    assert tags["graphrec.family"] == "sage" and tags["graphrec.inductive"] == "true"
    newcomer = pd.DataFrame({
        "user_id": ["brand-new"], "university": ["University of Calder"], "company": ["Novalabs"],
        "title": ["Data Scientist"], "headline": ["Data Scientist at Novalabs | statistics, SQL, PyTorch"],
        "items": [["j000001", "j000002"]], "friends": [["u000003"]],
    })
    recs = model.predict(newcomer, params={"k": 5})
    assert recs["user_id"].tolist() == ["brand-new"] * 5
    assert not set(recs["item_id"]) & {"j000001", "j000002"}  # what they already saw is not offered again


def test_mf_added_through_the_registry_registers_promotes_and_serves(workspace):
    from flows.retrain import retrain_flow

    root, files = workspace
    cfg = config(root, files["interactions"], files, **{
        "model.family": "mf", "train.epochs": 2, "stores.registered_model": "mf-model",
        "stores.root": str(root / "mf-store")})
    out = retrain_flow(cfg, return_state=True).result()
    assert out["version"] == "1" and out["promoted"] and out["metrics"]["test"]["recall@20"] > 0
    assert out["snapshot"]  # the refresh wrote its snapshot from the new champion
    mlflow.set_tracking_uri(cfg.stores.resolved_tracking_uri())
    tags = MlflowClient().get_model_version("mf-model", "1").tags
    assert tags["graphrec.family"] == "mf" and tags["graphrec.inductive"] == "false"
    model = mlflow.pyfunc.load_model("models:/mf-model@champion")
    user = pd.read_parquet(files["interactions"])["user_id"].iloc[0]
    assert len(model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 5})) == 5


def test_a_first_version_that_fails_its_gates_leaves_no_champion_and_no_snapshot(workspace):
    from flows.retrain import retrain_flow

    root, files = workspace
    cfg = config(root, files["interactions"], files, **{
        "model.family": "mf", "train.epochs": 1, "stores.registered_model": "gated-model",
        "stores.root": str(root / "gated-store"), "promotion.embedding.min_norm": 1e6})  # no vector is that long
    out = retrain_flow(cfg, return_state=True).result()  # ends normally: nothing to refresh is no error
    assert out["version"] == "1" and not out["promoted"] and out["snapshot"] is None
    mlflow.set_tracking_uri(cfg.stores.resolved_tracking_uri())
    client = MlflowClient()
    assert "champion" not in aliases(client, "gated-model")
    assert client.get_model_version("gated-model", "1").tags["promotion.decision"] == "rejected"
    snapshots = cfg.stores.resolved_snapshots()
    assert not snapshots.exists() or not any(snapshots.iterdir())  # no snapshot, no CURRENT
