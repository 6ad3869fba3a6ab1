"""MLflow-native serving: a registered version carries its own code and pinned requirements, so
`mlflow.pyfunc.load_model` works in a process that cannot import graphrec, and `mlflow models
serve` answers REST calls. Nothing is pickled: the model is logged from code, and the inductive
bundle is tensors, arrays and JSON.

Two versions are registered by hand (no training): a known-users model small enough to rank by
hand, and a GraphSAGE model with its bundle, which embeds a member it has never seen."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from packaging.requirements import Requirement

from deploy.tracking import configure, load_registered, log_and_register_model
from recsys.config import RunConfig, load_config
from recsys.inductive import Bundle
from recsys.models import build_model
from recsys.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Hand-checkable: scores are user . item; u1 has seen a, u3 has seen a and c.
USERS, ITEMS = ["u1", "u2", "u3"], ["a", "b", "c", "d"]
USER_VECTORS = [[1, 0], [0, 1], [1, 1]]
ITEM_VECTORS = [[3, 0], [2, 0.5], [0, 2], [1, 1.4]]
SEEN = [[0, 0], [2, 0], [2, 2]]
TOP2 = {"u1": [("b", 2.0), ("d", 1.0)],                # a (3) seen
        "u2": [("c", 2.0), ("d", 1.4)],
        "u3": [("b", 2.5), ("d", 2.4)]}               # a (3) and c (2) seen


@pytest.fixture(scope="module")
def registry(tmp_path_factory, small_network):
    root = tmp_path_factory.mktemp("serving")
    stores = load_config(None, [f"stores.root={root}"]).stores
    experiment = configure(stores)
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    logged = []

    class Capture(logging.Handler):
        def emit(self, record):
            logged.append(record.getMessage())

    handler = Capture()
    logging.getLogger("mlflow").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            known = log_and_register_model(run.info.run_id, "known-users", USERS, np.array(USER_VECTORS), ITEMS,
                                           np.array(ITEM_VECTORS), np.array(SEEN))
            cfg = RunConfig.model_validate({"features": {"text": False},
                                            "model": {"family": "sage", "dim": 8, "sage": {"fanouts": [5, 5]}}})
            prepared = prepare(small_network, cfg)
            graph = prepared.graph
            model = build_model(cfg.model, graph).eval()  # untrained weights embed new users just as well
            with torch.no_grad():
                users, items = model.embed(graph)
            bundle = Bundle(cfg.model.model_dump(), model.state_dict(), prepared.indexed, graph.use_social,
                            graph.user_features, graph.item_features, prepared.user_encoder, prepared.item_encoder)
            sage = log_and_register_model(run.info.run_id, "sage-serving", prepared.indexed.user_ids,
                                          users.numpy(), prepared.indexed.item_ids, items.numpy(),
                                          prepared.indexed.train, bundle=bundle)
        logged += [str(w.message) for w in warned]
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    return {"root": root, "uri": stores.resolved_tracking_uri(), "known": f"models:/known-users/{known}",
            "sage": f"models:/sage-serving/{sage}", "bundle": bundle, "data": small_network, "log": logged}


def newcomer(data) -> pd.DataFrame:
    """A member the sage model has never seen: someone's profile, three jobs and two friends."""
    profile = data.users.iloc[[5]].drop(columns="user_id").reset_index(drop=True)
    jobs = data.interactions.loc[data.interactions["user_id"] == data.users["user_id"].iloc[5], "item_id"]
    frame = pd.concat([pd.DataFrame({"user_id": ["newcomer"]}), profile], axis=1)
    frame["items"] = [[str(j) for j in jobs.iloc[:3]]]
    frame["friends"] = [[str(u) for u in data.users["user_id"].iloc[6:8]]]
    return frame


def model_dir(uri: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(uri))


def test_logged_from_code_with_its_code_and_pinned_requirements(registry):
    assert not any("cloudpickle" in message.lower() for message in registry["log"])
    for name, extra in (("known", set()), ("sage", {"torch", "dgl", "pydantic"})):
        folder = model_dir(registry[name])
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
        assert (folder / flavor["model_code_path"].split("/")[-1]).is_file() and flavor["code"] == "code"
        assert not list(folder.rglob("*.pkl")) and "python_model" not in flavor
        code = folder / "code"
        assert (code / "deploy" / "pyfunc.py").is_file() and (code / "recsys" / "ranking.py").is_file()
        assert (folder / "code" / "recsys" / "inductive.py").is_file() == (name == "sage")
        pins = dict(line.split("==") for line in (folder / "requirements.txt").read_text().split())
        assert {"mlflow", "numpy", "pandas", "pyarrow"} | extra <= set(pins)
        assert all(pins[dist] == metadata.version(dist).split("+")[0] for dist in pins)
    assert pins["torch"] == "2.2.1"


def test_the_bundle_is_plain_data(registry, tmp_path):
    bundle = registry["bundle"]
    folder = bundle.save(tmp_path / "bundle")
    tensors = torch.load(folder / "tensors.pt", weights_only=True)  # would refuse anything but tensors
    assert set(tensors["state_dict"]) == set(bundle.state_dict)
    plain = json.loads((folder / "bundle.json").read_text())
    assert plain["model_cfg"]["family"] == "sage" and plain["user_encoder"]["spec"] == vars(bundle.user_encoder.spec)
    with np.load(folder / "graph.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["train"], bundle.data.train)
    again = Bundle.load(folder)
    (tmp_path / "bundle.pt").write_bytes(b"pickled")  # the old single-file format is refused, not unpickled
    with pytest.raises(ValueError, match="not read"):
        Bundle.load(tmp_path / "bundle.pt")
    assert again.user_encoder == bundle.user_encoder and again.item_encoder == bundle.item_encoder
    assert again.model_cfg == json.loads(json.dumps(bundle.model_cfg)) and again.use_social == bundle.use_social
    np.testing.assert_array_equal(again.data.user_ids, bundle.data.user_ids)
    torch.testing.assert_close(again.user_features, bundle.user_features)
    frame = newcomer(registry["data"])
    np.testing.assert_allclose(again.embed_new_users(frame, [frame["items"][0]], [frame["friends"][0]]),
                               bundle.embed_new_users(frame, [frame["items"][0]], [frame["friends"][0]]), rtol=1e-5)


ISOLATED = """
import importlib.util, json, sys
from importlib.metadata import packages_distributions
for name in ("deploy", "recsys", "flows", "validation"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable before the model is loaded"
import mlflow, mlflow.pyfunc, pandas as pd
asked = json.load(open("input.json"))
local = mlflow.artifacts.download_artifacts(asked["uri"])  # the registry's store: MLflow's own imports
before = set(sys.modules)  # MLflow's, optional ones included: the mlflow pin answers for them
model = mlflow.pyfunc.load_model(local)
out = model.predict(pd.DataFrame(asked["frame"]), params={"k": asked["k"]})
owners = packages_distributions()
imported = sorted({d for m in set(sys.modules) - before for d in owners.get(m.split(".")[0], [])})
json.dump({"recs": out.to_dict("list"), "imported": imported,
           "code": [sys.modules[m].__file__ for m in ("deploy.pyfunc", "recsys.ranking")]}, open("output.json", "w"))
"""


def load_in_isolation(tmp_path: Path, uri: str, tracking_uri: str, frame: pd.DataFrame, k: int) -> dict:
    """Load and predict in a fresh interpreter where graphrec is not importable: no site processing
    (so the editable install's path hook is off), the site-packages folder alone on the path, and an
    empty working folder."""
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (tmp_path / "input.json").write_text(json.dumps({"uri": uri, "frame": frame.to_dict("list"), "k": k}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(PYTHONPATH=site, PYTHONNOUSERSITE="1", MLFLOW_TRACKING_URI=tracking_uri, DGLBACKEND="pytorch")
    done = subprocess.run([sys.executable, "-S", "-c", ISOLATED], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "output.json").read_text())


def closure(pins: list[str]) -> set[str]:
    """The pinned distributions and everything they declare, transitively (pip's view)."""
    def norm(name):
        return name.lower().replace("_", "-")

    todo, seen = [norm(p.split("==")[0]) for p in pins], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            declared = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in declared:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(norm(req.name))
    return seen


@pytest.mark.parametrize("name", ["known", "sage"])
def test_load_model_where_graphrec_is_not_installed(registry, name, tmp_path):
    if name == "known":
        frame, k = pd.DataFrame({"user_id": USERS}), 2
    else:
        frame, k = newcomer(registry["data"]), 5
    got = load_in_isolation(tmp_path, registry[name], registry["uri"], frame, k)
    assert not any(path.startswith(str(REPO)) for path in got["code"])  # the version's own copies
    if name == "known":
        assert got["recs"]["user_id"] == [u for u in USERS for _ in range(2)]
        assert got["recs"]["item_id"] == [item for u in USERS for item, _ in TOP2[u]]
        np.testing.assert_allclose(got["recs"]["score"], [s for u in USERS for _, s in TOP2[u]], rtol=1e-6)
    else:
        here = load_registered("sage-serving", registry[name].rsplit("/", 1)[1]).predict(None, frame, {"k": k})
        assert got["recs"]["item_id"] == here["item_id"].tolist()
        np.testing.assert_allclose(got["recs"]["score"], here["score"], rtol=1e-5)
        assert not set(got["recs"]["item_id"]) & set(frame["items"][0])
    # Everything loading and predicting imported is pinned or a declared dependency of a pin: the
    # virtualenv that `mlflow models serve` builds from requirements.txt has it.
    pins = (model_dir(registry[name]) / "requirements.txt").read_text().split()
    missing = {d.lower().replace("_", "-") for d in got["imported"]} - closure(pins) - {"graphrec"}
    assert not missing, f"imported at predict time but not in the requirements: {sorted(missing)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_ask(tmp_path: Path, model_uri: str, tracking_uri: str, *options: str, env: dict | None = None) -> list:
    """Start `mlflow models serve` (its own process group, ended pass or fail), wait for /ping and
    POST the three users in the `dataframe_split` format with k=2; return the predictions."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, **(env or {})}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the server starts its workers by name from PATH
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, *options,
                               "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 1800  # a bound on a hang, not on speed: the machine may be busy
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=10) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "the scoring server never answered /ping"
            time.sleep(1)
        body = {"dataframe_split": {"columns": ["user_id"], "data": [[u] for u in USERS]}, "params": {"k": 2}}
        request = urllib.request.Request(f"{base}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.load(answer)["predictions"]
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, sig)
                server.wait(20)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def assert_top2(rows: list) -> None:
    assert [(r["user_id"], r["rank"], r["item_id"]) for r in rows] == [
        (u, rank, item) for u in USERS for rank, (item, _) in enumerate(TOP2[u], 1)]
    np.testing.assert_allclose([r["score"] for r in rows], [s for u in USERS for _, s in TOP2[u]], rtol=1e-6)


def test_mlflow_models_serve_answers_top_k(registry, tmp_path):
    assert_top2(serve_and_ask(tmp_path, registry["known"], registry["uri"], "--env-manager", "local"))


@pytest.mark.skipif(not os.environ.get("GRAPHREC_TEST_FRESH_ENV"), reason="builds a fresh virtualenv with MLflow in "
                    "it (minutes, needs a package index): set GRAPHREC_TEST_FRESH_ENV=1")
def test_mlflow_models_serve_in_a_fresh_virtualenv(registry, tmp_path):
    """MLflow's default environment manager: a new virtualenv (pyenv's Python, `virtualenv`) from the
    version's requirements.txt alone, where graphrec is not installed."""
    for tool in ("pyenv", "virtualenv"):
        if shutil.which(tool) is None:
            pytest.skip(f"MLflow's virtualenv manager needs {tool} on PATH")
    rows = serve_and_ask(tmp_path, registry["known"], registry["uri"], "--env-manager", "virtualenv",
                         env={"MLFLOW_ENV_ROOT": str(tmp_path / "envs")})
    assert_top2(rows)
