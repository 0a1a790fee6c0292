"""Which store owns the data dir: an exclusive `flock` on `<db>.lock`.

Only the store that holds it releases dead job leases at open (and holds it
until close), so a `mirapi` command opened next to a running sidecar does
not take that sidecar's leases away; a store that did not get the lock
leaves dead leases to run out by themselves (`job_lease`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class OwnerLock:
    """An exclusive, non-blocking `flock` on a file: held by the data dir's sidecar.

    The kernel drops it when the process dies (SIGKILL included), so the
    next store to open after a crash gets it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """True when this store now holds the lock (or already did)."""
        if self._file is not None:
            return True
        fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
        file = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        except BaseException:
            file.close()
            raise
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the flock
            self._file = None
