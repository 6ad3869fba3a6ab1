"""How a graphrec command stops: by Ctrl-C, by SIGTERM from `timeout`, systemd or Kubernetes, or
by its parent dying.

A terminal's Ctrl-C sends SIGINT to its whole foreground process group, and `timeout`, systemd and
container runtimes stop a group (or a cgroup) with SIGTERM. If the command's own Prefect server,
its Dask workers (and later Ray workers) sat in that group, they would die first, and the flow
would spend minutes failing to report to a server that is gone. So a command that writes the
store runs supervised (`supervise`):

- the process the user started stays in the terminal's group as a small supervisor (forked before
  torch, Prefect or MLflow load, so it holds no threads and little memory);
- the work runs in a child that leads a session of its own; every server and worker it starts is
  in that session, out of reach of the terminal's signals, and is tied to it (PR_SET_PDEATHSIG);
- the supervisor passes the first SIGINT / SIGTERM / SIGHUP to the child alone, which unwinds as
  from Ctrl-C: the flow run is marked crashed on a server that is still there, the MLflow run
  ends KILLED, nothing is promoted; the child raises for its first stop signal only, so one that
  reaches it again (sent to every process at once, and passed on) cannot cut that unwinding short;
- a second signal while the first is handled, or a child still unwinding after `grace` seconds,
  ends the child's whole group at once with SIGKILL (the store stays consistent: every write is
  atomic or ignored until it is complete);
- when the child has exited, whatever is left in its group is killed, so no server or worker
  outlives the command; the supervisor exits with the child's code (130 SIGINT, 143 SIGTERM).

The child dies with the supervisor (SIGTERM, then the same unwinding), so `kill -9` of the
supervisor stops the work too.
"""
from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds the child may take to unwind after the first stop signal before its group is killed.
GRACE_SECONDS = float(os.environ.get("GRAPHREC_STOP_GRACE", "60"))


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised where the command is, so that it unwinds like Ctrl-C; its text
    is the signal's name."""


_received: list[int] = []  # the stop signals received, in order


def _stop(signum, frame):
    _received.append(signum)
    if len(_received) > 1:  # already unwinding: raising again would cut its cleanup short (the MLflow
        return  # run's end); a signal sent to every process at once reaches this one twice (direct and
    # passed on by the supervisor), and the supervisor ends the group if the unwinding takes too long
    # Noise once the command is stopping: the interruption cancels whatever an event loop (Prefect's
    # runner) was awaiting, and asyncio logs each cancelled callback with its traceback; Optuna logs
    # the interrupted trial as failed, with its parameters.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """In the process doing the work: SIGINT raises KeyboardInterrupt (even where the parent left
    it ignored, as a shell does for background jobs), SIGTERM and SIGHUP raise `Terminated`."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _stop)


def flow(**options) -> Callable[[Callable], Any]:
    """`prefect.flow(**options)`, whose body keeps this module's SIGTERM handler in a graphrec command.

    Prefect's flow engine installs a SIGTERM handler of its own around the flow, which raises for
    every SIGTERM: the second one (sent to every process at once, it reaches the work directly and
    through the supervisor) would then cut the first one's unwinding short, leaving the MLflow run
    RUNNING. In a supervised command the body takes `_stop` back, and keeps it once a stop began
    (Prefect's crash report is part of the unwinding). A flow run by a Prefect runner (a served
    deployment) has no `_stop`: there Prefect's handler stays, with its cancellation through the runner."""
    from prefect import flow as prefect_flow

    def decorate(fn: Callable) -> Any:
        @functools.wraps(fn)
        def body(*args, **kwargs):
            ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _stop
            previous = signal.signal(signal.SIGTERM, _stop) if ours else None
            try:
                return fn(*args, **kwargs)
            finally:
                if previous is not None and not _received:
                    signal.signal(signal.SIGTERM, previous)
        body.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]  # Prefect validates against it
        return prefect_flow(**options)(body)
    return decorate


def stop_requested() -> bool:
    """Whether this process was told to stop. Prefect's engine can catch the interruption while it
    sets a task run up and report an error of its own instead ("Task run is not set"): the command
    still ends as stopped (130 / 143), and its MLflow run as KILLED."""
    return bool(_received)


def stopped_by() -> KeyboardInterrupt:
    """The interruption to raise for the first stop signal received."""
    first = _received[0] if _received else signal.SIGINT
    return KeyboardInterrupt() if first == signal.SIGINT else Terminated(signal.Signals(first).name)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """The kernel sends `sig` to this process when its parent ends, however it ends. Call in the
    child (for a subprocess: between fork and exec, as its preexec_fn)."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the line above: nobody is left to work for
        os._exit(1)


def exit_code(status: int) -> int:
    """A shell's exit code for a wait status: the process's own code, or 128 + the signal."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def supervise(work: Callable[[], int], command: str, grace: float = GRACE_SECONDS) -> int:
    """Run `work` in a child process leading its own session (see the module's text); returns
    its exit code. Only the child returns from `work`: it leaves through SystemExit."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.setsid()
            die_with_parent(signal.SIGTERM)
            stop_on_signals()
            code = work()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        raise SystemExit(code)
    return _watch(pid, command, grace)


def _watch(pid: int, command: str, grace: float) -> int:
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        if len(received) == 1:
            os.kill(pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
            signal.alarm(max(1, int(grace)))
        else:  # a second signal, or the grace is over: the whole group, at once
            _kill_group(pid)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    signal.signal(signal.SIGALRM, lambda s, f: _kill_group(pid))
    while True:
        try:
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: its group id stays ours
            break
        except ChildProcessError:
            break
    signal.alarm(0)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the ending is decided
    _kill_group(pid)  # whatever the child left: servers, workers
    _, status = os.waitpid(pid, 0)
    code = exit_code(status)
    if received and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        first = received[0]
        code = 130 if first == signal.SIGINT else 143
        why = "a second signal" if len(received) > 1 else f"it did not end within {grace:g} s"
        print(f"\ngraphrec {command}: stopped at once ({why}); the champion and CURRENT are as they were unless "
              "a line above says it was promoted (an unfinished MLflow run is marked KILLED by the next command)",
              file=sys.stderr)
    return code


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
