"""One model file of an InsightFace pack, shared by detector=scrfd and embedder=arcface.

The file is found once (`model_store.find_pack_model`: explicit path, the local
store, then InsightFace's download), hashed for `model_id`, loaded lazily by
InsightFace's own `model_zoo.get_model` with our providers and threads, and
dropped when pickled (worker processes load their own: models.lazy).
"""

from __future__ import annotations

from ..errors import ModelError
from .lazy import LazyModel
from .runtime import onnx_providers, onnx_session_options
from .weights import file_sha256


def load_insightface_model(path, kind: type, device: str, threads: int):
    """insightface.model_zoo.get_model on one file, checked to route to `kind` (SCRFD, ArcFaceONNX)."""
    from insightface.model_zoo import get_model

    try:
        model = get_model(str(path), providers=onnx_providers(device), sess_options=onnx_session_options(threads))
    except Exception as e:  # noqa: BLE001 - onnxruntime/protobuf errors on a bad file: one line
        raise ModelError(f"InsightFace could not load {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if not isinstance(model, kind):
        raise ModelError(f"InsightFace routes {path} to {type(model).__name__ if model is not None else 'nothing'}, "
                         f"not {kind.__name__}")
    return model


class PackModel(LazyModel):
    """Base: subclasses set `role` ("detection" | "recognition") and `id_prefix`, and
    have `pack`, `root`, `download`, `device`, `threads`, `_path = None`."""

    _loaded = ("_model",)  # InsightFace's SCRFD / ArcFaceONNX
    role: str
    id_prefix: str

    def model_path(self):
        if self._path is None:
            from .lookup import find_pack_model

            self._path = find_pack_model(self.pack, self.role, root=self.root, download=self.download)
        return self._path

    @property
    def model_id(self) -> str:
        p = self.model_path()
        return f"{self.id_prefix}:{p.name}:{file_sha256(p)[:16]}"

    def _load(self, kind: type):
        return load_insightface_model(self.model_path(), kind, self.device, self.threads)
