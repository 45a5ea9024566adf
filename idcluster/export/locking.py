"""One writer per output folder: `cluster`, `export`, `review` and `add` take this lock first.

An OS file lock (filelock: fcntl/msvcrt) on `<output_dir>/.idcluster.lock`, so a
second process on the same folder stops at once with one line instead of
computing everything and then clobbering the first one's export; the OS drops
the lock when its holder exits or is killed, so no stale lock needs cleaning up.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import InputError

LOCK_NAME = ".idcluster.lock"


@contextmanager
def output_lock(output_dir: str | Path, what: str = "idcluster"):
    """Hold the output folder's lock for the block; InputError at once if another process holds it."""
    output_dir = Path(output_dir).expanduser()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output_dir {output_dir}: {e.strerror or e}") from None
    path = output_dir / LOCK_NAME
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise InputError(f"another idcluster process{holder} is using {output_dir} ({path}): "
                         "wait for it to finish or choose another output_dir") from None
    except OSError as e:
        raise InputError(f"cannot lock {path}: {e.strerror or e}") from None
    try:
        _write_holder(path, what)
        yield path
    finally:
        lock.release()


def _write_holder(path: Path, what: str) -> None:
    # Beside the lock (the lock file itself is held open by filelock): who holds it, for the error line.
    try:
        path.with_suffix(".pid").write_text(f"{os.getpid()} {what}\n")
    except OSError:
        pass


def _holder(path: Path) -> str:
    try:
        pid, _, what = path.with_suffix(".pid").read_text().strip().partition(" ")
        return f" ({what}, pid {pid})"
    except (OSError, ValueError):
        return ""
