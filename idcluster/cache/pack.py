"""The packed stage store: every small cache entry in one SQLite database (WAL mode).

Why SQLite and not LMDB shards: it ships with Python (no new dependency), the
stat index already uses it beside the cache, WAL lets any number of processes
and threads read while one writes (each write a short transaction: atomic, and
a killed writer leaves nothing half-written), and freed pages go back to the
file system with `incremental_vacuum` after a prune. LMDB needs a map size
fixed up front and never shrinks its file.

Layout: `entries` (key, kind) -> (last use, size, blob id) is a WITHOUT ROWID
table, the content-key index itself; `blobs` holds the bytes in an append-mostly
rowid table whose pages stay full. At 10^5 images (a detection JSON and a
128-d embedding each) the file is ~1.25x the bytes stored, against 5.7x for a
file per entry (4 KB blocks). `kinds` names each (stage, ext) once.

Last use (`used`, Unix seconds) is what `cache prune` orders by. A hit refreshes
it when it is older than a day; those refreshes are batched (one transaction per
few hundred hits, and at exit), so a read stays a read.

A damaged database file (not a database, malformed) is one warning: it is moved
aside to `<name>.damaged` and an empty one takes its place (`cache prune`
removes the damaged copy). A database that cannot be opened at all (a read-only
or network file system without locking) raises PackUnavailable, and the caller
falls back to a file per entry.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("idcluster.cache.store")  # the cache's warnings come from one logger

PACK_NAME = "stage-pack.sqlite"
DAMAGED_SUFFIX = ".damaged"
TOUCH_AFTER_S = 24 * 3600
_TOUCH_BATCH = 500
_BUSY_TIMEOUT_MS = 60_000  # another process's write transaction is milliseconds; a long wait means trouble
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kinds (id INTEGER PRIMARY KEY, stage TEXT NOT NULL, ext TEXT NOT NULL, UNIQUE (stage, ext))",
    "CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS entries (key BLOB NOT NULL, kind INTEGER NOT NULL, used INTEGER NOT NULL, "
    "size INTEGER NOT NULL, blob INTEGER NOT NULL, PRIMARY KEY (key, kind)) WITHOUT ROWID",
)


class PackUnavailable(OSError):
    """The database cannot be used here (cannot be created, opened or locked)."""


@dataclass
class PackedEntry:
    stage: str
    ext: str
    key: str
    size: int
    used: float


def _key_bytes(key: str) -> bytes:
    try:
        return bytes.fromhex(key)  # cache_key() hex digests: 32 bytes instead of 64
    except ValueError:
        return key.encode("utf-8")


def _key_text(raw: bytes) -> str:
    return raw.hex() if len(raw) == 32 else raw.decode("utf-8", "replace")


def _damaged(e: sqlite3.Error) -> bool:
    name = getattr(e, "sqlite_errorname", "")
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or (not name and type(e) is sqlite3.DatabaseError)


def _flush(state: dict) -> None:
    """Write pending last-use refreshes (also run at exit and when the Pack is collected)."""
    pending, db = state["touch"], state["db"]
    if not pending or db is None or state["pid"] != os.getpid():
        return
    batch, state["touch"] = pending, []
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("UPDATE entries SET used = ? WHERE key = ? AND kind = ?", batch)
        db.execute("COMMIT")
    except sqlite3.Error as e:  # a later refresh will do; LRU order is a hint, never data
        log.debug("could not refresh last use of %d cache entries: %s", len(batch), e)
        if db.in_transaction:
            db.execute("ROLLBACK")


def _close(state: dict) -> None:
    with state["lock"]:
        _flush(state)
        if state["db"] is not None and state["pid"] == os.getpid():
            state["db"].close()
        state["db"] = None


class Pack:
    """One database under `root`; safe to share between threads (one connection, one lock)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / PACK_NAME
        # Everything the exit/collect finaliser needs lives in `state`, so it does not keep the Pack alive.
        self._state: dict = {"db": None, "pid": None, "touch": [], "lock": threading.RLock()}
        self._kinds: dict[tuple[str, str], int] = {}
        self._inode: int | None = None
        weakref.finalize(self, _close, self._state)

    # ---------------------------------------------------------------- connection

    def _db(self) -> sqlite3.Connection:
        s = self._state
        if s["db"] is not None and s["pid"] == os.getpid():
            return s["db"]
        # A connection never crosses a fork: the child opens its own (closing the parent's would drop its locks).
        s["db"], s["touch"] = None, []
        self._kinds = {}
        try:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise PackUnavailable(f"cannot open {self.path}: {e}") from None
        try:
            db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect only before the first table
                if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                    raise PackUnavailable(f"{self.path}: this file system does not support SQLite's WAL mode")
            db.execute("PRAGMA synchronous = NORMAL")  # atomic and consistent; a power cut may drop the last entries
            db.execute("PRAGMA journal_size_limit = 67108864")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            db.close()
            if _damaged(e):
                raise
            raise PackUnavailable(f"cannot use {self.path}: {e}") from None
        except BaseException:
            db.close()
            raise
        try:
            self._inode = os.stat(self.path).st_ino
        except OSError:
            self._inode = None
        s["db"], s["pid"] = db, os.getpid()
        return db

    def _quarantine(self, e: sqlite3.Error) -> None:
        """Move a damaged database aside (once, even with several processes) and start afresh."""
        s = self._state
        if s["db"] is not None and s["pid"] == os.getpid():
            try:
                s["db"].close()
            except sqlite3.Error:
                pass
        s["db"], s["touch"] = None, []
        try:
            same = self._inode is None or os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False  # someone else moved it already
        if same:
            log.warning("stage cache database %s is damaged (%s): moved to %s%s; recomputing what it held",
                        self.path, e, PACK_NAME, DAMAGED_SUFFIX)
            try:
                os.replace(self.path, self.path.with_name(PACK_NAME + DAMAGED_SUFFIX))
                for side in ("-wal", "-shm"):
                    Path(f"{self.path}{side}").unlink(missing_ok=True)
            except OSError as err:
                raise PackUnavailable(f"cannot move damaged {self.path} aside: {err}") from None
        self._inode = None

    def _run(self, fn):
        """fn(db) under the lock; a damaged database is quarantined and fn retried once on a fresh one."""
        with self._state["lock"]:
            for attempt in (0, 1):
                try:
                    return fn(self._db())
                except sqlite3.Error as e:
                    self._kinds = {}  # a rolled-back transaction may have named a kind that no longer exists
                    db = self._state["db"]
                    if db is not None and db.in_transaction:
                        try:
                            db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    if not _damaged(e) or attempt:
                        if isinstance(e, sqlite3.OperationalError) or _damaged(e):
                            raise PackUnavailable(f"{self.path}: {e}") from None
                        raise
                    self._quarantine(e)

    def _kind(self, db: sqlite3.Connection, stage: str, ext: str, create: bool) -> int | None:
        k = self._kinds.get((stage, ext))
        if k is None:
            row = db.execute("SELECT id FROM kinds WHERE stage = ? AND ext = ?", (stage, ext)).fetchone()
            if row is None and create:
                db.execute("INSERT OR IGNORE INTO kinds (stage, ext) VALUES (?, ?)", (stage, ext))
                row = db.execute("SELECT id FROM kinds WHERE stage = ? AND ext = ?", (stage, ext)).fetchone()
            if row is None:
                return None
            k = self._kinds[stage, ext] = row[0]
        return k

    # ---------------------------------------------------------------- entries

    def get(self, stage: str, key: str, ext: str) -> bytes | None:
        raw = _key_bytes(key)

        def read(db):
            kind = self._kind(db, stage, ext, create=False)
            if kind is None:
                return None
            row = db.execute("SELECT e.used, b.data FROM entries e JOIN blobs b ON b.id = e.blob "
                             "WHERE e.key = ? AND e.kind = ?", (raw, kind)).fetchone()
            if row is None:
                return None
            now = int(time.time())
            if now - row[0] > TOUCH_AFTER_S:
                self._state["touch"].append((now, raw, kind))
                if len(self._state["touch"]) >= _TOUCH_BATCH:
                    _flush(self._state)
            return row[1]

        return self._run(read)

    def put(self, stage: str, key: str, ext: str, data: bytes) -> None:
        """Insert or replace one entry in one transaction: readers see the old bytes or the new, nothing between."""
        raw = _key_bytes(key)

        def write(db):
            db.execute("BEGIN IMMEDIATE")
            kind = self._kind(db, stage, ext, create=True)
            old = db.execute("SELECT blob FROM entries WHERE key = ? AND kind = ?", (raw, kind)).fetchone()
            if old is not None:
                db.execute("DELETE FROM blobs WHERE id = ?", old)
            blob = db.execute("INSERT INTO blobs (data) VALUES (?)", (data,)).lastrowid
            db.execute("INSERT OR REPLACE INTO entries (key, kind, used, size, blob) VALUES (?, ?, ?, ?, ?)",
                       (raw, kind, int(time.time()), len(data), blob))
            db.execute("COMMIT")

        self._run(write)

    def delete(self, stage: str, key: str, ext: str) -> bool:
        raw = _key_bytes(key)

        def remove(db):
            kind = self._kind(db, stage, ext, create=False)
            if kind is None:
                return False
            db.execute("BEGIN IMMEDIATE")
            old = db.execute("SELECT blob FROM entries WHERE key = ? AND kind = ?", (raw, kind)).fetchone()
            if old is not None:
                db.execute("DELETE FROM blobs WHERE id = ?", old)
                db.execute("DELETE FROM entries WHERE key = ? AND kind = ?", (raw, kind))
            db.execute("COMMIT")
            return old is not None

        return self._run(remove)

    def flush(self) -> None:
        with self._state["lock"]:
            _flush(self._state)

    def close(self) -> None:
        _close(self._state)

    # ---------------------------------------------------------------- maintenance (cache info / prune)

    def stats(self) -> dict[str, dict]:
        """Per stage: entries, bytes, oldest and newest use; one scan of the key table."""
        def scan(db):
            rows = db.execute("SELECT k.stage, count(*), sum(e.size), min(e.used), max(e.used) FROM entries e "
                              "JOIN kinds k ON k.id = e.kind GROUP BY k.stage").fetchall()
            return {stage: {"entries": n, "bytes": b, "oldest_use": float(lo), "newest_use": float(hi)}
                    for stage, n, b, lo, hi in rows}

        self.flush()
        return self._run(scan)

    def entries(self) -> list[PackedEntry]:
        def scan(db):
            rows = db.execute("SELECT k.stage, k.ext, e.key, e.size, e.used FROM entries e JOIN kinds k ON k.id = e.kind")
            return [PackedEntry(stage, ext, _key_text(key), size, float(used)) for stage, ext, key, size, used in rows]

        self.flush()
        return self._run(scan)

    def remove(self, entries: list[PackedEntry]) -> int:
        """Drop these entries unless used since they were listed; give the freed pages back. Returns how many went."""
        def drop(db):
            removed = 0
            kinds = {(s, x): k for k, s, x in db.execute("SELECT id, stage, ext FROM kinds")}
            for start in range(0, len(entries), 1000):
                db.execute("BEGIN IMMEDIATE")
                for e in entries[start:start + 1000]:
                    args = (_key_bytes(e.key), kinds.get((e.stage, e.ext)), int(e.used))
                    old = db.execute("SELECT blob FROM entries WHERE key = ? AND kind = ? AND used <= ?", args).fetchone()
                    if old is not None:
                        db.execute("DELETE FROM blobs WHERE id = ?", old)
                        db.execute("DELETE FROM entries WHERE key = ? AND kind = ?", args[:2])
                        removed += 1
                db.execute("COMMIT")
            # executescript steps a statement to its end; execute() would free one page per call
            db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
            return removed

        self.flush()
        return self._run(drop)

    def disk_bytes(self) -> int:
        total = 0
        for name in (PACK_NAME, PACK_NAME + "-wal", PACK_NAME + "-shm"):
            try:
                total += (self.root / name).stat().st_size
            except FileNotFoundError:
                pass
        return total


_OPEN: "weakref.WeakValueDictionary[str, Pack]" = weakref.WeakValueDictionary()
_OPEN_LOCK = threading.Lock()


def open_pack(root: Path) -> Pack:
    """The process's Pack for `root` (one connection shared by every StageCache on that folder)."""
    name = os.path.abspath(root)
    with _OPEN_LOCK:
        pack = _OPEN.get(name)
        if pack is None:
            pack = _OPEN[name] = Pack(Path(name))
        return pack
