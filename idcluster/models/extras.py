"""Optional dependencies (pyproject's extras) and the one error line that names the extra to install."""

from __future__ import annotations

import importlib

from ..errors import ModelError

# extra -> the top-level modules it provides (pyproject.toml [project.optional-dependencies]).
EXTRAS = {
    "torch": ("torch", "torchvision", "facenet_pytorch"),
    "gpu": ("onnxruntime",),
    "bench": ("psutil",),
    "test": ("pytest",),
    "browser": ("selenium",),
    "scale": ("leidenalg", "igraph"),
    "ray": ("ray",),
}


def install_line(extra: str) -> str:
    if extra not in EXTRAS:
        raise KeyError(f"no extra {extra!r} (known: {', '.join(EXTRAS)})")
    return f"pip install 'idcluster[{extra}]'"


def require(extra: str, what: str, modules: tuple[str, ...] | None = None) -> list:
    """Import `modules` (default: all of the extra's), or one ModelError naming the extra."""
    loaded = []
    for name in modules or EXTRAS[extra]:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as e:  # also raised for a module set to None in sys.modules (tests)
            raise ModelError(f"{what} needs {e.name or name}: {install_line(extra)} (see README, Models)") from None
    return loaded
