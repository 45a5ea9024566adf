"""A kohya-ss sd-scripts training folder: `<repeats>_<name>/` with same-stem `.txt` captions.

    train/
      10_woody/front__img1.png  10_woody/front__img1.txt   "prefix, woody, front view"
      20_buzz/...
      manifest.csv             source path + sha256, identity, name, view, caption, output
      dataset_config.toml      (export.dataset_config=true) for sd-scripts --dataset_config
      .idcluster_export.json   the files this export wrote: re-exports replace exactly these

repeats = min(max_repeats, max(1, round(repeats * largest / count))): each
identity contributes about as many samples per epoch as the largest one.
Sources are only read (or linked, per export.mode, when they need no change).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from .identities import Identity, Member
from .report import Linker, check_mode, flat_name, folder_name
from ..pose.estimate import Bins, nearest_bin
from .captions import caption
from .imaging import TRAINER_SUFFIXES, Sizing, open_image, prepare

log = logging.getLogger(__name__)

MARKER = ".idcluster_export.json"
MANIFEST = "manifest.csv"
DATASET_CONFIG = "dataset_config.toml"
MANIFEST_FIELDS = ("source_path", "source_sha256", "identity", "name", "view", "caption", "output_path", "repeats")


@dataclass(frozen=True)
class KohyaSettings:
    sizing: Sizing = Sizing()
    caption_prefix: str = ""
    repeats: int = 10
    max_repeats: int = 100
    max_per_view: int | None = None
    dataset_config: bool = False
    mode: str = "copy"
    overwrite: bool = False

    def __post_init__(self):
        check_mode(self.mode)
        for key in ("repeats", "max_repeats"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"export.{key} must be an integer >= 1, got {v!r}")
        if self.max_per_view is not None and (not isinstance(self.max_per_view, int) or self.max_per_view < 1):
            raise ConfigError(f"export.max_per_view must be an integer >= 1 or null, got {self.max_per_view!r}")


def repeats_for(counts: dict[str, int], base: int, cap: int) -> dict[str, int]:
    """round(base * largest / count), at least 1, at most cap."""
    largest = max(counts.values(), default=0)
    return {k: min(cap, max(1, round(base * largest / n))) for k, n in counts.items() if n > 0}


def pick(members: list[Member], views: list[str], max_per_view: int | None) -> list[int]:
    """Indices kept: per view the most confident members first, at most max_per_view each."""
    order = sorted(range(len(members)), key=lambda i: (-members[i].probability, members[i].rel_path))
    taken: Counter = Counter()
    keep = []
    for i in order:
        if max_per_view is not None and taken[views[i]] >= max_per_view:
            continue
        taken[views[i]] += 1
        keep.append(i)
    return sorted(keep, key=lambda i: members[i].rel_path)


def _written_before(dest: Path) -> set[str] | None:
    """Relative paths an earlier export wrote (None: no earlier export here)."""
    try:
        return set(json.loads((dest / MARKER).read_text(encoding="utf-8"))["files"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{dest / MARKER} is damaged: remove it (and the folders it listed) or choose another export.dest") from None


def check_dest(dest: Path, protected: list[Path], overwrite: bool) -> set[str]:
    """Refuse a destination that overlaps the sources or holds files idcluster did not write."""
    d = dest.resolve()
    for p in protected:
        p = p.resolve()
        if d == p or p in d.parents or d in p.parents:
            raise InputError(f"export.dest={dest} overlaps {p}: choose a separate folder for the training set")
    if d.exists() and not d.is_dir():
        raise InputError(f"export.dest={dest} is a file, not a folder")
    before = _written_before(d) or set()
    if d.is_dir():
        ours = before | {MARKER}
        foreign = sorted(str(p.relative_to(d)) for p in d.rglob("*") if (p.is_file() or p.is_symlink()) and str(p.relative_to(d)) not in ours)
        if foreign:
            if not overwrite:
                raise InputError(f"export.dest={dest} holds {len(foreign)} file(s) idcluster did not write (e.g. {foreign[0]}): "
                                 "choose an empty folder, or add export.overwrite=true to write beside them")
            log.warning("export.dest=%s: keeping %d file(s) idcluster did not write (e.g. %s)", dest, len(foreign), foreign[0])
    return before


def export_kohya(ids: list[Identity], views: dict[tuple[str, str], str], dest: Path, settings: KohyaSettings,
                 protected: list[Path] = (), centres: dict | None = None, bins: Bins = Bins()) -> dict:
    """Write the training folder for `ids` (hidden ones skipped); views[(identity, rel_path)] = view.

    Returns {"folders": {folder: count}, "repeats": {...}, "files": n}.
    """
    ids = [i for i in ids if not i.hidden and i.members]
    if not ids:
        raise InputError("no visible identity with members to export")
    folders_by_name: dict[str, str] = {}
    for ident in ids:
        key = _name(ident.name).casefold()
        if key in folders_by_name:
            raise InputError(f"{ident.identity} and {folders_by_name[key]} are both named {ident.name!r}: "
                             "give them different export.names (or merge them in review)")
        folders_by_name[key] = ident.identity
    before = check_dest(dest, list(protected), settings.overwrite)

    chosen: dict[str, list[tuple[Member, str]]] = {}
    for ident in ids:
        vs = [views.get((ident.identity, m.rel_path), "no_face") for m in ident.members]
        chosen[ident.identity] = [(ident.members[i], vs[i]) for i in pick(ident.members, vs, settings.max_per_view)]
    reps = repeats_for({k: len(v) for k, v in chosen.items()}, settings.repeats, settings.max_repeats)

    dest.mkdir(parents=True, exist_ok=True)
    link = Linker(settings.mode)
    written: set[str] = set()
    rows, folders = [], {}
    for ident in ids:
        folder = f"{reps[ident.identity]}_{_name(ident.name)}"
        (dest / folder).mkdir(exist_ok=True)
        stems: Counter = Counter()
        for m, view in chosen[ident.identity]:
            text = caption(settings.caption_prefix, ident.name, nearest_bin(view, centres or {}, bins))
            out = _write_image(m, dest / folder, stems, settings, link)
            if out is None:
                continue
            rel = f"{folder}/{out.name}"
            cap_rel = f"{folder}/{out.stem}.txt"
            _replace(dest / cap_rel)
            (dest / cap_rel).write_text(text + "\n", encoding="utf-8")
            written |= {rel, cap_rel}
            rows.append({"source_path": m.path, "source_sha256": m.sha256 or "", "identity": ident.identity,
                         "name": ident.name, "view": view, "caption": text, "output_path": rel,
                         "repeats": reps[ident.identity]})
        folders[folder] = len(rows) - sum(folders.values())

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    _atomic_text(dest / MANIFEST, buf.getvalue())
    written.add(MANIFEST)
    if settings.dataset_config:
        _atomic_text(dest / DATASET_CONFIG, dataset_config(dest, folders, reps, ids, settings))
        written.add(DATASET_CONFIG)
    # Stale files of an earlier export (a renamed identity, a changed repeats count) go; nothing else.
    for rel in sorted(before - written):
        p = dest / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
        parent = p.parent
        while parent != dest and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    _atomic_text(dest / MARKER, json.dumps({"format": "kohya", "files": sorted(written)}, indent=1))
    return {"folders": folders, "repeats": {f"{reps[i.identity]}_{_name(i.name)}": reps[i.identity] for i in ids},
            "files": len(rows), "dest": dest}


def _name(name: str) -> str:
    """The <name> of a `<repeats>_<name>/` folder (sd-scripts reads it as the class tokens: spaces kept)."""
    return folder_name(name) or "_"


def _replace(path: Path) -> None:
    """Unlink before writing: a hard link or symlink from an earlier export must not write through to a source."""
    if path.is_symlink() or path.exists():
        path.unlink()


def _write_image(m: Member, folder: Path, stems: Counter, settings: KohyaSettings, link) -> Path | None:
    src = Path(m.path)
    stem = Path(flat_name(m.rel_path)).stem
    stems[stem] += 1
    if stems[stem] > 1:  # a.jpg and a.png would share a caption file
        stem = f"{stem}_{stems[stem]}"
    try:
        im = open_image(src)
    except OSError as e:
        log.warning("skipping %s: cannot read it (%s)", m.rel_path, e)
        return None
    w, h = im.size
    if settings.sizing.unchanged(w, h, im.mode == "RGBA") and src.suffix.lower() in TRAINER_SUFFIXES and not _rotated(src):
        out = folder / f"{stem}{src.suffix.lower()}"
        _replace(out)
        link(src, out)
        return out
    out = folder / f"{stem}.png"
    _replace(out)
    prepare(im, settings.sizing).save(out, "PNG")
    return out


def _rotated(path: Path) -> bool:
    """An EXIF orientation other than 1: trainers may ignore it, so such files are written upright."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112, 1) not in (1, None)
    except OSError:
        return False


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _toml_str(s: str) -> str:
    return json.dumps(str(s), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def dataset_config(dest: Path, folders: dict[str, int], reps: dict[str, int], ids: list[Identity], settings: KohyaSettings) -> str:
    """sd-scripts --dataset_config: one DreamBooth-style subset per identity folder, captions in .txt."""
    keep = len([p for p in settings.caption_prefix.split(",") if p.strip()]) + 1  # prefix + trigger word stay first
    size = settings.sizing.target_size or 512
    lines = ["# written by idcluster (export.format=kohya); sd-scripts: --dataset_config dataset_config.toml",
             "[general]", 'caption_extension = ".txt"', "shuffle_caption = false", f"keep_tokens = {keep}", "",
             "[[datasets]]", f"resolution = {size}", "batch_size = 1",
             f"enable_bucket = {'false' if settings.sizing.square == 'pad' else 'true'}", ""]
    for ident in ids:
        folder = f"{reps[ident.identity]}_{_name(ident.name)}"
        if folder not in folders:
            continue
        lines += ["  [[datasets.subsets]]", f"  image_dir = {_toml_str(dest.resolve() / folder)}",
                  f"  num_repeats = {reps[ident.identity]}", f"  class_tokens = {_toml_str(ident.name)}", ""]
    return "\n".join(lines)
