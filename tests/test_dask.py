"""Scale-out on Dask through Prefect's DaskTaskRunner, on a local cluster of two worker processes:
the refresh's layer-wise chunks run as tasks on the workers and give the same snapshot vectors as
the serial refresh; search trials run on the workers against the shared Optuna storage."""
import numpy as np
import optuna

from deploy.snapshot import Snapshot, read_manifest
from flows.cli import main as cli_main
from flows.cli import prepare_prefect
from recsys.config import load_config
from recsys.data.loaders import save_files
from tests.conftest import TINY_DATA

TINY = ["features.text=false", "model.dim=16", "train.progress=false", "train.eval_every=1"]


def run(root, command, *sets):
    argv = [command]
    for item in [f"stores.root={root}", *TINY, *sets]:
        argv += ["--set", item]
    return cli_main(argv)


def test_dask_refresh_gives_the_serial_vectors(tmp_path, small_network):
    files = save_files(small_network, tmp_path / "data")
    data = ["data.source=files"] + [f"data.{k}={v}" for k, v in files.items()]
    sage = ["model.family=sage", "model.sage.fanouts=[5, 5]", "model.sage.chunk_size=100", "train.epochs=1"]
    root = tmp_path / "store"
    prepare_prefect(root)
    assert run(root, "retrain", *data, *sage) == 0
    assert run(root, "refresh", *data, *sage, f"stores.snapshots={tmp_path / 'serial'}") == 0
    assert run(root, "refresh", *data, *sage, f"stores.snapshots={tmp_path / 'dask'}",
               "compute.runner=dask", "compute.workers=2") == 0
    serial, dask = Snapshot.open(tmp_path / "serial"), Snapshot.open(tmp_path / "dask")
    assert read_manifest(tmp_path / "dask")["vectors"] == "reembedded"
    assert list(serial.user_ids) == list(dask.user_ids) and list(serial.item_ids) == list(dask.item_ids)
    np.testing.assert_allclose(dask.user_vectors, serial.user_vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dask.item_vectors, serial.item_vectors, rtol=1e-5, atol=1e-6)


def test_search_trials_on_dask_workers(tmp_path):
    root = tmp_path / "store"
    prepare_prefect(root)
    sets = [*TINY_DATA, "search.trials=2", "search.register_best=false",
            "search.workers=2", "compute.runner=dask", "train.epochs=2"]
    assert run(root, "search", *sets) == 0
    cfg = load_config(None, [f"stores.root={root}"])
    study = optuna.load_study(study_name="graphrec-lightgcn", storage=cfg.stores.resolved_optuna_storage())
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) >= 2
    assert len({t.user_attrs.get("mlflow_run_id") for t in finished}) == len(finished)
