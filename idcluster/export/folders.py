"""export=folders (the default): a clustering as folders, identity_NNN/, noise/, faces/.

Input files are copied, hard-linked or symlinked, never moved or deleted. An
earlier export in output_dir is replaced without asking when idcluster wrote it
(its marker, export.report.MARKER_NAME) and its folders hold only files idcluster
put there; otherwise only with export.overwrite=true. Either way only the
folders and file this module writes are removed. Names, numbers, linking and the
JSON come from export.report, the one reader/writer of an output folder.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2

from ..errors import InputError
from ..inputs.images import ImageDecodeError, load_image
from ..progress import stage_bar
from ..records import ImageRecord
from .report import (FACES, IDENTITY_DIR, JSON_NAME, MARKER_NAME, NOISE, Linker, flat_name, foreign_files, has_marker,
                     identity_folders, read_report, record_folders, record_labels)

log = logging.getLogger(__name__)


class FoldersExport:
    """export=folders: identity_NNN/, noise/ (and faces/ with save_faces) beside identity_clustering.json,
    written by every `cluster` run; `idcluster export` re-materialises them from the cached clustering.

    A format writing more (a training set, ...) subclasses this, sets reads_report and overrides
    write(); conf/export/<format>.yaml names the class by `_target_` and extends these keys.
    """

    reads_report = False  # True: `idcluster export` writes this format from the JSON alone (no input_dir)
    needs_pose = False  # True: write() takes the pose settings (views), built only then

    def __init__(self, format: str = "folders", mode: str = "copy", save_faces: bool = False,
                 overwrite: bool = False, names: dict | None = None):
        self.format = str(format)
        self.mode = str(mode)  # checked where files are placed (check_mode: an InputError, as always)
        self.save_faces = bool(save_faces)
        self.overwrite = bool(overwrite)
        self.names = {str(k): str(v) for k, v in (names or {}).items()}  # identity -> name (export.names)

    def write(self, output_dir: Path, pose=None, cache_dir: Path | None = None, progress: bool = True) -> dict | None:
        """What this format writes from output_dir's JSON beyond the folders: nothing."""
        return None

    def summary(self, done: dict) -> str:
        return f"wrote {self.format} output to {done.get('dest')}"


def _earlier_report(output_dir: Path) -> dict | None:
    try:
        return read_report(output_dir)
    except InputError:
        return None


def _managed(output_dir: Path, report: dict | None) -> list[Path]:
    """What an export wrote here: identity_NNN/, noise/, faces/, the JSON, and identity_NNN_<name>/
    only where the earlier JSON names it (a user's own `identity_000_poses/` is not ours to replace)."""
    if not output_dir.is_dir():
        return []
    named = {c["identity"] for c in (report or {}).get("clusters", [])
             if isinstance(c, dict) and isinstance(c.get("identity"), str)}
    found = [p for p in output_dir.iterdir() if p.is_dir() and (p.name in (NOISE, FACES) or _ours(p.name, named))]
    if (output_dir / JSON_NAME).exists():
        found.append(output_dir / JSON_NAME)
    return sorted(found)


def _ours(folder: str, named: set[str]) -> bool:
    m = IDENTITY_DIR.match(folder)
    return bool(m) and (m.group(2) is None or folder in named)


def prepare_output(output_dir: Path, input_dir: Path, overwrite: bool, check_only: bool = False) -> None:
    """Make room for a new export; never touch the input.

    An earlier export that idcluster marked as its own is replaced without asking, unless its
    folders hold files idcluster did not write (then, as for an unmarked export, only with
    overwrite). check_only validates without removing anything (run it before the long stages,
    remove the old export only once the new one is ready to write).
    """
    output_dir, input_dir = output_dir.resolve(), input_dir.resolve()
    if output_dir == input_dir:
        raise InputError("output_dir must be a different folder from input_dir")
    report = _earlier_report(output_dir)
    old = _managed(output_dir, report)
    if not old:
        return
    for p in old:
        if p.is_dir() and (input_dir == p.resolve() or p.resolve() in input_dir.parents):
            raise InputError(f"refusing to replace {p}: it contains input_dir")
    if not overwrite:
        if not has_marker(output_dir):
            raise InputError(f"output_dir already holds an export that idcluster did not mark as its own "
                             f"(no {output_dir / MARKER_NAME}: {output_dir / JSON_NAME}); "
                             "add export.overwrite=true to replace it")
        foreign = foreign_files([p for p in old if p.is_dir()], report)
        if foreign:
            raise InputError(f"output_dir holds {len(foreign)} file(s) idcluster did not write in the folders a re-run "
                             f"replaces (e.g. {output_dir / foreign[0]}): move them out, or add export.overwrite=true "
                             "to replace those folders anyway")
    if check_only:
        return
    for p in old:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


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
    link = Linker(mode)
    names = identity_folders(record_labels(records), {i: m.get("name") for i, m in (meta or {}).items()})
    output_dir.mkdir(parents=True, exist_ok=True)
    for name in [*names.values(), NOISE]:
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


def _save_faces(rec: ImageRecord, aligner, root: Path, names: dict[int, str]) -> None:
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
