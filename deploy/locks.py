"""The one exclusive file lock of deploy/: a `flock` on a file beside what it guards.

Why flock: the kernel drops it when its holder dies, however it dies, so a killed process never
leaves a stale lock for the next one to clean up. A lock either waits as long as it takes (for
work that is short and always finishes, such as creating a store's tables) or waits a bounded
time and then raises what the caller chose; a holder may leave a note in the file (who holds it,
since when) so that the one who gives up can say who was in the way.
"""
from __future__ import annotations

import errno
import fcntl
import time
from pathlib import Path
from typing import IO, Callable, Optional

POLL_SECONDS = 0.2


class FileLock:
    """`with FileLock(path): ...` holds an exclusive flock on `path` (created if missing).

    timeout: None waits without bound; a number of seconds waits that long, then raises
    `busy(note)`, where `note` is what the current holder wrote (empty if nothing).
    note: written into the file while held, and cleared on release."""

    def __init__(self, path: Path, timeout: Optional[float] = None, note: Optional[Callable[[], str]] = None,
                 busy: Optional[Callable[[str], BaseException]] = None):
        self.path, self.timeout, self.note, self.busy = Path(path), timeout, note, busy
        self.handle: IO[str]  # opened by __enter__

    def __enter__(self) -> "FileLock":
        self.handle = open(self.path, "a+")
        try:
            self._acquire()
        except BaseException:
            self.handle.close()
            raise
        if self.note is not None:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.write(self.note())
            self.handle.flush()
        return self

    def _acquire(self) -> None:
        if self.timeout is None:
            fcntl.flock(self.handle, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                self.handle.seek(0)
                holder = self.handle.read().strip()
                if self.busy is None:
                    raise TimeoutError(f"{self.path} is locked ({holder or 'by another process'}); "
                                       f"waited {self.timeout:g} s")
                raise self.busy(holder) from None
            time.sleep(POLL_SECONDS)

    def __exit__(self, *exc) -> None:
        if self.note is not None:
            self.handle.truncate(0)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
