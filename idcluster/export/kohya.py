"""A kohya-ss sd-scripts training folder: `<repeats>_<name>/` with same-stem captions.

    train/
      10_woody/front__img1.png  10_woody/front__img1.txt   "prefix, woody, front view"
      20_buzz/...
      reg/1_person/...         (export.reg_images, with export.class_word) regularisation images
      manifest.csv             source path + sha256, identity, name, view, caption, output
      dataset_config.toml      (export.dataset_config=true) for sd-scripts --dataset_config
      .idcluster_export.json   the files this export wrote (and what each image was made from)

repeats = min(max_repeats, max(1, round(repeats * largest / count))): each
identity contributes about as many samples per epoch as the largest one.
With export.class_word=person a folder is `10_woody person` and captions name
`woody person` (sd-scripts' DreamBooth convention: identifier + class).
Sources are only read (or linked, per export.mode, when they need no change).
sd-scripts' own cache files beside the images (kohya_caches) are kept while
their image and caption are unchanged and removed once stale; they never make a
destination "foreign".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError, InputError
from ..inputs.scan import sha256_file
from .identities import Identity, Member
from .report import Linker, check_mode, flat_name, folder_name
from ..pose.estimate import Bins, nearest_bin
from .captions import caption
from .imaging import TRAINER_SUFFIXES, Sizing, open_image, prepare
from .kohya_caches import METADATA_CACHE, cache_stem, caches_in
from .kohya_config import DATASET_CONFIG, DEFAULT_RESOLUTION, keep_tokens, plan, toml_text, train_flags

log = logging.getLogger(__name__)

MARKER = ".idcluster_export.json"
MANIFEST = "manifest.csv"
MANIFEST_FIELDS = ("source_path", "source_sha256", "identity", "name", "view", "caption", "output_path", "repeats")
REG_DIR, REG_REPEATS, REG_IDENTITY = "reg", 1, "reg"
IMAGE_WRITER = "kohya-image-v1"  # what an image's content id depends on besides its source and sizing
# Names a caption file must not take: sd-scripts would read it as an image, or it is one of ours.
_NOT_CAPTIONS = TRAINER_SUFFIXES | {".npz", ".json", ".csv", ".toml"}


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
    caption_extension: str = ".txt"
    class_word: str | None = None
    reg_images: Path | None = None

    def __post_init__(self):
        check_mode(self.mode)
        for key in ("repeats", "max_repeats"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"export.{key} must be an integer >= 1, got {v!r}")
        if self.max_per_view is not None and (not isinstance(self.max_per_view, int) or self.max_per_view < 1):
            raise ConfigError(f"export.max_per_view must be an integer >= 1 or null, got {self.max_per_view!r}")
        ext = self.caption_extension
        if not (isinstance(ext, str) and len(ext) > 1 and ext.startswith(".") and folder_name(ext[1:]) == ext[1:]
                and "." not in ext[1:] and ext.lower() not in _NOT_CAPTIONS):
            raise ConfigError(f"export.caption_extension must be a file extension such as .txt or .caption "
                              f"(not an image's or idcluster's), got {ext!r}")
        if self.class_word is not None and not folder_name(self.class_word).strip():
            raise ConfigError(f"export.class_word must be a word such as person, got {self.class_word!r}")
        if self.reg_images is not None and self.class_word is None:
            raise ConfigError("export.reg_images needs export.class_word (the class the regularisation images show)")

    def token(self, name: str) -> str:
        """The identity's trigger in folder names and captions: its name, then the class word if any."""
        return f"{name} {self.class_word}" if self.class_word else name

    def content_id(self, sha256: str | None) -> str | None:
        """What an exported image is made from: its source's content, the sizing, this writer."""
        if not sha256:
            return None
        return hashlib.sha256(json.dumps([sha256, asdict(self.sizing), IMAGE_WRITER]).encode()).hexdigest()[:32]


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


# ---------------------------------------------------------------- what an earlier export wrote


@dataclass
class Earlier:
    """The marker of an earlier export in the destination."""

    files: set[str]  # every file it wrote (relative paths)
    images: dict[str, dict]  # image file -> {"content", "caption"}: what decides if sd-scripts' caches still hold
    data: dict  # the whole marker

    def image_stems(self) -> dict[str, set[str]]:
        """folder -> stems of the images written there."""
        out: dict[str, set[str]] = {}
        for rel in self.files:
            p = Path(rel)
            if p.suffix.lower() in TRAINER_SUFFIXES:
                out.setdefault(p.parent.as_posix(), set()).add(p.stem)
        return out


def read_marker(dest: Path) -> Earlier | None:
    """The earlier export in dest (None: no earlier export here)."""
    try:
        data = json.loads((dest / MARKER).read_text(encoding="utf-8"))
        return Earlier(set(data["files"]), dict(data.get("images") or {}), data)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{dest / MARKER} is damaged: remove it (and the folders it listed) or choose another export.dest") from None


def _kohyas(rel: Path, stems: dict[str, set[str]]) -> bool:
    """A file sd-scripts wrote beside the images an earlier export wrote."""
    folder = rel.parent.as_posix()
    if folder not in stems:
        return False
    return rel.name == METADATA_CACHE or cache_stem(rel.name, stems[folder]) is not None


def check_dest(dest: Path, protected: list[Path], overwrite: bool) -> Earlier:
    """Refuse a destination that overlaps the sources or holds files neither idcluster nor sd-scripts wrote."""
    d = dest.resolve()
    for p in protected:
        p = p.resolve()
        if d == p or p in d.parents or d in p.parents:
            raise InputError(f"export.dest={dest} overlaps {p}: choose a separate folder for the training set")
    if d.exists() and not d.is_dir():
        raise InputError(f"export.dest={dest} is a file, not a folder")
    before = read_marker(d) or Earlier(set(), {}, {})
    if d.is_dir():
        ours = before.files | {MARKER}
        stems = before.image_stems()
        foreign = sorted(str(p.relative_to(d)) for p in d.rglob("*") if (p.is_file() or p.is_symlink())
                         and str(p.relative_to(d)) not in ours and not _kohyas(p.relative_to(d), stems))
        if foreign:
            if not overwrite:
                raise InputError(f"export.dest={dest} holds {len(foreign)} file(s) idcluster did not write (e.g. {foreign[0]}): "
                                 "choose an empty folder, or add export.overwrite=true to write beside them")
            log.warning("export.dest=%s: keeping %d file(s) idcluster did not write (e.g. %s)", dest, len(foreign), foreign[0])
    return before


# ---------------------------------------------------------------- writing


def export_kohya(ids: list[Identity], views: dict[tuple[str, str], str], dest: Path, settings: KohyaSettings,
                 protected: list[Path] = (), centres: dict | None = None, bins: Bins = Bins()) -> dict:
    """Write the training folder for `ids` (hidden ones skipped); views[(identity, rel_path)] = view.

    Returns {"folders": {folder: count}, "repeats": {...}, "files": n, "dest", "dataset_config", "flags"}.
    """
    ids = [i for i in ids if not i.hidden and i.members]
    if not ids:
        raise InputError("no visible identity with members to export")
    folders_by_name: dict[str, str] = {}
    for ident in ids:
        key = _name(settings.token(ident.name)).casefold()
        if key in folders_by_name:
            raise InputError(f"{ident.identity} and {folders_by_name[key]} are both named {ident.name!r}: "
                             "give them different export.names (or merge them in review)")
        folders_by_name[key] = ident.identity
    reg = _reg_members(settings.reg_images) if settings.reg_images is not None else []
    protected = [*protected, *([settings.reg_images] if settings.reg_images is not None else [])]
    before = check_dest(dest, list(protected), settings.overwrite)

    chosen: dict[str, list[tuple[Member, str]]] = {}
    for ident in ids:
        vs = [views.get((ident.identity, m.rel_path), "no_face") for m in ident.members]
        chosen[ident.identity] = [(ident.members[i], vs[i]) for i in pick(ident.members, vs, settings.max_per_view)]
    reps = repeats_for({k: len(v) for k, v in chosen.items()}, settings.repeats, settings.max_repeats)

    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(dest, settings)
    rows, folders, subsets = [], {}, []
    for ident in ids:
        token = settings.token(ident.name)
        folder = f"{reps[ident.identity]}_{_name(token)}"
        n = 0
        for m, view in chosen[ident.identity]:
            text = caption(settings.caption_prefix, token, nearest_bin(view, centres or {}, bins))
            rel = writer.image(m, folder, text)
            if rel is None:
                continue
            n += 1
            rows.append({"source_path": m.path, "source_sha256": m.sha256 or "", "identity": ident.identity,
                         "name": ident.name, "view": view, "caption": text, "output_path": rel,
                         "repeats": reps[ident.identity]})
        if n:
            folders[folder] = n
            subsets.append({"folder": folder, "num_repeats": reps[ident.identity], "class_tokens": token,
                            "keep_tokens": keep_tokens(caption(settings.caption_prefix, token, None))})
    reg_folder = None
    if reg:
        reg_folder = f"{REG_DIR}/{REG_REPEATS}_{_name(settings.class_word)}"
        text = caption(settings.caption_prefix, settings.class_word, None)
        n = 0
        for m in reg:
            rel = writer.image(m, reg_folder, text)
            if rel is not None:
                n += 1
                rows.append({"source_path": m.path, "source_sha256": m.sha256 or "", "identity": REG_IDENTITY,
                             "name": settings.class_word, "view": "", "caption": text, "output_path": rel,
                             "repeats": REG_REPEATS})
        if n:
            folders[reg_folder] = n
            subsets.append({"folder": reg_folder, "num_repeats": REG_REPEATS, "class_tokens": settings.class_word,
                            "keep_tokens": keep_tokens(text), "is_reg": True})
        else:
            reg_folder = None

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    _atomic_text(dest / MANIFEST, buf.getvalue())
    written = writer.written | {MANIFEST}
    resolution = settings.sizing.target_size or DEFAULT_RESOLUTION
    the_plan = plan(resolution, settings.sizing.square != "pad", settings.caption_extension, subsets)
    config_path = None
    if settings.dataset_config:
        config_path = dest / DATASET_CONFIG
        _atomic_text(config_path, toml_text(dest, the_plan))
        written.add(DATASET_CONFIG)
    _drop_stale_caches(dest, before, writer.images)
    # Stale files of an earlier export (a renamed identity, a changed repeats count) go; nothing else.
    for rel in sorted(before.files - written):
        p = dest / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
        parent = p.parent
        while parent != dest and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    _atomic_text(dest / MARKER, json.dumps({"format": "kohya", "dest": str(dest.resolve()), "files": sorted(written),
                                            "images": writer.images, "dataset_config": the_plan,
                                            "reg_folder": reg_folder}, indent=1))
    return {"folders": folders, "repeats": {s["folder"]: s["num_repeats"] for s in subsets},
            "files": len(rows), "dest": dest, "dataset_config": config_path,
            "flags": train_flags(dest, the_plan, REG_DIR if reg_folder else None)}


class _Writer:
    """Writes images and their captions into folders of `dest`, remembering what it wrote."""

    def __init__(self, dest: Path, settings: KohyaSettings):
        self.dest, self.settings = dest, settings
        self.link = Linker(settings.mode)
        self.stems: dict[str, Counter] = {}
        self.written: set[str] = set()
        self.images: dict[str, dict] = {}  # image file -> {"content", "caption"}

    def image(self, m: Member, folder: str, text: str) -> str | None:
        """Write m's image and caption into folder; its path relative to dest (None: unreadable)."""
        (self.dest / folder).mkdir(parents=True, exist_ok=True)
        out = _write_image(m, self.dest / folder, self.stems.setdefault(folder, Counter()), self.settings, self.link)
        if out is None:
            return None
        rel = f"{folder}/{out.name}"
        cap_rel = f"{folder}/{out.stem}{self.settings.caption_extension}"
        _replace(self.dest / cap_rel)
        (self.dest / cap_rel).write_text(text + "\n", encoding="utf-8")
        self.written |= {rel, cap_rel}
        self.images[rel] = {"content": self.settings.content_id(m.sha256), "caption": text}
        return rel


def _drop_stale_caches(dest: Path, before: Earlier, now: dict[str, dict]) -> None:
    """Remove sd-scripts' caches whose image left, or was rewritten or recaptioned; keep the rest.
    A folder's metadata_cache.json goes when anything in that folder changed."""
    by_folder_now: dict[str, dict[str, str]] = {}
    for rel in now:
        p = Path(rel)
        by_folder_now.setdefault(p.parent.as_posix(), {})[p.stem] = rel
    stems_before = before.image_stems()
    for folder in set(by_folder_now) | set(stems_before):
        current = by_folder_now.get(folder, {})
        stems = set(current) | stems_before.get(folder, set())
        same_folder = all(now[r] == before.images.get(r) for r in current.values()) and \
            {r for r in before.images if Path(r).parent.as_posix() == folder} == set(current.values())
        for path, stem in caches_in(dest / folder, stems).items():
            if stem is None:
                stale = not same_folder
            else:
                rel = current.get(stem)
                stale = rel is None or now[rel]["content"] is None or now[rel] != before.images.get(rel)
            if stale:
                path.unlink()


def _reg_members(folder: Path) -> list[Member]:
    """The regularisation images of export.reg_images (every image file under it, sorted)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"export.reg_images={folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TRAINER_SUFFIXES | {".tif", ".tiff", ".gif"})
    if not paths:
        raise InputError(f"export.reg_images={folder} holds no image")
    return [Member(REG_IDENTITY, p.relative_to(folder).as_posix(), str(p), sha256_file(p), None, 0.0, {}) for p in paths]


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


# ---------------------------------------------------------------- after a move


def retarget(dest: Path) -> dict:
    """A training set moved to `dest`: rewrite its dataset_config.toml's image_dir paths for this place and
    drop sd-scripts' metadata_cache.json files (they hold the old absolute paths). Images stay as they are."""
    dest = Path(dest).expanduser().resolve()
    before = read_marker(dest)
    if before is None:
        raise InputError(f"{dest} holds no training set idcluster wrote (no {MARKER}): "
                         "give the folder the kohya export was moved to")
    the_plan = before.data.get("dataset_config")
    if the_plan is None:
        raise InputError(f"{dest / MARKER} was written by an older idcluster: export the training set again "
                         "(idcluster export ... export=kohya export.dest=...)")
    removed = 0
    for folder in before.image_stems():
        cache = dest / folder / METADATA_CACHE
        if cache.is_file():
            cache.unlink()
            removed += 1
    config_path = None
    if DATASET_CONFIG in before.files:
        config_path = dest / DATASET_CONFIG
        _atomic_text(config_path, toml_text(dest, the_plan))
    was = before.data.get("dest")
    _atomic_text(dest / MARKER, json.dumps({**before.data, "dest": str(dest)}, indent=1))
    return {"dest": dest, "was": was, "dataset_config": config_path, "metadata_caches_removed": removed,
            "flags": train_flags(dest, the_plan, REG_DIR if before.data.get("reg_folder") else None)}
