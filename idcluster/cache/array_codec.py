"""Named arrays <-> bytes for the packed stage store.

An .npz costs ~460 bytes of zip and .npy headers per entry: a 128-d float32
embedding (512 bytes) took 1,032. Here: a 4-byte magic, a JSON header
([name, dtype descr, shape] per array) and the raw C-order bytes, ~570 bytes for
the same entry. Decoding checks every length, so a damaged record is a
ValueError (the cache's "corrupt entry"), never wrong numbers.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from numpy.lib.format import descr_to_dtype, dtype_to_descr

MAGIC = b"IDA1"
_HEAD = struct.Struct("<I")  # header length


def encode(arrays: dict[str, np.ndarray]) -> bytes:
    header, chunks = [], []
    for name, value in arrays.items():
        a = np.asarray(value)  # tobytes() writes C order whatever the layout
        if a.dtype.hasobject:  # would need pickle; np.load(allow_pickle=False) never read these back either
            raise TypeError(f"array {name!r} has dtype {a.dtype}: object arrays cannot be cached")
        header.append([name, dtype_to_descr(a.dtype), list(a.shape)])
        chunks.append(a.tobytes())
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, _HEAD.pack(len(head)), head, *chunks])


def decode(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of `blob` (writable copies); ValueError when it is not a whole record."""
    if blob[:4] != MAGIC or len(blob) < 8:
        raise ValueError("not an array record")
    (n,) = _HEAD.unpack_from(blob, 4)
    try:
        header = json.loads(blob[8:8 + n])
        offset = 8 + n
        out = {}
        for name, descr, shape in header:
            dtype = descr_to_dtype(descr if isinstance(descr, str) else [tuple(f) for f in descr])
            if dtype.hasobject:
                raise ValueError("object dtype")
            count = math.prod(shape)
            end = offset + count * dtype.itemsize
            if end > len(blob):
                raise ValueError("truncated array record")
            out[str(name)] = np.frombuffer(blob, dtype, count, offset).reshape(tuple(shape)).copy()
            offset = end
    except (TypeError, KeyError, struct.error) as e:
        raise ValueError(f"bad array record header: {e}") from None
    if offset != len(blob):
        raise ValueError("trailing bytes after the arrays")
    return out
