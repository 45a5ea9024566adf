"""Materialise a clustering as folders: identity_NNN/ (largest first), noise/, faces/.

Input files are copied, hard-linked or symlinked, never moved or deleted. An
existing export is replaced only with export.overwrite=true, and then only the
folders and file this module writes are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import cv2

from ..errors import InputError
from ..inputs.images import ImageDecodeError, load_image
from ..progress import stage_bar
from ..records import ImageRecord

log = logging.getLogger(__name__)

JSON_NAME = "identity_clustering.json"
NOISE, FACES = "noise", "faces"
MODES = ("copy", "hardlink", "symlink")
# identity_NNN, or identity_NNN_<name> once named in `idcluster review`.
_MANAGED_DIR = re.compile(r"^(identity_\d{3,}(_[^/]*)?|noise|faces)$")


def name_slug(name: str) -> str:
    """A user-given identity name as a safe folder-name suffix."""
    return re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")[:60]


def identity_folder(cluster: int, width: int, name: str | None = None) -> str:
    base = f"identity_{cluster:0{width}d}"
    slug = name_slug(name) if name else ""
    return f"{base}_{slug}" if slug else base


def identity_names(n_clusters: int, meta: dict[int, dict] | None = None) -> list[str]:
    """Folder of each cluster; `meta` (cluster -> {"name", ...}, from review decisions) adds names."""
    width = max(3, len(str(max(n_clusters - 1, 0))))
    meta = meta or {}
    return [identity_folder(i, width, meta.get(i, {}).get("name")) for i in range(n_clusters)]


def flat_name(rel_path: str) -> str:
    """Unique file name for an input path: sub/dir/img.jpg -> sub__dir__img.jpg."""
    return rel_path.replace("/", "__")


def _named_folders(output_dir: Path) -> set[str]:
    """Folders of named identities (identity_NNN_<name>) that the earlier export's JSON lists."""
    try:
        report = json.loads((output_dir / JSON_NAME).read_text(encoding="utf-8"))
        return {c["identity"] for c in report.get("clusters", []) if isinstance(c, dict) and "identity" in c}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def _managed(output_dir: Path) -> list[Path]:
    """What an export wrote here: identity_NNN/, noise/, faces/, the JSON, and identity_NNN_<name>/
    only where the JSON names it (a user's own `identity_000_poses/` is not ours to replace)."""
    if not output_dir.is_dir():
        return []
    named = _named_folders(output_dir)
    found = [p for p in output_dir.iterdir() if p.is_dir() and _MANAGED_DIR.match(p.name)
             and (re.fullmatch(r"identity_\d{3,}", p.name) or p.name in ("noise", "faces") or p.name in named)]
    if (output_dir / JSON_NAME).exists():
        found.append(output_dir / JSON_NAME)
    return sorted(found)


def prepare_output(output_dir: Path, input_dir: Path, overwrite: bool, check_only: bool = False) -> None:
    """Refuse to clobber an earlier export unless asked; never touch the input.

    check_only validates without removing anything (run it before the long
    stages, remove the old export only once the new one is ready to write).
    """
    output_dir, input_dir = output_dir.resolve(), input_dir.resolve()
    if output_dir == input_dir:
        raise InputError("output_dir must be a different folder from input_dir")
    old = _managed(output_dir)
    if not old:
        return
    if not overwrite:
        raise InputError(f"output_dir already holds an export ({output_dir / JSON_NAME}); add export.overwrite=true to replace it")
    for p in old:
        if p.is_dir() and (input_dir == p.resolve() or p.resolve() in input_dir.parents):
            raise InputError(f"refusing to replace {p}: it contains input_dir")
    if check_only:
        return
    for p in old:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"export.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class _Linker:
    def __init__(self, mode: str):
        self.mode = check_mode(mode)

    def __call__(self, src: Path, dst: Path) -> None:
        if self.mode == "hardlink":
            try:
                os.link(src, dst)
                return
            except OSError as e:
                log.warning("hard link failed (%s): copying files instead", e.strerror)
                self.mode = "copy"
        if self.mode == "symlink":
            os.symlink(src.resolve(), dst)
            return
        shutil.copy2(src, dst)


Linker = _Linker  # public name: pose splits and training-set exports link/copy the same way


def write_json_atomic(path: Path, data: dict, indent: int | None = 2) -> None:
    """indent=None writes compact JSON with the C encoder (~10x faster on 10k-image reports)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=indent, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def export(
    records: list[ImageRecord],
    output_dir: Path,
    mode: str = "copy",
    save_faces: bool = False,
    aligner=None,
    progress: bool = True,
    meta: dict[int, dict] | None = None,
) -> dict[str, int]:
    """Copy/link every input into its identity folder or noise/; returns folder sizes.

    Sets no state on records except through the returned mapping; output paths
    are derived from labels, so this is a pure view of the clustering.
    """
    link = _Linker(mode)
    n_clusters = max((r.label for r in records), default=-1) + 1
    names = identity_names(n_clusters, meta)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in names + [NOISE]:
        (output_dir / name).mkdir(exist_ok=True)
    sizes: Counter = Counter()
    with stage_bar("export", len(records), progress) as bar:
        for rec in records:
            for folder in record_folders(rec, names):
                sizes[folder] += 1
                try:
                    link(Path(rec.path), output_dir / folder / flat_name(rec.rel_path))
                except OSError as e:
                    log.warning("could not export %s: %s", rec.rel_path, e.strerror or e)
            if save_faces and aligner is not None and rec.face is not None:
                _save_faces(rec, aligner, output_dir / FACES, names)
            bar.advance()
    return dict(sizes)


def record_folders(rec: ImageRecord, names: list[str]) -> list[str]:
    """The chosen face's identity first, then those of its other clustered faces
    (faces.select=all puts a group photo in each of its people's folders); else noise/."""
    labels = [rec.label, *sorted(set(rec.face_labels.values()) - {rec.label})]
    folders = [names[l] for l in labels if l >= 0]
    return folders or [NOISE]


def _save_faces(rec: ImageRecord, aligner, root: Path, names: list[str]) -> None:
    try:
        image = load_image(rec.path)
    except ImageDecodeError:
        return
    labels = rec.face_labels or {rec.face_index: rec.label}
    stem = Path(flat_name(rec.rel_path)).stem
    for k, label in labels.items():
        folder = root / (names[label] if label >= 0 else NOISE)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "" if k == rec.face_index else f"_face{k}"
        chip = aligner.align(image, rec.faces[k])
        cv2.imwrite(str(folder / f"{stem}{suffix}.png"), chip[:, :, ::-1])


def output_path(rec: ImageRecord, names: list[str]) -> str:
    return f"{record_folders(rec, names)[0]}/{flat_name(rec.rel_path)}"
