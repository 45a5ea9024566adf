"""`idcluster cache info|prune`: what the stage cache holds, and dropping old entries.

Prune only ever removes cache entries inside a folder marked by the cache's
CACHEDIR.TAG: rows of the packed store (`stage-pack.sqlite`, whose freed pages
go back to the file system), file entries `<stage>/<ab>/<62 hex>.(json|npz|jpg)`
(large entries, and every entry of idcluster before the pack), joblib results
(a folder holding `output.pkl`, e.g. HDBSCAN's cached trees), temp files left
by killed writers and a damaged database moved aside. Least recently used (last
use, refreshed on hits at most daily; a file's mtime) goes first.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .pack import DAMAGED_SUFFIX, PACK_NAME, PackedEntry, PackUnavailable, open_pack
from .store import CACHEDIR_TAG
from ..errors import InputError

_ENTRY = re.compile(r"^[0-9a-f]{62}\.(json|npz|jpg)$")  # jpg: review thumbnails
_FANOUT = re.compile(r"^[0-9a-f]{2}$")
_TEMP_MAX_AGE_S = 24 * 3600  # a temp file this old belongs to no live writer
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_PACK_FILES = (PACK_NAME, PACK_NAME + "-wal", PACK_NAME + "-shm")


@dataclass
class Entry:
    path: Path  # a file, a joblib result folder, or the pack database holding `packed`
    stage: str
    size: int
    mtime: float  # last use
    packed: PackedEntry | None = None


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text or "")
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"cannot read size {text!r}: use e.g. 500MB, 5GB, 2GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_age(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw])\s*", text or "")
    if not m:
        raise InputError(f"cannot read age {text!r}: use e.g. 30d, 12h, 2w")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _size_mtime(path: Path) -> tuple[int, float]:
    st = path.stat()
    return st.st_size, st.st_mtime


def packed_entries(root: Path) -> list[Entry]:
    """The rows of root's packed store (none when it has none; never creates one)."""
    if not (root / PACK_NAME).is_file():
        return []
    pack = open_pack(root)
    try:
        return [Entry(pack.path, e.stage, e.size, e.used, e) for e in pack.entries()]
    except PackUnavailable as e:
        raise InputError(f"cannot read the packed stage cache: {e}") from None


def entries(root: Path) -> tuple[list[Entry], list[Path]]:
    """Every cache entry under root (packed and files), and stale files (temp files, a damaged database)."""
    found: list[Entry] = packed_entries(root)
    stale: list[Path] = [p for p in [root / (PACK_NAME + DAMAGED_SUFFIX)] if p.is_file()]
    now = time.time()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root).parts
        if "output.pkl" in filenames:  # a joblib result: one entry, its files together
            files = [here / f for f in filenames]
            sizes = [_size_mtime(f) for f in files if f.is_file()]
            found.append(Entry(here, rel[0] if rel else "", sum(s for s, _ in sizes), max(m for _, m in sizes)))
            dirnames[:] = []
            continue
        for name in filenames:
            path = here / name
            if name.startswith(".tmp-"):
                try:
                    if now - path.stat().st_mtime > _TEMP_MAX_AGE_S:
                        stale.append(path)
                except FileNotFoundError:
                    pass
            elif len(rel) == 2 and _FANOUT.match(rel[1]) and _ENTRY.match(name):
                try:
                    size, mtime = _size_mtime(path)
                except FileNotFoundError:  # pruned or replaced by another process meanwhile
                    continue
                found.append(Entry(path, rel[0], size, mtime))
    return found, stale


def _check_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"no cache at {root} (nothing has been cached there yet)")
    if not (root / CACHEDIR_TAG).is_file():
        raise InputError(f"{root} is not an idcluster cache (no {CACHEDIR_TAG}): refusing to touch it")
    return root


def info(root: Path) -> dict:
    """Entries and bytes per stage (plus other files such as the stat index, and the pack's size on disk)."""
    root = _check_root(root)
    found, stale = entries(root)
    stages: dict[str, dict] = {}
    for e in found:
        s = stages.setdefault(e.stage, {"entries": 0, "bytes": 0, "oldest_use": e.mtime, "newest_use": e.mtime})
        s["entries"] += 1
        s["bytes"] += e.size
        s["oldest_use"] = min(s["oldest_use"], e.mtime)
        s["newest_use"] = max(s["newest_use"], e.mtime)
    other = [p for p in root.iterdir() if p.is_file() and p.name not in (CACHEDIR_TAG, *_PACK_FILES)]
    pack_files = [root / n for n in _PACK_FILES if (root / n).is_file()]
    return {
        "root": str(root),
        "stages": dict(sorted(stages.items())),
        "entries": len(found),
        "bytes": sum(e.size for e in found),
        "other_files": {p.name: p.stat().st_size for p in other},
        "stale_temp_files": len(stale),
        "pack": {"file": PACK_NAME, "entries": sum(e.packed is not None for e in found),
                 "disk_bytes": sum(p.stat().st_size for p in pack_files)} if pack_files else None,
    }


def prune(root: Path, older_than_s: float | None = None, max_bytes: int | None = None, dry_run: bool = False) -> dict:
    """Remove entries unused for older_than_s, then least recently used ones until the
    cache is at most max_bytes. Returns what was (or would be) removed."""
    if older_than_s is None and max_bytes is None:
        raise InputError("say what to prune: --older-than 30d and/or --max-size 5GB")
    root = _check_root(root)
    found, stale = entries(root)
    found.sort(key=lambda e: e.mtime)  # least recently used first
    now = time.time()
    expired = [older_than_s is not None and now - e.mtime > older_than_s for e in found]
    drop = [e for e, x in zip(found, expired) if x]
    keep = [e for e, x in zip(found, expired) if not x]
    total = sum(e.size for e in keep)
    if max_bytes is not None:
        n = 0
        while n < len(keep) and total > max_bytes:
            total -= keep[n].size
            n += 1
        drop, keep = drop + keep[:n], keep[n:]
    freed = sum(e.size for e in drop)
    if not dry_run:
        packed = [e.packed for e in drop if e.packed is not None]
        if packed:  # one pass over the database, only rows not used since they were listed
            try:
                open_pack(root).remove(packed)
            except PackUnavailable as e:
                raise InputError(f"cannot prune the packed stage cache: {e}") from None
        for e in drop:
            if e.packed is not None:
                continue
            try:
                shutil.rmtree(e.path) if e.path.is_dir() else e.path.unlink()
            except FileNotFoundError:
                pass
        for p in stale:
            p.unlink(missing_ok=True)
    return {"root": str(root), "removed": len(drop), "freed_bytes": freed, "kept": len(keep), "kept_bytes": total,
            "stale_temp_files": len(stale), "dry_run": dry_run}
