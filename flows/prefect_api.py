"""The Prefect API a graphrec command talks to, and what its terminal shows.

Without PREFECT_API_URL, a command starts a Prefect server of its own for as long as it runs,
with its database under the store (`.graphrec/prefect/`, so the UI can show the history later).
The server is tied to the command's process: the kernel stops it when the command ends in any
way, SIGKILL included (PR_SET_PDEATHSIG), so no orphaned server is ever left behind. (Prefect's
own ephemeral server is a plain child process that outlives a killed parent.)

How a command stops (signals, a supervisor that keeps the server out of the terminal's process
group): flows/stopping.py.

Tracebacks of errors raised inside a flow go to a log file under `.graphrec/logs/`, not to the
terminal (unless --verbose): the command prints the one clear line itself.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from flows.prefect_server import STOP
from flows.stopping import die_with_parent

REPO = Path(__file__).resolve().parents[1]

STARTUP_BOUND = 600.0  # seconds: far above what a loaded machine needs; only so that nothing waits forever


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


_servers: dict[tuple[Path, bool], tuple[subprocess.Popen, str]] = {}


@contextlib.contextmanager
def prefect_api(home: Path, services: bool = False) -> Iterator[Optional[str]]:
    """PREFECT_API_URL for the block: the user's, if set (yields None), else that of a server of
    this process's own over `home` (yields its URL), started on first use and stopped when the
    process ends. `services`: Prefect's scheduler and other loops, needed only to run deployments
    on their schedules."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    url = _server_for(home.resolve(), services)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = url  # for the processes this command starts (Dask workers)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _server_for(home: Path, services: bool) -> str:
    found = _servers.get((home, services))
    if found and found[0].poll() is None:
        return found[1]
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    for _ in range(3):  # a port taken between choosing it and binding it: choose again
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_UI_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "flows.prefect_server", "--host", "127.0.0.1", "--port", str(port)]
        if not services:
            env.update(_recorder_only())
        with open(log_path, "ab") as log:
            server = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=_server_dies_with_parent)
        deadline = time.monotonic() + STARTUP_BOUND
        while server.poll() is None and not _healthy(url) and time.monotonic() < deadline:
            time.sleep(0.25)
        if server.poll() is None and _healthy(url):
            if not _servers:
                atexit.register(_stop_all)
            _servers[(home, services)] = (server, url)
            return url
        _stop(server)
        if time.monotonic() >= deadline:
            break
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    raise RuntimeError(f"the Prefect server for this command did not start (log: {log_path}): " + " / ".join(tail))


def _recorder_only() -> dict[str, str]:
    """Settings that keep one of the server's services: the task run recorder, which turns the
    engine's events into the task runs the flow run's history and graph show. The others (the
    scheduler, late runs, triggers, ...) serve deployments, which only `serve` runs."""
    from prefect.settings.models.server.services import ServerServicesSettings

    kept = {f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED": str(name == "task_run_recorder").lower()
            for name, field in ServerServicesSettings.model_fields.items()
            if "enabled" in getattr(field.annotation, "model_fields", {})}
    # written within a second, so a short command's last tasks are in before its server stops
    return {**kept, "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1"}


def _stop_all() -> None:
    while _servers:
        _stop(_servers.popitem()[1][0])


def _server_dies_with_parent() -> None:
    die_with_parent(signal.SIGKILL)  # it ignores the others (flows/prefect_server.py)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(STOP)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class _WithoutTraceback(logging.Formatter):
    """The wrapped formatter's line, without the exception's traceback (kept for the log file)."""

    def __init__(self, inner: Optional[logging.Formatter]):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _engine_errors(record: logging.LogRecord) -> bool:
    """False for the flow and task engines' error lines: they repeat, in Prefect's words, the
    exception that the command then states once, plainly (their INFO state lines stay)."""
    return not (record.levelno >= logging.ERROR and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def log_to_file(folder: Path, command: str, verbose: bool) -> Path:
    """Every log record of this command, tracebacks included, into folder/<command>-<time>.log;
    the terminal keeps its lines but loses the tracebacks and the engines' error lines unless
    `verbose`."""
    import prefect  # noqa: F401  (its logging set-up runs on import; ours goes on top of it)

    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{command}-{stamp}-{os.getpid()}.log"
    root = logging.getLogger()
    global _log_file
    if _log_file is not None:  # a second command in one process (tests, a notebook): one log file at a time
        root.removeHandler(_log_file)
        _log_file.close()
    _log_file = _QuietFileHandler(path, encoding="utf-8")
    _log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _log_file.setLevel(logging.DEBUG)
    for h in root.handlers:
        if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
            continue
        if isinstance(h.formatter, _WithoutTraceback):  # as an earlier command left it
            h.setFormatter(h.formatter.inner)
        h.removeFilter(_engine_errors)
        if not verbose:
            h.setFormatter(_WithoutTraceback(h.formatter))
            h.addFilter(_engine_errors)
    root.addHandler(_log_file)
    logging.getLogger("graphrec").setLevel(logging.INFO)  # graphrec.progress: long steps say they are under way
    return path


class _QuietFileHandler(logging.FileHandler):
    """The command's log file; a record it cannot write (a full disk) is dropped with one line on
    the terminal for the whole command, not a traceback per record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            print(f"graphrec: the log file {self.baseFilename} cannot be written ({sys.exc_info()[1]}); "
                  "its later lines are lost", file=sys.stderr)


_log_file: Optional[logging.FileHandler] = None
