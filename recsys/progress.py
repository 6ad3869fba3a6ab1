"""Lines that say a long step without a progress bar of its own is still under way: after
`SLOW_SECONDS` the step is named, then again every `SLOW_SECONDS` while it runs, and its end is
said with its time. A step that ends sooner says nothing. Lines go to the `graphrec.progress`
logger (INFO), which the command shows on the terminal and keeps in its log file."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("graphrec.progress")
SLOW_SECONDS = 10.0


@contextmanager
def announced(what: str, every: float = SLOW_SECONDS) -> Iterator[None]:
    """Runs the body, saying `what` is under way if it takes longer than `every` seconds."""
    started = time.monotonic()
    done = threading.Event()
    said = []

    def watch() -> None:
        while not done.wait(every):
            said.append(True)
            log.info("%s: still working (%.0f s)", what, time.monotonic() - started)

    watcher = threading.Thread(target=watch, name="graphrec-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        if said:
            log.info("%s: done in %.0f s", what, time.monotonic() - started)
