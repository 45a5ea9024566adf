"""Content-addressed stage cache (after DVC's run cache).

Key = SHA-256 of the sorted JSON of a stage's inputs and params. Per-image
entries (detections, embeddings, appearance vectors, poses, review thumbnails)
are packed into one SQLite database, `<root>/stage-pack.sqlite`
(idcluster.cache.pack): one transaction per entry, so a write is atomic and two
processes (or the review server's threads) share it safely. Entries larger than
PACK_MAX_BYTES (set-level arrays: a reduction or clustering of many faces) stay
one file each in two-character fan-out folders `<root>/<stage>/<ab>/<rest>.<ext>`,
written to a temp file and renamed into place. A corrupt entry, packed or file,
is a warning and a miss, never a crash.

Entries written by idcluster before the pack (one file each) are still read:
a hit moves the entry into the pack, so a cache in use converges to it and
entries nobody reads age out through `cache prune` as before.

One cache serves every run of the user (default: the user's cache folder), so a
new output folder, another input folder holding the same image bytes, or a
second process at the same time all share entries; concurrent writers of one
key both write the same bytes and the last one wins. A hit refreshes the
entry's last use (at most daily) so `idcluster cache prune` can drop the least
recently used entries first.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import array_codec
# TOUCH_AFTER_S: a hit refreshes an entry's last use when older than this (LRU order for prune at
# one small write per entry per day, not one per read); the same for packed and file entries.
from .pack import PACK_NAME, TOUCH_AFTER_S, Pack, PackUnavailable, open_pack

log = logging.getLogger(__name__)

# https://bford.info/cachedir/: backup tools skip the folder; `cache prune` refuses folders without it.
CACHEDIR_TAG = "CACHEDIR.TAG"
TAG_TEXT = "Signature: 8a477f597d28d172789f06886806bc55\n# This file marks an idcluster stage cache (idcluster cache info|prune).\n"
# Bigger entries stay files: a SQLite blob is copied whole through the WAL, and a few set-level
# results of 10^5+ faces (hundreds of MB) gain nothing from packing.
PACK_MAX_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """$IDCLUSTER_CACHE, else $XDG_CACHE_HOME/idcluster, else ~/.cache/idcluster."""
    if os.environ.get("IDCLUSTER_CACHE"):
        return Path(os.environ["IDCLUSTER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "idcluster"


def cache_key(*parts: Any) -> str:
    """Stable key for JSON-able parts (dict key order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class StageCache:
    """get_/put_ json, arrays and bytes by (stage, key); `pack_max_bytes=0` keeps a file per entry (the
    layout before the pack; benchmarks compare the two)."""

    def __init__(self, root: str | Path, pack_max_bytes: int = PACK_MAX_BYTES):
        self.root = Path(root).expanduser()
        self.pack_max_bytes = pack_max_bytes
        self._pack: Pack | None = None
        self._pack_failed = pack_max_bytes <= 0

    def path(self, stage: str, key: str, ext: str) -> Path:
        """Where a file entry lives (large entries, and every entry written before the pack)."""
        return self.root / stage / key[:2] / f"{key[2:]}.{ext}"

    # ---------------------------------------------------------------- the pack

    def _packed(self) -> Pack | None:
        if self._pack is None and not self._pack_failed:
            self._tag()
            self._pack = open_pack(self.root)
        return self._pack

    def _pack_down(self, err: OSError) -> None:
        # SQLite unusable here (read-only or lock-less file system, disk full, locked for a minute):
        # this process keeps going with a file per entry, which the pack reads as a fallback later.
        log.warning("stage cache %s: packed store unusable (%s); using a file per entry", self.root, err)
        self._pack, self._pack_failed = None, True

    def _pack_get(self, stage: str, key: str, ext: str) -> bytes | None:
        pack = self._packed()
        if pack is None:
            return None
        try:
            return pack.get(stage, key, ext)
        except PackUnavailable as e:
            self._pack_down(e)
            return None

    def _pack_put(self, stage: str, key: str, ext: str, data: bytes) -> bool:
        pack = self._packed() if len(data) <= self.pack_max_bytes else None
        if pack is None:
            return False
        try:
            pack.put(stage, key, ext, data)
            return True
        except PackUnavailable as e:
            self._pack_down(e)
            return False

    def _put(self, stage: str, key: str, ext: str, packed: bytes, as_file) -> None:
        """Into the pack when small enough, else a file (as_file() gives its bytes); never both stale."""
        if self._pack_put(stage, key, ext, packed):
            return
        self._write(self.path(stage, key, ext), as_file())
        pack = self._packed()
        if pack is not None:  # an older copy in the pack would shadow the file
            try:
                pack.delete(stage, key, ext)
            except PackUnavailable as e:
                self._pack_down(e)

    def _migrate(self, stage: str, key: str, ext: str, path: Path, packed: bytes) -> None:
        """An entry read from its file moves into the pack (then the file goes)."""
        if self._pack_put(stage, key, ext, packed):
            path.unlink(missing_ok=True)

    def _corrupt_packed(self, stage: str, key: str, ext: str, err: Exception) -> None:
        log.warning("corrupt cache entry %s/%s.%s in %s (%s): recomputing", stage, key, ext,
                    self.root / PACK_NAME, type(err).__name__)
        try:
            self._pack.delete(stage, key, ext)
        except PackUnavailable as e:
            self._pack_down(e)

    def flush(self) -> None:
        """Write pending last-use refreshes now (they are also written in batches and at exit)."""
        if self._pack is not None:
            self._pack.flush()

    # ---------------------------------------------------------------- files

    def _tag(self) -> None:
        tag = self.root / CACHEDIR_TAG
        if not tag.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                with open(tag, "x", encoding="ascii") as f:
                    f.write(TAG_TEXT)
            except FileExistsError:  # another process wrote it first
                pass

    def _write(self, path: Path, data: bytes) -> None:
        if not path.parent.is_dir():
            self._tag()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, path: Path) -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if time.time() - path.stat().st_mtime > TOUCH_AFTER_S:
                os.utime(path)
        except OSError:  # read-only cache, or pruned meanwhile: the data is still good
            pass
        return data

    def _corrupt(self, path: Path, err: Exception) -> None:
        log.warning("corrupt cache entry %s (%s): recomputing", path, type(err).__name__)
        path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- the API

    # Opaque bytes (review thumbnails): same atomic write, LRU touch and prune as the rest
    def get_bytes(self, stage: str, key: str, ext: str) -> bytes | None:
        data = self._pack_get(stage, key, ext)
        if data is not None:
            return data
        path = self.path(stage, key, ext)
        data = self._read(path)
        if data is not None and len(data) <= self.pack_max_bytes:
            self._migrate(stage, key, ext, path, data)
        return data

    def put_bytes(self, stage: str, key: str, ext: str, data: bytes) -> None:
        data = bytes(data)
        self._put(stage, key, ext, data, lambda: data)

    # JSON entries (detections, small records)
    def get_json(self, stage: str, key: str) -> Any | None:
        blob = self._pack_get(stage, key, "json")
        if blob is not None:
            try:
                return json.loads(blob)
            except ValueError as e:
                self._corrupt_packed(stage, key, "json", e)
                return None
        path = self.path(stage, key, "json")
        data = self._read(path)
        if data is None:
            return None
        try:
            value = json.loads(data)["value"]
        except (ValueError, KeyError, TypeError) as e:
            self._corrupt(path, e)
            return None
        packed = _json_bytes(value)
        if len(packed) <= self.pack_max_bytes:
            self._migrate(stage, key, "json", path, packed)
        return value

    def put_json(self, stage: str, key: str, value: Any) -> None:
        packed = _json_bytes(value)
        self._put(stage, key, "json", packed, lambda: json.dumps({"value": value}).encode("utf-8"))

    # Array entries (embeddings, reductions, cluster labels)
    def get_arrays(self, stage: str, key: str) -> dict[str, np.ndarray] | None:
        blob = self._pack_get(stage, key, "npz")
        if blob is not None:
            try:
                return array_codec.decode(blob)
            except ValueError as e:
                self._corrupt_packed(stage, key, "npz", e)
                return None
        path = self.path(stage, key, "npz")
        data = self._read(path)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:  # a bare .npy: TypeError
                arrays = {k: z[k] for k in z.files}
            if not all(isinstance(a, np.ndarray) for a in arrays.values()):
                raise ValueError("member is not an .npy array")  # NpzFile returns raw bytes
        except (ValueError, TypeError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            self._corrupt(path, e)
            return None
        packed = array_codec.encode(arrays)
        if len(packed) <= self.pack_max_bytes:
            self._migrate(stage, key, "npz", path, packed)
        return arrays

    def put_arrays(self, stage: str, key: str, **arrays: np.ndarray) -> None:
        packed = array_codec.encode(arrays)

        def npz() -> bytes:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            return buf.getvalue()

        self._put(stage, key, "npz", packed, npz)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")
