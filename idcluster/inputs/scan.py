"""Walk the input folder into ImageRecords with content hashes."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ..errors import InputError
from ..records import UNREADABLE, ImageRecord
from .stat_index import StatIndex

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def scan_folder(input_dir: str | Path, exclude: list[str | Path] = (), index: StatIndex | None = None) -> list[ImageRecord]:
    """One record per regular, non-hidden file under input_dir, sorted by relative path.

    Non-image files are kept (they become `unreadable` rows at decode time);
    `exclude` holds folders to skip, e.g. an output or cache dir placed inside
    the input. With a stat `index` (an open StatIndex), unchanged files are not re-hashed.
    """
    root = Path(input_dir).expanduser()
    if not root.exists():
        raise InputError(f"input_dir does not exist: {root}")
    if not root.is_dir():
        raise InputError(f"input_dir is not a folder: {root}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"input_dir is not readable: {root}")
    root = root.resolve()
    skip = {Path(p).expanduser().resolve() for p in exclude}

    def unreadable(err: OSError) -> None:
        log.warning("cannot read folder %s (%s): its files are skipped", err.filename, err.strerror)

    records: list[ImageRecord] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in skip)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            rec = ImageRecord(path=str(path), rel_path=rel, size=0)
            try:
                st = path.stat()  # before hashing: a file changed meanwhile no longer matches its row
                rec.size = st.st_size
                rec.sha256 = index.lookup(str(path), st) if index is not None else None
                if rec.sha256 is None:
                    rec.sha256 = sha256_file(path)
                    if index is not None:
                        index.record(str(path), st, rec.sha256)
            except OSError as e:
                rec.reason, rec.detail = UNREADABLE, f"{type(e).__name__}: {e.strerror or e}"
            records.append(rec)
    if not records:
        raise InputError(f"input_dir contains no files: {root}")
    records.sort(key=lambda r: r.rel_path)
    return records
