"""One review per output folder: an exclusive lock file holding the owner's pid.

flock is released by the kernel when the process dies (kill -9 included), so a
stale file never blocks the next review; the pid is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import InputError

LOCK_NAME = ".review.lock"


class FolderLock:
    def __init__(self, folder: Path, what: str = "idcluster review"):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"{self.path.parent} is already open in {self.what} (pid {owner}); "
                             "close that one first") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock; the file stays (harmless, reused next time)
            self.fd = None
