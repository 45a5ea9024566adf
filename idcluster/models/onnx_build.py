"""Writing ONNX graphs for weights we read ourselves (dlib_convert, mobilenet_convert), and
keeping the converted file beside the stage cache.

onnx is imported on first use: a run whose converted file is cached never loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelError


class GraphBuilder:
    """Nodes and initialisers of one graph, each output named by its op and a running number."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self._helper, self._numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, arr, prefix: str, dtype=None) -> str:
        """An initialiser holding `arr` (as `dtype` where given); returns its name."""
        n = self.name(prefix)
        self.inits.append(self._numpy_helper.from_array(np.ascontiguousarray(arr, dtype=dtype), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        """A node of `op` over `inputs`; returns the name of its one output."""
        out = self.name(op.lower())
        self.nodes.append(self._helper.make_node(op, inputs, [out], **attrs))
        return out

    def serialise(self, graph_name: str, inputs: list, outputs: list, producer: str) -> bytes:
        """The checked model (opset 17, IR 8: what the pinned onnxruntime reads) as bytes."""
        import onnx

        graph = self._helper.make_graph(self.nodes, graph_name, inputs, outputs, self.inits)
        model = self._helper.make_model(graph, opset_imports=[self._helper.make_opsetid("", 17)], producer_name=producer)
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model.SerializeToString()


def write_converted(target: Path, data: bytes, what: str) -> Path:
    """`data` written to `target` atomically (temp file + rename: concurrent workers never read
    half a file); an unwritable cache is the user's to fix, in one line."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        raise ModelError(f"cannot write the converted {what} to {target.parent} ({e}); "
                         "set IDCLUSTER_CACHE to a writable folder") from None
    return target
