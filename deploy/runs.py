"""The life of the MLflow runs graphrec starts: every run records the process that owns it, is
ended with the state its work reached (FINISHED, FAILED, KILLED), and a run whose process died
without ending it (SIGKILL, a power cut) is marked KILLED by the next graphrec process that
starts a run in the same experiment on the same machine."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Optional

from mlflow.tracking import MlflowClient

OWNER = "graphrec.owner"  # host:pid:start-time of the process that runs the work


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (tells a reused pid from the owner)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or '?'}"


def owner_alive(tag: str) -> Optional[bool]:
    """True / False for an owner on this machine; None when it ran elsewhere (cannot be told)."""
    try:
        host, pid, started = tag.rsplit(":", 2)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return _start_time(int(pid)) == started if started != "?" else os.path.exists(f"/proc/{pid}")


def end_run(run_id: str, status: str, note: Optional[str] = None) -> None:
    client = MlflowClient()
    if note:
        client.set_tag(run_id, "graphrec.ended", note[:500])
    client.set_terminated(run_id, status)


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this machine whose owner process is gone."""
    client = MlflowClient()
    closed = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tag = run.data.tags.get(OWNER)
        if tag and owner_alive(tag) is False:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            end_run(run.info.run_id, "KILLED", f"its process ({tag}) ended without ending the run; "
                                               f"marked KILLED at {stamp} by {owner()}")
            closed.append(run.info.run_id)
    return closed


@contextmanager
def ended_with_outcome(run_id: str, finish: bool = True, interrupted: Callable[[], bool] = lambda: False):
    """The run ends FAILED if the block raises, KILLED if it is interrupted (SIGTERM, Ctrl-C, or
    an error raised while `interrupted()` says the process was told to stop), and FINISHED after
    it when `finish` is true."""
    try:
        yield
    except Exception as exc:
        if interrupted():
            _end_if_possible(run_id, "KILLED", f"interrupted ({type(exc).__name__}: {exc})")
        else:
            _end_if_possible(run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        _end_if_possible(run_id, "KILLED", f"interrupted ({type(exc).__name__})")
        raise
    if finish:
        end_run(run_id, "FINISHED")


def _end_if_possible(run_id: str, status: str, note: str) -> None:
    """Ending a run while another error unwinds: a store that is gone (often that very error) must
    not hide it. The run stays RUNNING and the next start marks it KILLED."""
    try:
        end_run(run_id, status, note)
    except Exception:
        pass


def reopen_run(run_id: str) -> None:
    """A run that goes on in this process (a resumed study): RUNNING again, owned by this process."""
    client = MlflowClient()
    client.set_tag(run_id, OWNER, owner())
    client.update_run(run_id, status="RUNNING")
