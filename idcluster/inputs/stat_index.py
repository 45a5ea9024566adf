"""Content hashes of unchanged files without re-reading them (as DVC's state database).

A SQLite table maps (path, size, mtime_ns, inode) -> sha256. A file whose stat
matches its row is not re-hashed; any change of size, mtime or inode (an edit,
a replacement, a copy under the old name) re-hashes it. The index lives beside
the stage cache; WAL mode lets several runs read and write it at once. A
broken index is one warning and a run that hashes everything, never a crash.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_NAME = "stat-index.sqlite"
_SCHEMA = "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT)"


class StatIndex:
    """Use as a context manager; `lookup` before hashing, `record` after."""

    def __init__(self, cache_root: str | Path | None):
        self.path = Path(cache_root).expanduser() / INDEX_NAME if cache_root else None
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple] = []
        self.hits = 0

    def __enter__(self) -> "StatIndex":
        if self.path is None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            log.warning("stat index %s unusable (%s): hashing every file", self.path, e)
            self._db = None
        return self

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT size, mtime_ns, inode, sha256 FROM files WHERE path = ?", (path,)).fetchone()
        except sqlite3.Error as e:
            self._broken(e)
            return None
        if row and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
            self.hits += 1
            return row[3]
        return None

    def record(self, path: str, st: os.stat_result, sha256: str) -> None:
        if self._db is not None:
            self._pending.append((path, st.st_size, st.st_mtime_ns, st.st_ino, sha256))

    def _broken(self, e: Exception) -> None:
        log.warning("stat index %s unusable (%s): hashing every file", self.path, e)
        if self._db is not None:
            self._db.close()
        self._db = None

    def __exit__(self, *exc) -> None:
        if self._db is None:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", self._pending)
        except sqlite3.Error as e:
            log.warning("could not update stat index %s (%s): next run re-hashes these files", self.path, e)
        finally:
            self._db.close()
            self._db = None
