"""What a person sees in MLflow's UI, on a real MLflow store in a temporary folder: the experiment
opens on its runs (kind: model training), runs are named by family, data and version, carry the
data set as a dataset input and the source commit, and a registered version's decision reads as a
few tags with every gate's figures in one JSON record."""
import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from deploy.gates import Gate
from deploy.provenance import CHECKOUT, DIRTY, _source_tags, source_tags
from deploy.registry import GATES, apply, decide, gate_record
from deploy.tracking import EXPERIMENT_KIND, MODEL_TRAINING, configure, name_run_for_version, start_run
from recsys.config import load_config


def store_config(root, *sets):
    return load_config(None, [f"stores.root={root}", *sets])


def client_for(cfg):
    uri = cfg.stores.resolved_tracking_uri()
    return MlflowClient(uri, registry_uri=uri)


def test_experiment_is_created_as_model_training_and_old_ones_are_marked(tmp_path):
    cfg = store_config(tmp_path / "new")
    experiment = client_for(cfg).get_experiment(configure(cfg.stores))
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING == "custom_model_development"

    old = store_config(tmp_path / "old")
    old.stores.root.mkdir(parents=True)
    client = client_for(old)
    made_before = client.create_experiment(old.stores.experiment)  # as graphrec made them before
    assert EXPERIMENT_KIND not in client.get_experiment(made_before).tags
    assert configure(old.stores) == made_before
    assert client.get_experiment(made_before).tags[EXPERIMENT_KIND] == MODEL_TRAINING

    chosen = store_config(tmp_path / "chosen")
    chosen.stores.root.mkdir(parents=True)
    client = client_for(chosen)
    exp = client.create_experiment(chosen.stores.experiment, tags={EXPERIMENT_KIND: "genai_development"})
    configure(chosen.stores)
    assert client.get_experiment(exp).tags[EXPERIMENT_KIND] == "genai_development"  # a person's choice stays


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_source_commit_and_dirty_flag_from_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("x = 1\n")
    assert source_tags(repo) == {}  # a repository without a commit has no commit to name
    _source_tags.cache_clear()
    git(repo, "add", "model.py")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").write_text("untracked files do not make the source dirty\n")
    assert source_tags(repo) == {"mlflow.source.git.commit": head}

    _source_tags.cache_clear()
    (repo / "model.py").write_text("x = 2\n")
    assert source_tags(repo) == {"mlflow.source.git.commit": head, DIRTY: "true"}

    plain = tmp_path / "plain"
    plain.mkdir()
    assert source_tags(plain) == {}  # not a checkout: nothing, silently


def test_run_is_named_by_family_data_and_version_and_logs_its_data_set(tmp_path, small_network):
    cfg = store_config(tmp_path, "data.source=synthetic")
    data, fingerprint = small_network, small_network.fingerprint()
    run_id = start_run(cfg, data.summary(), fingerprint, data=data)
    client = client_for(cfg)
    run = client.get_run(run_id)
    assert run.info.run_name == f"lightgcn · synthetic-{fingerprint[:6]}"

    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == "synthetic" and given.dataset.digest == fingerprint
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}
    profile = json.loads(given.dataset.profile)
    assert profile["num_rows"] == len(data.interactions) == profile["interactions"]
    assert profile["users"] == len(data.users) and profile["items"] == len(data.items)
    columns = {c["name"] for c in json.loads(given.dataset.schema)["mlflow_colspec"]}
    assert {"user_id", "item_id"} <= columns
    source = json.loads(given.dataset.source)
    assert given.dataset.source_type == "code" and source["tags"]["mlflow.source.name"] == "recsys.data.synthetic"

    import getpass

    assert run.data.tags["mlflow.user"] == getpass.getuser()  # the UI's "Created by" and "Source"
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.source.name"]
    if (CHECKOUT / ".git").exists():  # the tests run from a checkout: the run names its commit
        assert run.data.tags["mlflow.source.git.commit"] == git(CHECKOUT, "rev-parse", "HEAD")

    assert name_run_for_version(run_id, "7") == f"lightgcn · synthetic-{fingerprint[:6]} · v7"
    assert name_run_for_version(run_id, "7") == f"lightgcn · synthetic-{fingerprint[:6]} · v7"  # once only
    renamed = client.get_run(run_id)
    assert renamed.info.run_name.endswith("· v7") and renamed.data.tags["mlflow.runName"] == renamed.info.run_name

    trial = start_run(cfg, data.summary(), fingerprint, run_name="trial 3")
    assert client.get_run(trial).info.run_name == "trial 3"  # a given name is kept


def gates(metric_passes: bool) -> list[Gate]:
    metric = Gate("metric", metric_passes, "ndcg@20: challenger 0.2800 < champion v1 0.3100 - 0\nmore lines",
                  {"metric": "ndcg@20", "challenger": 0.28, "champion": 0.31, "champion_version": "1", "tolerance": 0})
    embedding = Gate("embedding", True, "vectors pass all checks",
                     {"users": 300, "items": 150, "user_norm_min": 0.1, "user_norm_max": None})
    canary = Gate("canary", True, "200 users: 20 items each", {"users": 200, "k": 20, "empty_lists": 0})
    return [metric, embedding, canary]


def test_a_decision_is_a_few_tags_and_one_json_record(tmp_path, small_network):
    cfg = store_config(tmp_path)
    run_id = start_run(cfg, small_network.summary(), small_network.fingerprint())
    client = client_for(cfg)
    name = cfg.stores.registered_model
    client.create_registered_model(name)
    v1 = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id).version

    decision = apply(name, decide(str(v1), gates(metric_passes=False), champion=None))
    assert not decision.promoted
    tags = client.get_model_version(name, v1).tags
    assert {k for k in tags if k.startswith("gate.")} == {"gate.metric", "gate.embedding", "gate.canary"}
    assert tags["gate.metric"] == "FAIL: ndcg@20: challenger 0.2800 < champion v1 0.3100 - 0"
    assert tags["gate.embedding"] == tags["gate.canary"] == "pass"
    assert tags["promotion.decision"] == "rejected" and tags["promotion.decided_at"] == decision.decided_at
    assert "promotion.forced" not in tags

    assert tags[GATES] == f"runs:/{run_id}/{decision.figures_file()}"
    record = gate_record(tags)
    assert record["promoted"] is False and record["version"] == str(v1)
    by_name = {g["name"]: g for g in record["gates"]}
    assert by_name["metric"]["figures"]["champion"] == 0.31 and by_name["embedding"]["figures"]["user_norm_max"] is None
    assert by_name["metric"]["detail"].endswith("more lines")  # the whole detail is kept in the record
    stored = {a.path for a in client.list_artifacts(run_id, "promotion")}
    assert decision.figures_file() in stored
    assert client.get_registered_model(name).aliases == {"challenger": v1}

    forced = apply(name, decide(str(v1), gates(metric_passes=False), champion=None, force="drill"))
    tags = client.get_model_version(name, v1).tags
    assert tags["promotion.decision"] == "promoted" and tags["promotion.forced"] == "drill"
    assert gate_record(tags)["forced"] == "drill" and forced.promoted

    # A version registered without a run keeps its record in the tag itself.
    v2 = client.create_model_version(name, source=str(tmp_path / "elsewhere")).version
    apply(name, decide(str(v2), gates(metric_passes=True), champion=str(v1)))
    tags = client.get_model_version(name, v2).tags
    assert tags["gate.metric"] == "pass" and json.loads(tags[GATES])["previous_champion"] == str(v1)
    assert gate_record(tags)["gates"][0]["figures"]["challenger"] == 0.28
    assert gate_record({GATES: "runs:/0123456789abcdef/promotion/missing.json"}) is None
    assert gate_record({}) is None


@pytest.mark.parametrize("tags, shown", [
    ({"gate.canary": "pass"}, "pass"),
    ({"gate.canary": "FAIL: 3 users got empty lists"}, "FAIL"),
    ({"gate.canary.passed": "false"}, "FAIL"),  # the form graphrec wrote before
    ({}, ""),
])
def test_models_listing_reads_new_and_old_verdicts(tags, shown):
    from deploy.models_table import metric_figures, verdict

    assert verdict(tags, "canary") == shown
    assert metric_figures({"gate.metric.challenger": "0.28", "gate.metric.champion": "0.31"}) == \
        {"challenger": "0.28", "champion": "0.31"}


def test_links_open_the_runs_table_on_the_ui_port(tmp_path):
    """The links graphrec prints ask for the model-training view (MLflow 3 otherwise opens an
    experiment on its GenAI pages) on stores.ui_port, or on a tracking server's own address."""
    from deploy.tracking import run_link
    from deploy.tracking_ui import page_url, ui_base

    cfg = store_config(tmp_path, "stores.ui_port=5123")
    assert ui_base(cfg.stores) == "http://127.0.0.1:5123"
    assert ui_base(store_config(tmp_path, "stores.tracking_uri=https://mlflow.example:8443/").stores) == \
        "https://mlflow.example:8443"
    experiment = configure(cfg.stores)
    run_id = client_for(cfg).create_run(experiment).info.run_id
    assert run_link(run_id, cfg.stores) == \
        f"http://127.0.0.1:5123/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
    assert page_url("http://h:1", experiment) == f"http://h:1/#/experiments/{experiment}?workflowType=machine_learning"


def test_ui_prints_its_address_once_it_answers_and_takes_its_server_along(tmp_path, processes):
    import os
    import signal
    import socket
    import sys
    import urllib.request

    from tests.conftest import REPO, descendants, exited, wait_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = store_config(tmp_path)
    experiment = configure(cfg.stores)
    ui = processes.start([sys.executable, "-m", "flows.cli", "ui", "--port", str(port), "--set",
                          f"stores.root={tmp_path}"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    shown = next((line.strip() for line in ui.stdout if line.startswith("MLflow UI:")), None)  # the command bounds it
    assert shown == f"MLflow UI: http://127.0.0.1:{port}/#/experiments/{experiment}?workflowType=machine_learning"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as answer:
        assert answer.status == 200
    server = [pid for pid, _ in descendants(ui.pid)]
    assert server
    os.killpg(ui.pid, signal.SIGINT)  # Ctrl-C in its terminal
    assert ui.wait(120) == 130
    wait_until(lambda: all(exited(pid) for pid in server), "the UI's server to end with the command", bound=120)
