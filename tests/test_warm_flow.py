"""Warm starts through the real retraining flow (Prefect, MLflow on SQLite, DGL, GX): the second
retrain on the same data starts from the champion at the champion's own validation figure and
says so on its run and its version; a champion that cannot seed today's model gives a scratch
start with the reason, never a crash."""
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.cli import prepare_prefect
from recsys.config import load_config
from recsys.data.loaders import save_files


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_network):
    root = tmp_path_factory.mktemp("warm")
    files = save_files(small_network, root / "data")
    prepare_prefect(root)
    return root, files


def _config(root, files, **extra):
    sets = ["data.source=files", f"data.interactions={files['interactions']}", f"data.users={files['users']}",
            f"data.items={files['items']}", f"data.social={files['social']}", "train.epochs=6", "train.eval_every=2",
            "train.progress=false", "model.dim=16", f"stores.root={root / 'store'}"]
    return load_config(None, sets + [f"{k}={v}" for k, v in extra.items()])


def _run(cfg):
    from flows.retrain import retrain_flow

    out = retrain_flow(cfg)
    client = MlflowClient(cfg.stores.resolved_tracking_uri())
    version = client.get_model_version(cfg.stores.registered_model, out["version"])
    return out, client, client.get_run(out["run_id"]), version


def test_the_second_retrain_starts_from_the_champion_and_bad_champions_give_a_scratch_start(workspace):
    root, files = workspace
    cfg = _config(root, files)
    first, client, run, version = _run(cfg)
    assert run.data.params["start"] == "scratch" and "no champion yet" in run.data.params["start_reason"]
    assert version.tags["graphrec.start"] == "scratch" and first["promoted"]
    champion_valid = run.data.metrics["valid_ndcg_at_20"]  # the model chosen on validation, which the gates judge

    # a plain copy (no shrink and perturb): the warm run starts where the champion stood
    second, client, run, version = _run(_config(root, files, **{"train.warm.shrink": 1, "train.warm.perturb": 0}))
    params = run.data.params
    assert params["start"] == "champion" and params["start_version"] == first["version"]
    assert int(params["start_users_carried"]) > 0 and params["start_users_new"] == "0"
    curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_20")
    assert min(m.step for m in curve) == 0
    at_start = next(m.value for m in curve if m.step == 0)
    assert at_start == pytest.approx(champion_valid, abs=1e-5)  # where the champion stood
    assert run.data.metrics["valid_ndcg_at_20"] >= at_start - 1e-6  # early stopping never ends below it
    assert version.tags["graphrec.start"] == "champion" and version.tags["graphrec.warm_from"] == first["version"]
    assert version.tags["graphrec.warm_chain"] == "1"
    from deploy.models_table import models_table

    listed = [line for line in models_table(cfg.stores, "ndcg@20") if line.split()[0] == second["version"]]
    assert f"warm from v{first['version']}" in listed[0]  # `graphrec models` shows it

    # a champion of another family: a scratch start naming both
    _, _, run, _ = _run(_config(root, files, **{"train.epochs": 2, "model.family": "mf"}))
    assert run.data.params["start"] == "scratch"
    assert "is a lightgcn model, today's is mf" in run.data.params["start_reason"]

    # one retrain in every scratch_every from scratch; and after data that drifted beyond the check's bounds
    _, _, run, _ = _run(_config(root, files, **{"train.epochs": 2, "train.scratch_every": 1}))
    assert run.data.params["start"] == "scratch" and "train.scratch_every=1" in run.data.params["start_reason"]
    inter = pd.read_parquet(files["interactions"])
    kept = inter["user_id"].drop_duplicates().sample(frac=0.4, random_state=0)
    drifted = root / "drifted.parquet"
    inter[inter["user_id"].isin(kept)].to_parquet(drifted, index=False)
    _, _, run, _ = _run(_config(root, {**files, "interactions": drifted},
                                **{"train.epochs": 2, "promotion.data_drift.allow": "true"}))
    assert run.data.tags["data_drift.result"] == "beyond bounds"
    assert run.data.params["start"] == "scratch" and "drifted beyond" in run.data.params["start_reason"]

    # the champion's warm-start files damaged, then lost: a scratch start that says so
    def champion_warm_files() -> Path:
        champion = client.get_registered_model(cfg.stores.registered_model).aliases["champion"]
        run_id = client.get_model_version(cfg.stores.registered_model, champion).run_id
        return Path(urlparse(client.get_run(run_id).info.artifact_uri).path) / "warm_start"

    (champion_warm_files() / "state.pt").write_bytes(b"not a torch file")
    _, _, run, _ = _run(_config(root, files, **{"train.epochs": 2, "train.start": "champion"}))
    assert run.data.params["start"] == "scratch" and "state cannot be read" in run.data.params["start_reason"]
    shutil.rmtree(champion_warm_files())
    _, _, run, _ = _run(_config(root, files, **{"train.epochs": 2, "train.start": "champion"}))
    assert run.data.params["start"] == "scratch" and "has no warm-start state" in run.data.params["start_reason"]
