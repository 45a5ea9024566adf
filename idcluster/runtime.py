"""Device selection shared by the model backends."""

from __future__ import annotations

import logging
from functools import lru_cache

from .errors import ConfigError

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
