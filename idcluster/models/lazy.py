"""The lazily loaded model a detector or embedder holds (ONNX session, dlib object, torch module).

A component names the attributes holding loaded runtime objects in `_loaded`; each is
None until first use (a class default set here) and is dropped when the component is
pickled or copied: worker processes and copies load their own, and a session never
travels between processes (most do not pickle at all).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar


class LazyModel:
    _loaded: ClassVar[tuple[str, ...]] = ()  # attributes holding loaded runtime objects

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls._loaded:
            if not hasattr(cls, name):
                setattr(cls, name, None)  # not loaded yet

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._loaded:
            state.pop(name, None)
        return state

    def with_threads(self, threads: int):
        """A copy running on `threads` threads (it loads its own model); this one is unchanged."""
        clone = copy.copy(self)  # through __getstate__: nothing loaded is shared
        clone.threads = threads
        return clone


def rethreaded(component: Any, threads: int) -> Any:
    """A copy of `component` on `threads` threads where it has a thread setting, else `component`
    itself; the component passed in is never changed (the caller may still be using it)."""
    if not hasattr(component, "threads"):
        return component
    if hasattr(component, "with_threads"):
        return component.with_threads(threads)
    clone = copy.copy(component)
    clone.threads = threads
    return clone
