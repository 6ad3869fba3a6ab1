"""The Prefect server a graphrec command starts for itself (flows/prefect_api.py), run so that
only that command stops it.

A signal meant for a process group or a whole cgroup (Ctrl-C, `timeout`, systemd's default
control-group kill, a container runtime) must not take the server down while the command still
reports its flow's end to it: the flow would otherwise spend minutes retrying against a server
that is gone. So SIGINT, SIGTERM and SIGHUP are ignored here; uvicorn's graceful shutdown answers
SIGUSR1 instead, which the command sends, and the kernel kills the server outright when the
command dies (PR_SET_PDEATHSIG with SIGKILL). Otherwise this is `prefect server start ARGS`.
"""
from __future__ import annotations

import runpy
import signal
import sys

STOP = signal.SIGUSR1


def main(argv: list[str]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, STOP):
        signal.signal(sig, signal.SIG_IGN)  # STOP too, until uvicorn serves: uvicorn restores it on the way out
    import uvicorn.server

    # the signals uvicorn turns into a graceful shutdown (its own annotation names the two it ships with)
    uvicorn.server.HANDLED_SIGNALS = (STOP,)  # type: ignore[assignment]
    sys.argv = ["prefect", "server", "start", *argv]
    runpy.run_module("prefect", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
