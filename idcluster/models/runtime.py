"""Device selection shared by the model backends."""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


@lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    return device


def onnx_providers(device: str) -> list[str]:
    """onnxruntime providers for `device`; cuda falls back to CPU with one warning."""
    import onnxruntime as ort

    if check_device(device) == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        _warn_once(
            "device=cuda asked for, but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu in place of onnxruntime): running on CPU"
        )
    return ["CPUExecutionProvider"]


def onnx_has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def torch_has_cuda() -> bool:
    """A CUDA torch with a device, without importing torch where it is not installed."""
    from importlib.util import find_spec

    if find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def onnx_session_options(threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # keep onnxruntime's own warnings out of the progress bars
    # Idle threads spinning for work burn CPU seconds other processes (and our other worker) need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
    return opts


def onnx_session(model: bytes | str, device: str, threads: int = 0):
    import onnxruntime as ort

    return ort.InferenceSession(model, sess_options=onnx_session_options(threads), providers=onnx_providers(device))


def torch_device(device: str) -> str:
    """torch device for `device`; cuda without a CUDA torch is one warning and a CPU run."""
    import torch

    if check_device(device) == "cuda":
        if torch.cuda.is_available():
            return "cuda"
        _warn_once("device=cuda asked for, but torch sees no CUDA device: running on CPU")
    return "cpu"


def _fold_identities(proto) -> None:
    """Identity nodes over initializers (shared weights, as torch.onnx exports them) become
    initializers: onnx2torch reads a Conv's weights from the initializers only."""
    inits = {i.name: i for i in proto.graph.initializer}
    for node in list(proto.graph.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = proto.graph.initializer.add()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            proto.graph.node.remove(node)


class TorchOnnxSession:
    """An ONNX model run by a CUDA torch (onnx2torch), with onnxruntime's `run` signature.

    For GPU machines whose onnxruntime is the CPU build: the same graph and weights,
    converted once per process.
    """

    def __init__(self, model: bytes | str, device: str = "cuda"):
        import onnx
        import torch
        from onnx2torch import convert

        proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
        _fold_identities(proto)
        self.inputs = [i.name for i in proto.graph.input]
        self.device = device
        self.module = convert(proto).to(device).eval()
        self._torch = torch

    def run(self, output_names, feed: dict):
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.inputs]
            out = self.module(*args)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.float().cpu().numpy() for o in out]


def onnx_or_torch_session(model: bytes | str, device: str, threads: int = 0):
    """onnxruntime (CUDA provider where it has one); on device=cuda with the CPU onnxruntime,
    a CUDA torch with onnx2torch runs the model instead; else the CPU with the usual warning."""
    from importlib.util import find_spec

    if check_device(device) == "cuda" and not onnx_has_cuda() and find_spec("onnx2torch") and torch_has_cuda():
        return TorchOnnxSession(model)
    return onnx_session(model, device, threads)
