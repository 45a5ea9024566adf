"""Content-addressed stage cache (after DVC's run cache).

Key = SHA-256 of the sorted JSON of a stage's inputs and params. Entries live in
two-character fan-out folders `<root>/<stage>/<ab>/<rest>.<ext>`, are written to
a temp file and renamed into place (atomic on POSIX and Windows), and a
corrupt entry is a warning and a miss, never a crash.

One cache serves every run of the user (default: the user's cache folder), so a
new output folder, another input folder holding the same image bytes, or a
second process at the same time all share entries; concurrent writers of one
key both write the same bytes and the last rename wins. A hit refreshes the
entry's mtime (at most daily) so `idcluster cache prune` can drop the least
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

log = logging.getLogger(__name__)

# https://bford.info/cachedir/: backup tools skip the folder; `cache prune` refuses folders without it.
CACHEDIR_TAG = "CACHEDIR.TAG"
TAG_TEXT = "Signature: 8a477f597d28d172789f06886806bc55\n# This file marks an idcluster stage cache (idcluster cache info|prune).\n"
# A hit refreshes an entry's mtime when it is older than this: LRU order for prune at
# one small metadata write per entry per day, not one per read.
TOUCH_AFTER_S = 24 * 3600


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
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str, ext: str) -> Path:
        return self.root / stage / key[:2] / f"{key[2:]}.{ext}"

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

    # Opaque bytes (review thumbnails): same atomic write, LRU touch and prune as the rest
    def get_bytes(self, stage: str, key: str, ext: str) -> bytes | None:
        return self._read(self.path(stage, key, ext))

    def put_bytes(self, stage: str, key: str, ext: str, data: bytes) -> None:
        self._write(self.path(stage, key, ext), data)

    # JSON entries (detections, small records)
    def get_json(self, stage: str, key: str) -> Any | None:
        path = self.path(stage, key, "json")
        data = self._read(path)
        if data is None:
            return None
        try:
            return json.loads(data)["value"]
        except (ValueError, KeyError, TypeError) as e:
            self._corrupt(path, e)
            return None

    def put_json(self, stage: str, key: str, value: Any) -> None:
        self._write(self.path(stage, key, "json"), json.dumps({"value": value}).encode("utf-8"))

    # Array entries (embeddings, reductions, cluster labels)
    def get_arrays(self, stage: str, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(stage, key, "npz")
        data = self._read(path)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:  # a bare .npy: TypeError
                arrays = {k: z[k] for k in z.files}
            if not all(isinstance(a, np.ndarray) for a in arrays.values()):
                raise ValueError("member is not an .npy array")  # NpzFile returns raw bytes
            return arrays
        except (ValueError, TypeError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            self._corrupt(path, e)
            return None

    def put_arrays(self, stage: str, key: str, **arrays: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self._write(self.path(stage, key, "npz"), buf.getvalue())
