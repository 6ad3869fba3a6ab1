"""`graphrec serve` against a real Prefect server: both deployments are created with the cron
schedules and parameters of the config, and a run of the retrain deployment is picked up and
executed by the serving process (which writes the first snapshot)."""
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_NETWORK, descendants, exited, wait_until

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_NETWORK, "train.epochs=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str):
    def attempt():
        try:
            return check()
        except Exception:  # not up yet
            return None
    return wait_until(attempt, what, every=1)


@pytest.fixture
def prefect_server(tmp_path, processes):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-server"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # serve's runner asks for scheduled runs each second (default 10)
    env.pop("PREFECT_API_KEY", None)
    processes.start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = env["PREFECT_API_URL"]
    _wait(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, "the Prefect server")
    yield url, env


def test_serve_creates_scheduled_deployments_and_runs_them(tmp_path, prefect_server, processes):
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
    serving = processes.start(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with get_client(sync_client=True) as client:
            retrain = _wait(lambda: client.read_deployment_by_name("graphrec-retrain/graphrec-retrain"),
                            "the retrain deployment")  # serve creates them one after the other
            refresh = _wait(lambda: client.read_deployment_by_name("graphrec-refresh/graphrec-refresh"),
                            "the refresh deployment")
            assert [(s.schedule.cron, s.schedule.timezone) for s in retrain.schedules] == \
                [("30 2 * * 1", "Europe/Paris")]
            assert [s.schedule.cron for s in refresh.schedules] == ["*/15 * * * *"]
            assert retrain.parameters["config"]["train"]["epochs"] == 2
            run = run_deployment("graphrec-retrain/graphrec-retrain", timeout=0)  # scheduled now; we wait below
            state = _wait(lambda: (s := client.read_flow_run(run.id).state) and s.is_final() and s,
                          "the retrain run to finish")
            assert state.is_completed(), state
    manifest = read_manifest(store / "snapshots")
    assert manifest["model_version"] == "1"
    below = [pid for pid, _ in descendants(serving.pid)]
    os.killpg(serving.pid, signal.SIGINT)  # Ctrl-C in its terminal: the whole process group
    _, err = serving.communicate(timeout=600)
    assert serving.returncode == 130 and "graphrec serve: interrupted" in err and "Traceback" not in err
    wait_until(lambda: all(exited(pid) for pid in below), "the serving process's work to end")
