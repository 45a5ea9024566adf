"""THE reader and writer of an output folder: identity_clustering.json and the identity folder layout.

Every command that reads or changes an output (cluster, add, export, subcluster-pose,
review) goes through here:

- the JSON: `read_report` (checks `format_version` and the keys everything reads),
  `write_report` (atomic), `build_report` (from a clustering), `regroup` (members,
  noise and counts again after images changed identity);
- the layout: identity folder names (`identity_NNN`, `identity_NNN_<name>` once named;
  one sanitizer, `folder_name`, for every folder named after a user's name), the
  folders an image goes to, file names (`flat_name`) and placing files (`Linker`:
  copy, hard link or symlink; inputs are never moved);
- identity numbers that hold across runs (`stable_numbers`: a re-run keeps the number of the
  previous output's identity whose members it shares; new identities take numbers never used
  in that folder, `NEXT_NUMBER`);
- the folder's marker (`MARKER_NAME`: idcluster wrote this output) and the files a re-run may
  replace without asking (`foreign_files`: anything else inside those folders stops it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..errors import InputError
from ..records import ImageRecord

log = logging.getLogger(__name__)

JSON_NAME = "identity_clustering.json"
FORMAT_VERSION = 1
NOISE, FACES = "noise", "faces"
MODES = ("copy", "hardlink", "symlink")
IDENTITY_DIR = re.compile(r"^identity_(\d{3,})(_.*)?$")  # identity_NNN, identity_NNN_<name>
NEXT_NUMBER = "next_identity"  # report key: the number the next new identity of this folder takes
MARKER_NAME = ".idcluster_output.json"  # "idcluster wrote this folder": re-runs replace its export without asking
# Files an OS drops into folders a user browsed; a re-run may remove them with the folder.
OS_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
MAX_NAME = 60  # characters of a user's name in a folder name: 60 x 4 UTF-8 bytes + prefix < 255 bytes
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')  # what no OS allows in a folder name, path separators included
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")  # Windows drops trailing dots and spaces; leading ones hide folders


# ---------------------------------------------------------------- the JSON


def read_report(output_dir: str | Path) -> dict:
    """The clustering in output_dir; one InputError line when it is missing, unreadable or of
    another format_version."""
    path = Path(output_dir) / JSON_NAME
    if not path.is_file():
        raise InputError(f"no earlier export in {output_dir}: no {JSON_NAME} ({path} not found); "
                         f"run `idcluster cluster input_dir=... output_dir={output_dir}` first")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not an idcluster clustering file ({type(e).__name__}: {e}): "
                         "re-run `idcluster cluster`") from None
    if not isinstance(report, dict):
        raise InputError(f"{path} is not an idcluster clustering file (not a JSON object): re-run `idcluster cluster`")
    if report.get("format_version") != FORMAT_VERSION:
        found = f"format_version {report['format_version']!r}" if "format_version" in report else "no format_version"
        raise InputError(f"{path} has {found}, this idcluster reads format_version {FORMAT_VERSION}: "
                         "re-run `idcluster cluster` with this idcluster (or use the version that wrote it)")
    if not isinstance(report.get("clusters"), list) or not isinstance(report.get("images"), list):
        raise InputError(f"{path} is not an idcluster clustering file (no clusters or images list): re-run `idcluster cluster`")
    return report


def write_report(output_dir: str | Path, report: dict, compact: bool = False) -> Path:
    """Replace output_dir's JSON atomically (temp file + rename: readers see the old or the new one).
    compact: no indentation, written by the C encoder (~10x faster on 10k-image reports)."""
    if report.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"refusing to write a report of format_version {report.get('format_version')!r}")
    path = Path(output_dir) / JSON_NAME
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(report, indent=None if compact else 2, default=_json_default))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def statistics(result) -> dict:
    recs = result.records
    reasons = Counter(r.reason for r in recs if r.reason and r.label < 0)
    n_clusters = len(record_labels(recs))
    return {
        "images": len(recs),
        "images_with_face": sum(1 for r in recs if r.face_index is not None),
        "embedded": sum(1 for r in recs if r.embedding_row is not None),
        "clustered": sum(1 for r in recs if r.label >= 0),
        "noise": sum(1 for r in recs if r.label < 0),
        "identities": n_clusters,
        "noise_reasons": dict(reasons.most_common()),
        "evidence": dict(Counter(r.evidence for r in recs if r.label >= 0 and r.evidence).most_common()),
        "computed": dict(result.computed),
        "timings_s": {k: round(v, 4) for k, v in result.timings.items()},
    }


def image_entry(r: ImageRecord, names: list[str] | dict[int, str]) -> dict:
    """One record as an entry of "images"; `names`: cluster -> identity folder."""
    face = r.face
    return {
        "path": r.path,
        "rel_path": r.rel_path,
        "sha256": r.sha256,
        "size_bytes": r.size,
        "width": r.width,
        "height": r.height,
        "faces_detected": len(r.faces),
        "face_index": r.face_index,
        "face": None if face is None else face.to_dict(),
        "blur": None if r.blur is None else round(r.blur, 2),
        "cluster": r.label,
        "identity": names[r.label] if r.label >= 0 else NOISE,
        "probability": round(r.probability, 4),
        "evidence": r.evidence,
        "evidence_score": r.evidence_score,
        "links": r.links,
        "reason": r.reason,
        "detail": r.detail,
        "output": output_path(r, names),
        "face_clusters": [
            {"face_index": k, "cluster": c, "identity": names[c] if c >= 0 else NOISE}
            for k, c in sorted(r.face_labels.items())
        ],
        "faces": [f.to_dict() for f in r.faces],
    }


def build_report(result, config: dict, models: dict, input_dir, output_dir,
                 meta: dict[int, dict] | None = None, next_number_after: int = 0) -> dict:
    """The JSON of a clustering (`result`: pipeline.stages.Result; its labels are identity numbers,
    see stable_numbers). `meta`: cluster -> {"name", "hidden", "reviewed"} carried over from review
    decisions; next_number_after: the folder's next new number before this run (never reused)."""
    stats = statistics(result)
    meta = meta or {}
    labels = record_labels(result.records)
    names = identity_folders(labels, {i: m.get("name") for i, m in meta.items()})
    report = {
        "format_version": FORMAT_VERSION,
        "idcluster_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "config": config,
        "models": models,
        "cache_keys": result.keys,
        # The estimator that partitioned the faces (the configured one, or its large-set stand-in).
        "clusterer_ran": result.clusterer_ran,
        "clusters": [{"identity": names[i], "cluster": i, "size": 0, "images": [], **review_fields(meta.get(i))}
                     for i in labels],
        "noise": {},
        "statistics": stats,
        "images": [image_entry(r, names) for r in result.records],
    }
    report[NEXT_NUMBER] = max(next_number_after, max(labels, default=-1) + 1)
    return regroup(report)


def review_fields(m: dict | None) -> dict:
    """Optional fields of a clusters entry: "name" (user-given), "hidden": true, "reviewed": true."""
    if not m:
        return {}
    out = {"name": m["name"]} if m.get("name") else {}
    if m.get("hidden"):
        out["hidden"] = True
    if m.get("reviewed"):
        out["reviewed"] = True
    return out


def regroup(report: dict) -> dict:
    """Recompute, in place, what follows from the images: each identity's members and size (entries
    in cluster order, their other fields kept), noise/ and the statistics' counts.

    report["clusters"] holds one entry per identity ({"identity", "cluster", ...}); an image is a
    member of every folder `entry_folders` gives it.
    """
    clusters = sorted(report["clusters"], key=lambda c: c["cluster"])
    names = {c["cluster"]: c["identity"] for c in clusters}
    members: dict[str, list[str]] = {}
    for img in report["images"]:
        for folder in entry_folders(img, names):
            members.setdefault(folder, []).append(img["rel_path"])
    for c in clusters:
        imgs = members.get(c["identity"], [])
        c["size"], c["images"] = len(imgs), imgs
    images = report["images"]
    reasons = Counter(img["reason"] for img in images if img["cluster"] < 0 and img.get("reason"))
    noise = members.get(NOISE, [])
    report["clusters"] = clusters
    report["noise"] = {"size": len(noise), "reasons": dict(reasons.most_common()), "images": noise}
    stats = report["statistics"] = dict(report.get("statistics") or {})
    stats.update(images=len(images), clustered=sum(img["cluster"] >= 0 for img in images),
                 noise=sum(img["cluster"] < 0 for img in images), identities=len(clusters),
                 noise_reasons=dict(reasons.most_common()))
    return report


# ---------------------------------------------------------------- names


def folder_name(name) -> str:
    """A user's name as (part of) a folder name on every OS: path separators and reserved characters
    become '_', no leading or trailing dots or spaces, at most MAX_NAME characters ('' if nothing is left)."""
    return _EDGES.sub("", _UNSAFE.sub("_", str(name))[:MAX_NAME])


def identity_folder(cluster: int, width: int, name: str | None = None) -> str:
    """identity_NNN, or identity_NNN_<name> once named (its words joined by '_', like the prefix)."""
    base = f"identity_{cluster:0{width}d}"
    suffix = re.sub(r"\s+", "_", folder_name(name)) if name else ""
    return f"{base}_{suffix}" if suffix else base


def identity_width(clusters: Iterable[int]) -> int:
    """Digits of identity numbers: at least 3, more past identity_999."""
    return max(3, len(str(max(clusters, default=0))))


def identity_folders(clusters: Iterable[int], names: dict[int, str | None] | None = None) -> dict[int, str]:
    """cluster -> folder for these clusters, numbered at one width; `names`: cluster -> user-given name."""
    clusters = sorted(clusters)
    width = identity_width(clusters)
    names = names or {}
    return {c: identity_folder(c, width, names.get(c)) for c in clusters}


def identity_names(n_clusters: int, meta: dict[int, dict] | None = None) -> list[str]:
    """Folder of each cluster 0..n-1; `meta` (cluster -> {"name", ...}, from review decisions) adds names."""
    meta = meta or {}
    folders = identity_folders(range(n_clusters), {i: m.get("name") for i, m in meta.items()})
    return [folders[i] for i in range(n_clusters)]


def record_labels(records: Iterable[ImageRecord]) -> list[int]:
    """The identities (cluster labels >= 0) the records are placed in, sorted."""
    found = set()
    for r in records:
        if r.label >= 0:
            found.add(r.label)
        found.update(c for c in r.face_labels.values() if c >= 0)
    return sorted(found)


def identity_number(folder: str) -> int | None:
    """The cluster number of an identity folder (named or not); None for any other folder."""
    m = IDENTITY_DIR.match(folder)
    return int(m.group(1)) if m else None


def flat_name(rel_path: str) -> str:
    """Unique file name for an input path: sub/dir/img.jpg -> sub__dir__img.jpg."""
    return rel_path.replace("/", "__")


def placed(cluster: int, face_clusters: Iterable[int]) -> list[int]:
    """The identities an image is in: its chosen face's first, then those of its other clustered
    faces (faces.select=all puts a group photo in each of its people's folders)."""
    return [c for c in [cluster, *sorted(set(face_clusters) - {cluster})] if c >= 0]


def record_folders(rec: ImageRecord, names: list[str] | dict[int, str]) -> list[str]:
    """Folders of a record, noise/ when it is in no identity."""
    return [names[c] for c in placed(rec.label, rec.face_labels.values())] or [NOISE]


def entry_folders(img: dict, names: dict[int, str]) -> list[str]:
    """Folders of an "images" entry (the same rule as record_folders); clusters without a folder are skipped."""
    faces = (fc["cluster"] for fc in img.get("face_clusters") or [])
    return [names[c] for c in placed(img["cluster"], faces) if c in names] or [NOISE]


def output_path(rec: ImageRecord, names: list[str] | dict[int, str]) -> str:
    return f"{record_folders(rec, names)[0]}/{flat_name(rec.rel_path)}"


# ---------------------------------------------------------------- stable identity numbers


def content_key(sha256: str, face_index: int | None) -> str:
    """A membership by content: `<sha256>:<face index>`, `<sha256>:image` for an image placed without
    a clustered face (appearance, seeds, tracks). Review decisions use the same face keys."""
    return f"{sha256}:{'image' if face_index is None else face_index}"


def report_memberships(report: dict) -> dict[str, int]:
    """Content key -> identity number of every membership in an output's JSON."""
    out: dict[str, int] = {}
    for img in report.get("images") or []:
        sha = img.get("sha256")
        if not sha:
            continue
        faces = {int(fc["face_index"]): int(fc["cluster"]) for fc in img.get("face_clusters") or []
                 if fc.get("face_index") is not None}
        for k, c in faces.items():
            if c >= 0:
                out[content_key(sha, k)] = c
        cluster = int(img.get("cluster", -1))
        if cluster >= 0 and cluster not in faces.values():
            out[content_key(sha, None)] = cluster
    return out


def record_memberships(records: Iterable[ImageRecord]) -> dict[str, int]:
    """Content key -> cluster label of every membership of a clustering (the same keys as report_memberships)."""
    out: dict[str, int] = {}
    for r in records:
        if not r.sha256:
            continue
        for k, c in r.face_labels.items():
            if c >= 0:
                out[content_key(r.sha256, k)] = c
        if r.label >= 0 and r.label not in r.face_labels.values():
            out[content_key(r.sha256, None)] = r.label
    return out


def next_number(report: dict | None) -> int:
    """The number a new identity of this output takes: past every number it has used."""
    if not report:
        return 0
    used = [int(c["cluster"]) for c in report.get("clusters") or [] if isinstance(c, dict) and "cluster" in c]
    return max([int(report.get(NEXT_NUMBER) or 0), *(n + 1 for n in used)])


def stable_numbers(previous: dict | None, records: list[ImageRecord]) -> tuple[dict[int, int], int]:
    """Cluster label -> identity number for this clustering, and the folder's next number before it.

    A cluster keeps the number of the previous output's identity it shares the most members
    (content keys) with, one to one, largest overlaps first: a re-run, added images, another
    clusterer or a review in between leave each person's number (and so `export.names`, notes and
    scripts) where it was. Clusters sharing nobody with a still unmatched identity take new
    numbers, past every number the folder used (a retired number never comes back as someone
    else), in label order (largest first). No previous output, or one sharing no member:
    numbers are the labels.
    """
    labels = record_labels(records)
    if not previous:
        return {c: c for c in labels}, 0
    before = report_memberships(previous)
    overlap = Counter((label, before[key]) for key, label in record_memberships(records).items() if key in before)
    if not overlap:
        return {c: c for c in labels}, 0
    numbers: dict[int, int] = {}
    taken: set[int] = set()
    for (label, number), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if label not in numbers and number not in taken:
            numbers[label] = number
            taken.add(number)
    start = nxt = next_number(previous)
    for label in labels:
        if label not in numbers:
            numbers[label], nxt = nxt, nxt + 1
    return numbers, start


def renumber(records: list[ImageRecord], numbers: dict[int, int]) -> None:
    """Give every record's identity (its chosen face's and each face's) its number, in place."""
    for r in records:
        if r.label >= 0:
            r.label = numbers[r.label]
        r.face_labels = {k: (numbers[c] if c >= 0 else c) for k, c in r.face_labels.items()}


# ---------------------------------------------------------------- the marker and what a re-run may replace


def write_marker(output_dir: str | Path) -> Path:
    """Mark output_dir as written by idcluster (a later run replaces its export without asking)."""
    path = Path(output_dir) / MARKER_NAME
    tmp = path.with_name(f".tmp-{MARKER_NAME}")
    tmp.write_text(json.dumps({"written_by": "idcluster", "idcluster_version": __version__,
                               "note": "idcluster's output folder: a re-run replaces identity_*/, noise/, faces/ "
                                       f"and {JSON_NAME}, and stops if they hold files idcluster did not write"},
                              indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def has_marker(output_dir: str | Path) -> bool:
    return (Path(output_dir) / MARKER_NAME).is_file()


def owned_names(report: dict) -> tuple[set[str], set[str]]:
    """File names idcluster puts in identity/noise folders (and their view folders), and in faces/<folder>/."""
    files, crops = set(), set()
    for img in report.get("images") or []:
        rel = img.get("rel_path")
        if not isinstance(rel, str):
            continue
        name = flat_name(rel)
        files.add(name)
        if isinstance(img.get("output"), str):
            files.add(Path(img["output"]).name)  # `add` renames a same-named newcomer: name__<sha8>.ext
        if img.get("sha256"):
            files.add(f"{Path(name).stem}__{img['sha256'][:8]}{Path(name).suffix}")
        stem = Path(name).stem
        crops.add(f"{stem}.png")
        crops.update(f"{stem}_face{fc['face_index']}.png" for fc in img.get("face_clusters") or [] if "face_index" in fc)
    return files, crops


def foreign_files(folders: Iterable[Path], report: dict | None) -> list[str]:
    """Files inside `folders` (an earlier export's identity_*/, noise/, faces/) that no idcluster
    command put there: what a re-run must not delete without being told (paths relative to the
    output folder). Without a readable report nothing can be vouched for."""
    files, crops = owned_names(report) if report else (set(), set())
    found = []
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        names = crops if folder.name == FACES else files
        for p in sorted(folder.rglob("*")):
            if p.is_dir() and not p.is_symlink():
                continue
            if p.name in names or p.name in OS_LITTER or p.name.startswith(".tmp-"):
                continue
            found.append(str(p.relative_to(folder.parent)))
    return found


# ---------------------------------------------------------------- placing files


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"export.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class Linker:
    """Put a copy, hard link or symlink of `src` at `dst` (export.mode); a failed hard link
    (another file system) falls back to copying, once, with a warning."""

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
            os.symlink(Path(src).resolve(), dst)
            return
        shutil.copy2(src, dst)
