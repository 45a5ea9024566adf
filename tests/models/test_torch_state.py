"""Reading torch state dicts without torch: both file layouts, and the refusal of foreign globals."""

from __future__ import annotations

import importlib.util
import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from idcluster.embedders.mobilenet import DIST, PACKAGE, WEIGHTS
from idcluster.errors import ModelError
from idcluster.models.torch_state import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict
from idcluster.models.weights import package_file

# ------------------------------------------------ a torch-free writer of torch's pickles (test data only)


class _Global:
    """Pickled as GLOBAL module.name, whatever is (or is not) importable here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key: str, flat: np.ndarray, type_name: str):
        self.key, self.flat, self.type_name = key, flat, type_name


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.args = (storage, offset, shape, stride, False, OrderedDict())

    def __reduce__(self):
        return _Global("torch._utils", "_rebuild_tensor_v2"), self.args


class _Call:
    """Any global called with args: what a malicious pickle does."""

    def __init__(self, module: str, name: str, *args):
        self.target, self.args = _Global(module, name), args

    def __reduce__(self):
        return self.target, self.args


class _TorchPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, pid_len: int):
        super().__init__(file, protocol=2)
        self.pid_len = pid_len

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    dispatch[_Global] = _save_global

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            pid = ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.flat.size)
            return pid if self.pid_len == 5 else pid + (None,)
        return None


def _pickled(obj, pid_len: int) -> bytes:
    buf = io.BytesIO()
    _TorchPickler(buf, pid_len).dump(obj)
    return buf.getvalue()


def write_zip_pt(path, obj, storages: list[_Storage]) -> None:
    """torch.save's zip layout: <root>/data.pkl, <root>/data/<key>, <root>/byteorder."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickled(obj, 5))
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.flat.astype(s.flat.dtype.newbyteorder("<")).tobytes())


def write_legacy_pt(path, obj, storages: list[_Storage]) -> None:
    """torch's legacy layout: magic, protocol, sys info, object, storage keys, then each storage."""
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            f.write(pickle.dumps(header, protocol=2))
        f.write(_pickled(obj, 6))
        f.write(pickle.dumps([s.key for s in storages], protocol=2))
        for s in storages:
            f.write(struct.pack("<q", s.flat.size) + s.flat.tobytes())


def _sample():
    """A state dict with a strided view, an offset into a shared storage, a scalar and an int tensor."""
    shared = np.arange(24, dtype=np.float32)
    st = _Storage("0", shared, "FloatStorage")
    counts = _Storage("1", np.array([7], np.int64), "LongStorage")
    half = _Storage("2", np.array([0.5, -2.0], np.float16), "HalfStorage")
    obj = OrderedDict([
        ("conv.weight", _Tensor(st, 0, (2, 3, 4), (12, 4, 1))),
        ("conv.weight_t", _Tensor(st, 0, (4, 6), (1, 4))),  # a transpose: non-contiguous strides
        ("bn.bias", _Tensor(st, 20, (4,), (1,))),  # a slice at an offset of the same storage
        ("bn.num_batches_tracked", _Tensor(counts, 0, (), ())),
        ("half", _Tensor(half, 0, (2,), (1,))),
    ])
    want = {
        "conv.weight": shared.reshape(2, 3, 4), "conv.weight_t": shared.reshape(6, 4).T,
        "bn.bias": shared[20:], "bn.num_batches_tracked": np.array(7), "half": np.array([0.5, -2.0], np.float16),
    }
    return obj, [st, counts, half], want


@pytest.mark.parametrize("write", [write_zip_pt, write_legacy_pt])
def test_reads_both_layouts_with_strides_offsets_and_dtypes(tmp_path, write):
    obj, storages, want = _sample()
    path = tmp_path / "w.pt"
    write(path, obj, storages)
    got = read_state_dict(path)
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and np.array_equal(got[k], v), k


@pytest.mark.parametrize("write", [write_zip_pt, write_legacy_pt])
def test_refuses_a_pickle_with_a_foreign_global(tmp_path, write):
    flag = tmp_path / "pwned"
    obj = OrderedDict([("w", _Call("os", "system", f"touch {flag}"))])
    path = tmp_path / "evil.pt"
    write(path, obj, [])
    with pytest.raises(ModelError, match=r"refusing to load os\.system"):
        read_state_dict(path)
    assert not flag.exists()


def test_reads_the_shipped_mobilenet_weights():
    state = read_state_dict(package_file(PACKAGE, WEIGHTS, DIST))
    assert len(state) == 312 and list(state)[0] == "features.0.0.weight"
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3) and state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["features.1.conv.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert all(np.isfinite(v).all() for v in state.values())


def test_truncated_or_foreign_files_are_one_error(tmp_path):
    real = package_file(PACKAGE, WEIGHTS, DIST).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(ModelError, match="truncated"):
        read_state_dict(cut)
    text = tmp_path / "x.pt"
    text.write_text("not a torch file")
    with pytest.raises(ModelError, match="not a torch"):
        read_state_dict(text)


@pytest.mark.torch
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_equals_torch_load_for_both_layouts(tmp_path):
    import torch

    path = package_file(PACKAGE, WEIGHTS, DIST)
    theirs = torch.load(path, weights_only=True)  # the shipped file: the legacy layout
    ours = read_state_dict(path)
    assert list(ours) == list(theirs)
    assert all(np.array_equal(ours[k], v.numpy()) for k, v in theirs.items())
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    saved = {"t": base.t(), "slice": base.reshape(-1)[20:], "int": torch.tensor(3), "double": torch.ones(2, dtype=torch.float64)}
    torch.save(saved, tmp_path / "zip.pt")  # torch's own zip layout
    ours = read_state_dict(tmp_path / "zip.pt")
    assert all(np.array_equal(ours[k], v.numpy()) and ours[k].shape == tuple(v.shape) for k, v in saved.items())
