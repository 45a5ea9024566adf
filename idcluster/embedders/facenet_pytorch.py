"""embedder=facenet_pytorch: facenet-pytorch's InceptionResnetV1 (512-d), VGGFace2 or
CASIA-WebFace weights (davidsandberg's 20180402-114759 / 20180408-102900, ported).

The weights do not ship in the wheel. Lookup: `weights` (explicit path), then
$TORCH_HOME/checkpoints (where facenet-pytorch caches them) and torch hub's
checkpoints folder, then facenet-pytorch's GitHub release (after a reachability
probe; offline this is one ModelError within seconds naming the folder to put the
file in). Alignment: the 5 landmarks warped to the ArcFace template scaled to
160x160 (as for embedder=facenet, the same network family), then facenet-pytorch's
fixed standardisation (x - 127.5) / 128. Needs `pip install 'idcluster[torch]'`.
"""

from __future__ import annotations

import numpy as np

from .align import warp_to_template
from ..errors import ConfigError, ModelError
from ..records import Face
from ..models.runtime import torch_device
from ..models.weights import file_sha256
from .base import LazyModel

RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
WEIGHTS = {"vggface2": "20180402-114759-vggface2.pt", "casia-webface": "20180408-102900-casia-webface.pt"}


class FaceNetPytorchEmbedder(LazyModel):
    _loaded = ("_net",)  # InceptionResnetV1 on its device
    dim = 512
    alignment = "similarity warp of the 5 landmarks to the ArcFace template scaled to image_size"
    normalisation = "facenet-pytorch fixed standardisation (x - 127.5) / 128, RGB"

    def __init__(
        self,
        pretrained: str = "vggface2",
        weights: str | None = None,
        image_size: int = 160,
        batch_size: int = 32,
        download: bool = True,
        device: str = "cpu",
        threads: int = 0,
    ):
        if pretrained not in WEIGHTS:
            raise ConfigError(f"embedder.pretrained must be one of {', '.join(WEIGHTS)}, got {pretrained!r}")
        self.pretrained = pretrained
        self.weights = weights
        self.image_size = image_size
        self.batch_size = batch_size
        self.download = download
        self.device = device
        self.threads = threads
        self._path = None

    @property
    def input_size(self) -> int:
        return self.image_size

    def weights_path(self):
        if self._path is None:
            from ..models.lookup import find_torch_checkpoint

            name = WEIGHTS[self.pretrained]
            self._path = find_torch_checkpoint(name, RELEASE + name, self.weights, "embedder.weights", download=self.download)
        return self._path

    @property
    def model_id(self) -> str:
        p = self.weights_path()
        return f"facenet-pytorch-{self.pretrained}:{file_sha256(p)[:16]}"

    def _get_net(self):
        if self._net is None:
            from ..models.extras import require

            _, torch = require("torch", "embedder=facenet_pytorch", ("facenet_pytorch", "torch"))
            from facenet_pytorch import InceptionResnetV1

            if self.threads:
                torch.set_num_threads(int(self.threads))
            path = self.weights_path()
            try:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - truncated download, wrong file: one line
                raise ModelError(f"cannot read {path} as a torch state dict ({type(e).__name__}); "
                                 f"delete it and download {RELEASE + WEIGHTS[self.pretrained]} again") from None
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head, unused
            net = InceptionResnetV1(pretrained=None, classify=False)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelError(f"{path} does not fit InceptionResnetV1 (missing {len(missing)}, unexpected "
                                 f"{len(unexpected)} keys, e.g. {(missing or unexpected)[0]})")
            self._device = torch_device(self.device)
            self._net = net.eval().to(self._device)
        return self._net

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return warp_to_template(image, face.landmarks_array(), self.image_size)

    def embed(self, chips: list[np.ndarray]) -> np.ndarray:
        if not len(chips):
            return np.zeros((0, self.dim), np.float32)
        import torch

        net = self._get_net()
        out = []
        step = max(1, int(self.batch_size))
        with torch.inference_mode():
            for start in range(0, len(chips), step):
                x = np.stack(chips[start:start + step]).astype(np.float32)
                x = torch.from_numpy((x - 127.5) / 128.0).permute(0, 3, 1, 2).to(self._device)
                out.append(net(x).float().cpu().numpy())
        X = np.concatenate(out)
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
