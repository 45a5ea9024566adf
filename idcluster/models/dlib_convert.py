"""dlib's face-recognition ResNet outside dlib: read its `.dat`, run it in onnxruntime or torch.

dlib-bin is built without BLAS and runs the ResNet at ~78 ms a face, one face
at a time; the same weights in onnxruntime run batched at a fraction of that.

Format (dlib/serialize.h, dlib/dnn/core.h, layers.h, loss.h): integers are one
control byte (low nibble = byte count, 0x80 = negative) plus little-endian
bytes; a scalar float is a mantissa and an exponent integer (m * 2**e); a
string is a length and bytes; a bool is the character '0' or '1'; a tensor is
version 2, four sizes (n, k, rows, cols) and raw little-endian float32s. A
network nests outside-in: the loss layer writes its version, its details, then
its sub-network; each `add_layer` writes its version, its sub-network, then
its layer details and run state; tag and skip layers write a version (1) and
their sub-network only. Reading therefore yields a run of versions, then layer
details input-first.

Tag and skip layers carry no ids in the file: the residual wiring is dlib's
face-recognition net (dnn_face_recognition_ex.cpp): `residual` =
add_prev1<block<tag1<x>>> (one version-1 layer before the block) and
`residual_down` = add_prev2<avg_pool<skip1<tag2<block<tag1<x>>>>>> (a pair of
version-1 layers after the block). `read_net` checks that the file has exactly
that shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache.store import default_cache_dir
from ..errors import ModelError
from .onnx_build import GraphBuilder, write_converted
from .weights import file_sha256

log = logging.getLogger(__name__)

# Bump when the graph built from the same .dat changes (it is part of the cached file's name).
CONVERTER_VERSION = 1


@dataclass
class Layer:
    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | fc | tag | skip
    w: np.ndarray | None = None  # con: OIHW filters; affine: per-channel scale; fc: (in, out)
    b: np.ndarray | None = None  # con: bias; affine: per-channel shift
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)  # pool window; (0, 0) = the whole image
    tag: int = 0  # tag / skip / add_prev: which tag


@dataclass
class DlibNet:
    mean: np.ndarray  # RGB means subtracted by dlib's input layer (then / 256)
    size: int  # input chip side
    layers: list[Layer] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.b, self.pos, self.path = data, 0, path

    def fail(self, what: str):
        raise ModelError(f"{self.path}: not a dlib face-recognition network ({what} at byte {self.pos})")

    def integer(self) -> int:
        if self.pos >= len(self.b):
            self.fail("unexpected end of file")
        c = self.b[self.pos]
        n = c & 0x0F
        v = int.from_bytes(self.b[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if c & 0x80 else v

    def real(self) -> float:
        m = self.integer()
        return m * 2.0 ** self.integer()

    def string(self) -> str:
        n = self.integer()
        s = self.b[self.pos:self.pos + n]
        self.pos += n
        try:
            return s.decode("ascii")
        except UnicodeDecodeError:
            self.fail("expected a layer name")

    def boolean(self) -> bool:
        c = self.b[self.pos:self.pos + 1]
        self.pos += 1
        if c not in (b"0", b"1"):
            self.fail("expected a bool")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            self.fail("unsupported tensor version")
        shape = [self.integer() for _ in range(4)]
        n = int(np.prod(shape))
        a = np.frombuffer(self.b, dtype="<f4", count=n, offset=self.pos).reshape(shape)
        self.pos += 4 * n
        return a.astype(np.float32)

    def alias(self) -> list[int]:
        if self.integer() != 1:
            self.fail("unsupported alias_tensor version")
        return [self.integer() for _ in range(4)]

    def layer_state(self, input_layer: bool) -> None:
        """The run state add_layer writes after its details (unused at inference)."""
        for _ in range(3):
            self.boolean()
        for _ in range(3):
            self.tensor()  # x_grad, cached_output, params_grad (input layer: grad_final)
        if input_layer:
            self.integer()  # sample expansion factor


def _details(r: _Reader) -> Layer:
    name = r.string()
    if name == "con_4":
        params = r.tensor().ravel()
        nf, nr, nc, sy, sx, py, px = (r.integer() for _ in range(7))
        fshape, bshape = r.alias(), r.alias()
        for _ in range(4):
            r.real()  # learning-rate / weight-decay multipliers
        nw = int(np.prod(fshape))
        if nw + nf != params.size or fshape[0] != nf or bshape[1] != nf:
            r.fail("inconsistent con_ sizes")
        return Layer("con", w=params[:nw].reshape(fshape), b=params[nw:].copy(), stride=(sy, sx), pad=(py, px), size=(nr, nc))
    if name == "affine_":
        params = r.tensor().ravel()
        g, _ = r.alias(), r.alias()
        if r.integer() != 0:  # dlib's CONV_MODE (0): one scale/shift per channel
            r.fail("affine_ not in conv mode")
        k = int(np.prod(g))
        return Layer("affine", w=params[:k].copy(), b=params[k:2 * k].copy())
    if name == "relu_":
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        return Layer(name[:-2], size=(nr, nc), stride=(sy, sx), pad=(py, px))
    if name == "fc_2":
        n_out, n_in = r.integer(), r.integer()
        params = r.tensor().ravel()
        w, _ = r.alias(), r.alias()
        has_bias = r.integer() == 0  # dlib's FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        for _ in range(4):
            r.real()
        if has_bias or params.size != n_in * n_out:
            r.fail("expected fc_no_bias")
        return Layer("fc", w=params.reshape(n_in, n_out).copy())
    r.fail(f"unsupported layer {name!r}")


def _wire_tags(versions: list[int], computational: list[Layer]) -> list[Layer]:
    """Interleave tag/skip layers (version 1) with the computational layers, input first,
    giving each its tag id by the residual pattern of dlib's face net."""
    # versions are outermost first; the innermost entry (the con on the input) is not in the list.
    kinds = list(reversed(versions))  # input first: 1 = tag/skip, 2 = add_layer
    layers: list[Layer] = [computational[0]]
    it = iter(computational[1:])
    i = 0
    while i < len(kinds):
        if kinds[i] == 1 and i + 1 < len(kinds) and kinds[i + 1] == 1:
            layers += [Layer("tag", tag=2), Layer("skip", tag=1)]
            i += 2
            continue
        layers.append(Layer("tag", tag=1) if kinds[i] == 1 else next(it))
        i += 1
    # add_prev after a skip adds tag2 (residual_down), otherwise tag1 (residual).
    last_skip = False
    for layer in layers:
        if layer.kind == "skip":
            last_skip = True
        elif layer.kind == "add_prev":
            layer.tag, last_skip = (2 if last_skip else 1), False
    return layers


def read_net(path: str | Path) -> DlibNet:
    """Parse dlib's serialised face-recognition ResNet (loss_metric over fc_no_bias)."""
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    if r.integer() != 1 or r.string() != "loss_metric_2":
        r.fail("expected a loss_metric network")
    r.real(), r.real()  # margin, distance threshold (training only)
    versions = []
    while (v := r.integer()) != 3:  # version 3 = the add_layer on the input layer
        if v not in (1, 2):
            r.fail(f"unexpected layer version {v}")
        versions.append(v)
    if r.string() != "input_rgb_image_sized":
        r.fail("expected input_rgb_image_sized")
    mean = np.array([r.real() for _ in range(3)], np.float32)
    nr, nc = r.integer(), r.integer()
    computational = []
    first = True
    while r.pos < len(r.b):
        computational.append(_details(r))
        r.layer_state(input_layer=first)
        first = False
    if len(computational) != versions.count(2) + 1:
        r.fail("layer count does not match the network's nesting")
    net = DlibNet(mean=mean, size=int(nr), layers=_wire_tags(versions, computational))
    if nr != nc or net.layers[-1].kind != "fc" or computational[0].kind != "con":
        r.fail("unexpected network shape")
    return net


def shapes(net: DlibNet) -> list[tuple[int, int, int]]:
    """(channels, rows, cols) after each layer, with dlib's size rules: an output side is
    1 + (side + 2 * pad - window) // stride; add_prev takes the larger of each dimension,
    the missing elements of the smaller input counting as zeros (how the residual_down
    blocks grow 32 -> 64 -> 128 -> 256 channels)."""
    cur, tags, out = (3, net.size, net.size), {}, []
    for layer in net.layers:
        c, h, w = cur
        if layer.kind in ("con", "max_pool", "avg_pool"):
            if layer.size == (0, 0):
                h = w = 1
            else:
                (kh, kw), (sy, sx), (py, px) = layer.size, layer.stride, layer.pad
                h, w = 1 + (h + 2 * py - kh) // sy, 1 + (w + 2 * px - kw) // sx
            cur = (layer.w.shape[0] if layer.kind == "con" else c, h, w)
        elif layer.kind == "tag":
            tags[layer.tag] = cur
        elif layer.kind == "skip":
            cur = tags[layer.tag]
        elif layer.kind == "add_prev":
            cur = tuple(max(a, b) for a, b in zip(cur, tags[layer.tag]))
        elif layer.kind == "fc":
            cur = (layer.w.shape[1], 1, 1)
        out.append(cur)
    return out


# ---------------------------------------------------------------- ONNX


def to_onnx(net: DlibNet) -> bytes:
    """An ONNX graph equal to the dlib net: uint8 RGB chips [N, H, W, 3] -> descriptors [N, 128]."""
    from onnx import TensorProto, helper

    g = GraphBuilder()
    const, node, nodes = g.const, g.node, g.nodes

    # dlib's input layer: planar RGB, (pixel - mean) / 256
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Sub", [x, const(net.mean.reshape(1, 3, 1, 1), "mean")])
    x = node("Mul", [x, const(np.array(1 / 256, np.float32), "scale")])
    tags: dict[int, tuple[str, tuple]] = {}
    shape = (3, net.size, net.size)

    def padded(x: str, have: tuple, want: tuple) -> str:
        if have == want:
            return x
        pads = [0, 0, 0, 0, 0, *(b - a for a, b in zip(have, want))]
        return node("Pad", [x, const(np.array(pads, np.int64), "pads")])

    for layer, after in zip(net.layers, shapes(net)):
        if layer.kind == "con":
            (py, px), (sy, sx) = layer.pad, layer.stride
            x = node("Conv", [x, const(layer.w, "w"), const(layer.b, "b")], kernel_shape=list(layer.w.shape[2:]),
                     strides=[sy, sx], pads=[py, px, py, px])
        elif layer.kind == "affine":
            x = node("Mul", [x, const(layer.w.reshape(1, -1, 1, 1), "g")])
            x = node("Add", [x, const(layer.b.reshape(1, -1, 1, 1), "beta")])
        elif layer.kind == "relu":
            x = node("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            if layer.size == (0, 0):
                x = node("GlobalAveragePool" if layer.kind == "avg_pool" else "GlobalMaxPool", [x])
            else:
                (py, px), (sy, sx) = layer.pad, layer.stride
                if layer.kind == "avg_pool" and (py or px):
                    raise ModelError("padded avg_pool is not supported by this converter")
                x = node("MaxPool" if layer.kind == "max_pool" else "AveragePool", [x], kernel_shape=list(layer.size),
                         strides=[sy, sx], pads=[py, px, py, px])
        elif layer.kind == "tag":
            tags[layer.tag] = (x, shape)
        elif layer.kind == "skip":
            x = tags[layer.tag][0]
        elif layer.kind == "add_prev":
            other, other_shape = tags[layer.tag]
            x = node("Add", [padded(x, shape, after), padded(other, other_shape, after)])
        elif layer.kind == "fc":
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const(layer.w, "fc")])
        shape = after
    nodes[-1].output[0] = "descriptors"
    dim = net.layers[-1].w.shape[1]
    return g.serialise(
        "dlib_face_recognition_resnet",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", net.size, net.size, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", dim])],
        "idcluster.dlib_dnn",
    )


def converted_onnx(dat_path: str | Path, cache_dir: Path | None = None) -> Path:
    """The ONNX file for `dat_path`, converting on first use; keyed by the .dat's sha256.

    Written atomically (temp file + rename) so concurrent workers never read half a file.
    """
    dat_path = Path(dat_path)
    root = (cache_dir or default_cache_dir()) / "dlib-onnx"  # beside the stage cache; `cache prune` leaves it
    target = root / f"{file_sha256(Path(dat_path))}-c{CONVERTER_VERSION}.onnx"
    if target.is_file():
        return target
    log.info("converting %s to ONNX (once) -> %s", dat_path.name, target)
    return write_converted(target, to_onnx(read_net(dat_path)), "dlib model")


# ---------------------------------------------------------------- torch (GPU path without onnxruntime-gpu)


def to_torch(net: DlibNet):
    """A torch module equal to the dlib net (same input/output as `to_onnx`)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class DlibResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(net.mean.reshape(1, 3, 1, 1).copy()))
            self.plan = list(zip(net.layers, shapes(net)))
            self.params = nn.ParameterList()
            self.index: list[int] = []
            for layer, _ in self.plan:
                self.index.append(len(self.params))
                if layer.w is not None:
                    self.params.append(nn.Parameter(torch.from_numpy(layer.w.copy()), requires_grad=False))
                if layer.b is not None:
                    self.params.append(nn.Parameter(torch.from_numpy(layer.b.copy()), requires_grad=False))

        def forward(self, chips):  # uint8 [N, H, W, 3]
            x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0
            tags = {}
            shape = (3, net.size, net.size)
            for (layer, after), at in zip(self.plan, self.index):
                if layer.kind == "con":
                    x = F.conv2d(x, self.params[at], self.params[at + 1], stride=layer.stride, padding=layer.pad)
                elif layer.kind == "affine":
                    x = x * self.params[at].view(1, -1, 1, 1) + self.params[at + 1].view(1, -1, 1, 1)
                elif layer.kind == "relu":
                    x = F.relu(x)
                elif layer.kind == "max_pool":
                    x = F.max_pool2d(x, layer.size, layer.stride, layer.pad) if layer.size != (0, 0) else x.amax((2, 3), keepdim=True)
                elif layer.kind == "avg_pool":
                    x = F.avg_pool2d(x, layer.size, layer.stride) if layer.size != (0, 0) else x.mean((2, 3), keepdim=True)
                elif layer.kind == "tag":
                    tags[layer.tag] = (x, shape)
                elif layer.kind == "skip":
                    x = tags[layer.tag][0]
                elif layer.kind == "add_prev":
                    other, other_shape = tags[layer.tag]
                    x = _grow(x, shape, after) + _grow(other, other_shape, after)
                elif layer.kind == "fc":
                    x = x.flatten(1) @ self.params[at]
                shape = after
            return x

    def _grow(x, have, want):  # zero-pad channels/rows/cols at the end, as dlib's add does
        if have == want:
            return x
        dc, dh, dw = (b - a for a, b in zip(have, want))
        return F.pad(x, (0, dw, 0, dh, 0, dc))

    return DlibResNet().eval()


def descriptor_forward(dat_path: str | Path, device: str = "cpu", threads: int = 0):
    """A function chips uint8 [N, H, W, 3] -> descriptors [N, 128] float32 for the .dat's net.

    CPU: onnxruntime on the converted model. device=cuda: onnxruntime's CUDA provider
    where that onnxruntime has one, else torch on CUDA (machines with a CUDA torch
    and the CPU onnxruntime), else the CPU with the usual one-line warning.
    """
    from . import runtime

    if runtime.check_device(device) == "cuda" and not runtime.onnx_has_cuda() and runtime.torch_has_cuda():
        import torch

        module = to_torch(read_net(dat_path)).to("cuda")

        def run_torch(chips: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(np.ascontiguousarray(chips)).to("cuda")).float().cpu().numpy()

        return run_torch
    session = runtime.onnx_session(str(converted_onnx(dat_path)), device, threads)

    def run_onnx(chips: np.ndarray) -> np.ndarray:
        return session.run(None, {"chips": chips})[0]

    return run_onnx
