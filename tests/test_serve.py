"""`graphrec serve` against a real Prefect server: both deployments are created with the cron
schedules and parameters of the config, and a run of the retrain deployment is picked up and
executed by the serving process (which writes the first snapshot)."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.conftest import TINY_NETWORK

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_NETWORK, "train.epochs=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:  # not up yet
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def prefect_server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = env["PREFECT_API_URL"]
    _wait(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 120, "the Prefect server")
    yield url, env
    server.terminate()
    server.wait(30)


def test_serve_creates_scheduled_deployments_and_runs_them(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deploy.snapshot import read_manifest

    url, env = prefect_server
    store = tmp_path / "store"
    argv = [sys.executable, "-m", "flows.cli", "serve", "--set", f"stores.root={store}",
            "--set", "schedule.retrain_cron=30 2 * * 1", "--set", "schedule.refresh_cron=*/15 * * * *",
            "--set", "schedule.timezone=Europe/Paris"]
    for item in TINY:
        argv += ["--set", item]
    serving = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            with get_client(sync_client=True) as client:
                retrain = _wait(lambda: client.read_deployment_by_name("graphrec-retrain/graphrec-retrain"), 120,
                                "the retrain deployment")  # serve creates them one after the other
                refresh = _wait(lambda: client.read_deployment_by_name("graphrec-refresh/graphrec-refresh"), 60,
                                "the refresh deployment")
            assert [(s.schedule.cron, s.schedule.timezone) for s in retrain.schedules] == [("30 2 * * 1", "Europe/Paris")]
            assert [s.schedule.cron for s in refresh.schedules] == ["*/15 * * * *"]
            assert retrain.parameters["config"]["train"]["epochs"] == 2
            run = run_deployment("graphrec-retrain/graphrec-retrain", timeout=300)
            assert run.state.is_completed(), run.state
        manifest = read_manifest(store / "snapshots")
        assert manifest["model_version"] == "1"
    finally:
        serving.terminate()
        try:
            serving.wait(30)
        except subprocess.TimeoutExpired:
            serving.kill()
