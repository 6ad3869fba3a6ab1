"""Faults injected for real, each with what must hold afterwards: CURRENT names a complete,
readable snapshot, no partial snapshot becomes current, no alias is half-moved.

- a refresh process killed with SIGKILL in the middle of writing;
- a write failure (the file-size limit makes the kernel refuse writes, as a full disk does);
- two refreshes at once, in two processes (one refuses or waits; none corrupts);
- the MLflow tracking server becomes unreachable while the flow registers / moves aliases.
(A corrupted snapshot file is in test_snapshot.py; a worse challenger in test_flow_e2e.py; a
version that does not exist in test_ops.py.)
"""
import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from deploy.snapshot import Snapshot, current_name, snapshots
from flows.cli import prepare_prefect
from recsys.config import load_config
from tests.conftest import TINY_NETWORK, Processes, wait_until

ROOT = Path(__file__).resolve().parents[1]

# A refresh in its own process: a first small snapshot ("quick"), or one written part by part that
# reports each part on stdout ("hold": it stops after part 3, holding the lock, until a file `go`
# appears; nothing depends on how fast the machine is).
WRITER = r"""
import os, sys, time, numpy as np, pandas as pd
from deploy.snapshot_writer import SnapshotWriter, write_snapshot
from recsys.config_ops import RefreshConfig
root, mode, version, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rng = np.random.default_rng(int(version))
n_users, n_items, dim = 4000, 300, 32
ids = np.array([f"u{i}" for i in range(n_users)])
items = np.array([f"i{i}" for i in range(n_items)])
if mode == "quick":
    write_snapshot(root, "m", version, ids, rng.normal(size=(n_users, dim)), items, rng.normal(size=(n_items, dim)),
                   pd.DataFrame({"user_id": ["u0"], "item_id": ["i0"]}), "fp", RefreshConfig(lock_timeout=timeout))
    print("committed", flush=True)
    sys.exit(0)
cfg = RefreshConfig(lock_timeout=timeout, chunk_rows=200)
with SnapshotWriter(root, "m", version, "fp", n_users, n_items, dim, cfg) as w:
    print("locked", flush=True)
    for k, a in enumerate(range(0, n_users, 200)):
        w.add("users", ids[a:a + 200], rng.normal(size=(min(200, n_users - a), dim)))
        print(f"part {k}", flush=True)
        if mode == "hold" and k == 3:  # half written, the lock held, until the test says go (bounded)
            deadline = time.monotonic() + 1800
            while not os.path.exists(os.path.join(root, "go")) and time.monotonic() < deadline:
                time.sleep(0.05)
    w.add("items", items, rng.normal(size=(n_items, dim)))
    w.commit()
print("committed", flush=True)
"""


BOUND = 1800  # seconds: a bound on a hang, far above what a loaded machine needs; not a deadline on speed


@pytest.fixture
def writer(processes):
    """Starts refresh processes (ended with their groups when the test ends, pass or fail)."""
    def start(root, mode, version, timeout=0.0, limit_bytes=None):
        def limit():
            if limit_bytes:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a signal
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        return processes.start([sys.executable, "-c", WRITER, str(root), mode, str(version), str(timeout)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    return start


def wait_for(proc, text):
    """Reads the writer's lines until one holds `text` (a line comes after each part it writes)."""
    for line in proc.stdout:
        if text in line:
            return
    proc.wait(BOUND)
    raise AssertionError(f"writer exited ({proc.returncode}) before '{text}': {proc.stderr.read()}")


def assert_serving(root, version):
    snap = Snapshot.open(root)
    assert snap.manifest["model_version"] == version and snap.fallback_from is None
    assert len(snap.recommend("u1", k=5)) == 5
    return snap


def test_refresh_killed_mid_write_leaves_current_and_is_cleaned_up_next_time(tmp_path, writer):
    assert writer(tmp_path, "quick", 1).wait(BOUND) == 0
    first = current_name(tmp_path)
    proc = writer(tmp_path, "hold", 2)
    wait_for(proc, "part 3")
    proc.send_signal(signal.SIGKILL)
    proc.wait(BOUND)
    assert current_name(tmp_path) == first
    assert_serving(tmp_path, "1")
    assert len(list(tmp_path.glob(".tmp-*"))) == 1  # the killed writer's half-written folder
    assert writer(tmp_path, "quick", 3).wait(BOUND) == 0  # the lock died with its holder
    assert not list(tmp_path.glob(".tmp-*"))
    assert_serving(tmp_path, "3")


def test_a_write_failure_never_becomes_current(tmp_path, writer):
    assert writer(tmp_path, "quick", 1).wait(BOUND) == 0
    first = current_name(tmp_path)
    proc = writer(tmp_path, "0", 2, limit_bytes=300_000)  # users.npy alone needs 512 kB
    out, err = proc.communicate(timeout=BOUND)
    assert proc.returncode != 0 and "File too large" in err
    assert current_name(tmp_path) == first
    assert not list(tmp_path.glob(".tmp-*"))
    assert [m["model_version"] for m in snapshots(tmp_path)] == ["1"]
    assert_serving(tmp_path, "1")


def test_two_refreshes_at_once_one_refuses_one_waits_none_corrupts(tmp_path, writer):
    assert writer(tmp_path, "quick", 1).wait(BOUND) == 0
    slow = writer(tmp_path, "hold", 2)
    wait_for(slow, "part 3")  # it holds the lock until `go`
    refused = writer(tmp_path, "quick", 3, timeout=0)
    waiting = writer(tmp_path, "quick", 4, timeout=BOUND)
    _, err = refused.communicate(timeout=BOUND)
    assert refused.returncode != 0 and "RefreshBusyError: another refresh (pid" in err
    (tmp_path / "go").touch()
    assert waiting.wait(BOUND) == 0 and slow.wait(BOUND) == 0
    # the waiting refresh committed after the slow one released the lock
    assert [m["model_version"] for m in snapshots(tmp_path)] == ["4", "2", "1"]
    assert_serving(tmp_path, "4")


class _Proxy(ThreadingHTTPServer):
    """Forwards HTTP to the MLflow server until a request matches `cut_at` ("METHOD path-part");
    from then on every connection is dropped unanswered, as when the tracking server goes away."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        self.upstream, self.cut_at, self.cut = upstream_port, None, False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                server = self.server
                method, part = (server.cut_at or " ").split(" ", 1)
                if server.cut_at and self.command == method and part in self.path:
                    server.cut = True
                if server.cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection("127.0.0.1", server.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        super().__init__(("127.0.0.1", 0), Handler)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """One real MLflow server for the module, reached through a proxy that can cut it off."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    servers = Processes()
    servers.start(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/health")
            return True
        except OSError:
            return False

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="20")
    try:
        wait_until(answers, "the MLflow server", every=0.5)
        yield port
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        servers.end_all()


@pytest.mark.parametrize("cut_at", ["POST /model-versions/create", "POST /registered-models/alias"])
def test_tracking_server_lost_while_registering_moves_no_alias(tmp_path, tracking_server, cut_at):
    from flows.retrain import retrain_flow

    proxy = _Proxy(tracking_server)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    direct = f"http://127.0.0.1:{tracking_server}"
    prepare_prefect(tmp_path)
    sets = [f"stores.root={tmp_path}", f"stores.tracking_uri=http://127.0.0.1:{proxy.server_address[1]}",
            f"stores.registered_model=cut-{cut_at.split('/')[-1]}", f"stores.experiment=cut-{cut_at.split('/')[-1]}",
            *TINY_NETWORK, "train.epochs=2"]
    cfg = load_config(None, sets)
    assert retrain_flow(cfg, return_state=True).result()["promoted"]
    snapshot = current_name(cfg.stores.resolved_snapshots())

    proxy.cut_at = cut_at
    state = retrain_flow(load_config(None, sets + ["train.seed=1"]), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as err:
        state.result()
    assert "MLflow" in str(err.value) and "unchanged" in str(err.value)
    assert proxy.cut
    client = MlflowClient(direct, registry_uri=direct)
    name = cfg.stores.registered_model
    assert {a: str(v) for a, v in client.get_registered_model(name).aliases.items()} == \
        {"champion": "1", "challenger": "1"}
    assert current_name(cfg.stores.resolved_snapshots()) == snapshot
    assert Snapshot.open(cfg.stores.resolved_snapshots()).manifest["model_version"] == "1"
    proxy.shutdown()
