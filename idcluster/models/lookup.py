"""Finding model files that do not ship in a wheel: InsightFace packs, torch checkpoints, Hugging Face hub files.

Lookup order (DESIGN.md): an explicit path from the config, the local model
store, then the backend's own download. A download is only attempted after a
short reachability probe, so an offline machine gets one clear ModelError within
seconds instead of a request that hangs; the error names every place that was
tried, where to put the files and which offline options need no download.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ModelError

# Offline choices to suggest when a downloadable model is missing.
OFFLINE_EMBEDDERS = "embedder=dlib (default) or embedder=facenet"
OFFLINE_DETECTORS = "detector=retinaface (default), detector=opencv or detector=none"
# ... and for the whole-instance models (ccip, clip).
OFFLINE_INSTANCE_EMBEDDERS = "instance=fused (default), instance=mobilenet or instance=appearance, with embedder=dlib"

INSIGHTFACE_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/"
# Files of the common packs, for messages only (routing is by model shape, as InsightFace does).
PACK_FILES = {
    "buffalo_l": {"detection": "det_10g.onnx", "recognition": "w600k_r50.onnx"},
    "buffalo_m": {"detection": "det_2.5g.onnx", "recognition": "w600k_r50.onnx"},
    "buffalo_s": {"detection": "det_500m.onnx", "recognition": "w600k_mbf.onnx"},
    "buffalo_sc": {"detection": "det_500m.onnx", "recognition": "w600k_mbf.onnx"},
    "antelopev2": {"detection": "scrfd_10g_bnkps.onnx", "recognition": "glintr100.onnx"},
}
ROLES = ("detection", "recognition")


def reachable(url: str, timeout: float = 4.0) -> bool:
    """True when `url` answers within `timeout` seconds (any HTTP status counts).

    Runs in a daemon thread with a hard join timeout: DNS lookups ignore socket
    timeouts, so this bounds the whole probe. Honours the usual proxy variables.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # the server answered
        except Exception:  # noqa: BLE001 - any failure means "not reachable", reported by the caller
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(result and result[0])


# ---------------------------------------------------------------- InsightFace packs


def insightface_roots(root: str | None = None) -> list[Path]:
    """Model-store roots, in lookup order: `root` if given, else $INSIGHTFACE_HOME then ~/.insightface."""
    if root:
        return [Path(root).expanduser()]
    roots = []
    if os.environ.get("INSIGHTFACE_HOME"):
        roots.append(Path(os.environ["INSIGHTFACE_HOME"]).expanduser())
    roots.append(Path("~/.insightface").expanduser())
    return roots


def onnx_role(path: Path) -> str | None:
    """What InsightFace's ModelRouter would build from this file, read from the graph alone.

    Mirrors insightface.model_zoo.ModelRouter: >=5 outputs is a detector (SCRFD);
    192x192 input a landmark model, 96x96 an attribute model, two inputs at 128 the
    swapper; any other square input >=112 and divisible by 16 a recognition model
    (ArcFace). None for anything else.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign file: say which one
        raise ModelError(f"cannot read ONNX model {path}: {str(e).splitlines()[0][:160]}") from None
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(graph.output) >= 5:
        return "detection"
    if not inputs:
        return None
    dims = [d.dim_value if d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[2] is None or dims[3] is None:
        return None
    h, w = dims[2], dims[3]
    if (h, w) in ((192, 192), (96, 96)) or (len(inputs) == 2 and h == 128 and w == 128):
        return None
    if h == w and h >= 112 and h % 16 == 0 and len(graph.output) == 1:
        return "recognition"
    return None


def _pick(files: list[Path], role: str, where: str) -> Path:
    found = [f for f in sorted(files) if onnx_role(f) == role]
    if not found:
        names = ", ".join(f.name for f in sorted(files)) or "no .onnx files"
        raise ModelError(f"no {role} model in {where} ({names}); InsightFace routes by shape: "
                         "a detector has >=5 outputs, a recognition model one square input >=112 px")
    if len(found) > 1:
        raise ModelError(f"several {role} models in {where}: {', '.join(f.name for f in found)}; "
                         "name one file by path (pack=/path/to/model.onnx)")
    return found[0]


def _pack_files(folder: Path) -> list[Path]:
    # Some pack zips unpack into <pack>/<pack>/*.onnx (antelopev2): look one level down too.
    return sorted(set(folder.glob("*.onnx")) | set(folder.glob("*/*.onnx")))


def find_pack_model(pack: str, role: str, root: str | None = None, download: bool = True) -> Path:
    """The ONNX file with `role` ('detection' or 'recognition') of an InsightFace pack.

    `pack` is a pack name (buffalo_l, antelopev2, ...), a pack folder, or one .onnx
    file. Lookup: that path; <root>/models/<pack> for $INSIGHTFACE_HOME and
    ~/.insightface; then InsightFace's own download (after a reachability probe).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    what = "embedder" if role == "recognition" else "detector"
    offline = OFFLINE_EMBEDDERS if role == "recognition" else OFFLINE_DETECTORS
    p = Path(str(pack)).expanduser()
    if p.suffix == ".onnx" or os.sep in str(pack) or p.exists():
        if p.is_file():
            role_found = onnx_role(p)
            if role_found != role:
                raise ModelError(f"{p} is not an InsightFace {role} model (routes as {role_found or 'nothing'}); "
                                 f"give {what}.pack a pack folder or the pack's {role} .onnx file")
            return p
        if p.is_dir():
            return _pick(_pack_files(p), role, str(p))
        raise ModelError(f"{what}.pack={pack}: no such file or folder; give a pack folder, an .onnx file, "
                         f"or a pack name such as buffalo_l")

    folders = [r / "models" / pack for r in insightface_roots(root)]
    for folder in folders:
        files = _pack_files(folder) if folder.is_dir() else []
        if files:
            return _pick(files, role, str(folder))

    target = folders[-1] if not root else folders[0]
    expected = PACK_FILES.get(pack, {}).get(role)
    hint = (f"put the pack's .onnx files{f' ({expected} among them)' if expected else ''} in {target}, "
            f"or pass {what}.pack=/path/to/folder-or-file.onnx; offline instead: {offline}")
    tried = " and ".join(str(f) for f in folders)
    if not download:
        raise ModelError(f"InsightFace pack {pack!r} not found (looked in {tried}; downloads off): {hint}")
    url = f"{INSIGHTFACE_URL}{pack}.zip"
    if not reachable(url):
        raise ModelError(f"InsightFace pack {pack!r} not found (looked in {tried}) and {url} cannot be reached "
                         f"(offline?): {hint}")
    from insightface.utils.storage import download as insightface_download

    try:
        folder = Path(insightface_download("models", pack, force=target.exists(), root=str(target.parent.parent)))
    except Exception as e:  # noqa: BLE001 - network/zip errors from the backend, reported as one line
        raise ModelError(f"downloading InsightFace pack {pack!r} from {url} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''}): {hint}") from None
    return _pick(_pack_files(folder), role, str(folder))


# ---------------------------------------------------------------- torch checkpoints


def torch_checkpoint_dirs() -> list[Path]:
    """Where torch checkpoints are looked for: facenet-pytorch's $TORCH_HOME/checkpoints, then torch hub's."""
    home = Path(os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))).expanduser()
    dirs = [home / "checkpoints", home / "hub" / "checkpoints"]
    return list(dict.fromkeys(dirs))


def find_torch_checkpoint(filename: str, url: str, explicit: str | None, option: str, download: bool = True) -> Path:
    """A checkpoint file: `explicit` path, the checkpoint dirs, then a download (after a probe)."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ModelError(f"{option}={explicit}: no such file")
        return p
    dirs = torch_checkpoint_dirs()
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    hint = (f"put {filename} ({url}) in {dirs[0]} or pass {option}=/path/to/{filename}; "
            f"offline instead: {OFFLINE_EMBEDDERS}")
    tried = " and ".join(str(d) for d in dirs)
    if not download:
        raise ModelError(f"weights {filename} not found (looked in {tried}; downloads off): {hint}")
    if not reachable(url):
        raise ModelError(f"weights {filename} not found (looked in {tried}) and {url} cannot be reached (offline?): {hint}")
    from torch.hub import download_url_to_file

    dirs[0].mkdir(parents=True, exist_ok=True)
    dest = dirs[0] / filename
    try:
        download_url_to_file(url, str(dest))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"downloading {url} failed ({type(e).__name__}): {hint}") from None
    return dest


# ---------------------------------------------------------------- Hugging Face hub files


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def find_hub_files(repo_id: str, files: list[str], model_dir: str | None, option: str,
                   download: bool = True) -> list[Path]:
    """Local paths of `files` of a hub repo: model_dir, the HF cache, then a download."""
    names = [Path(f).name for f in files]
    if model_dir:
        d = Path(model_dir).expanduser()
        found = [d / n for n in names]
        missing = [str(p) for p in found if not p.is_file()]
        if missing:
            raise ModelError(f"{option}={model_dir}: missing {', '.join(missing)} (needs {', '.join(names)})")
        return found
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return [Path(hf_hub_download(repo_id, f, local_files_only=True)) for f in files]
    except LocalEntryNotFoundError:
        pass
    url = f"{hub_endpoint()}/{repo_id}"
    hint = (f"download {', '.join(files)} from {url} into a folder and pass {option}=/path/to/folder, "
            f"or run once online (files go to the Hugging Face cache); offline instead: {OFFLINE_INSTANCE_EMBEDDERS}")
    if not download:
        raise ModelError(f"{repo_id}: {files[0]} not in the Hugging Face cache (downloads off): {hint}")
    if not reachable(url):
        raise ModelError(f"{repo_id}: {files[0]} not in the Hugging Face cache and {url} cannot be reached (offline?): {hint}")
    try:
        return [Path(hf_hub_download(repo_id, f)) for f in files]
    except Exception as e:  # noqa: BLE001 - network/hub errors, reported as one line
        raise ModelError(f"downloading {files[0]} from {url} failed ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''}): {hint}") from None
