"""Make an output folder match a review state: identity folders, face crops and the JSON.

The folders and identity_clustering.json are a view of the journal's replay, rebuilt
idempotently after every action and on every open (so a crash anywhere leaves a
state the next open repairs). Names, folders, linking and the JSON go through
export.report. Files are only renamed, copied or removed inside the output folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .. import records as R
from ..evidence import decisions as D
from ..export.report import (FACES, NOISE, Linker, entry_folders, flat_name, identity_folders, identity_number,
                             regroup, review_fields)

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-review-"
REVIEW_NOISE = "review_noise"


def face_keys(img: dict) -> list[str]:
    """Keys of an image's clustered faces (the faces a review acts on)."""
    if not img.get("sha256"):
        return []
    return [D.face_key(img["sha256"], fc["face_index"]) for fc in img.get("face_clusters") or []]


def folder_names(state: D.State) -> dict[int, str]:
    """Live identity -> its folder (identity_NNN, identity_NNN_<name> once named)."""
    live = state.live_ids()
    return identity_folders(live, {i: state.identities[i].name for i in live if i in state.identities})


def faceless_identity(cluster: int, state: D.State) -> int:
    """Where an image placed without a clustered face (appearance, seeds, tracks) stands in the review
    state: the run's identity, followed through merges, while it lives; else noise."""
    for a in state.applied:
        if a.get("kind") == "merge" and cluster in a.get("from", ()):
            cluster = int(a["to"])
    return cluster if cluster in state.live_ids() else D.NOISE


def reviewed_report(report: dict, state: D.State, names: dict[int, str]) -> dict:
    """identity_clustering.json for the review state: every face's identity, each image's (its chosen
    face's), noise reasons, identity entries with their names and flags; members and counts regrouped."""
    rep = dict(report)
    images = []
    for img in report["images"]:
        img = dict(img)
        fcs = []
        for fc in img.get("face_clusters") or []:
            c = state.assign.get(D.face_key(img["sha256"], fc["face_index"]), D.NOISE)
            fcs.append({**fc, "cluster": c, "identity": names.get(c, NOISE)})  # other fields (pose) kept
        img["face_clusters"] = fcs
        chosen = next((fc for fc in fcs if fc["face_index"] == img.get("face_index")), None)
        if chosen is not None:
            img["cluster"], img["identity"] = chosen["cluster"], chosen["identity"]
            if chosen["cluster"] == D.NOISE and img.get("reason") in (None, R.CLUSTER_NOISE, REVIEW_NOISE):
                ran = state.ran.get(D.face_key(img["sha256"], img["face_index"]), D.NOISE)
                img["reason"], img["detail"] = ((REVIEW_NOISE, "moved to noise in review") if ran != D.NOISE
                                                else (R.CLUSTER_NOISE, "not close enough to any cluster"))
            elif chosen["cluster"] != D.NOISE and img.get("reason") in (R.CLUSTER_NOISE, REVIEW_NOISE):
                img["reason"] = img["detail"] = None
        elif img.get("sha256") in state.placed or img["cluster"] >= 0:
            c = faceless_identity(state.placed.get(img["sha256"], img["cluster"]), state)
            img["cluster"], img["identity"] = c, names.get(c, NOISE)
            if c == D.NOISE:
                img["reason"], img["detail"] = REVIEW_NOISE, "its identity was emptied in review"
            elif img.get("reason") == REVIEW_NOISE:
                img["reason"] = img["detail"] = None
        img["output"] = f"{entry_folders(img, names)[0]}/{flat_name(img['rel_path'])}"
        images.append(img)
    rep["images"] = images
    rep["clusters"] = [{"identity": folder, "cluster": i, "size": 0, "images": [],
                        **review_fields((state.identities.get(i) or D.Identity(i)).to_dict())}
                       for i, folder in sorted(names.items())]
    return regroup(rep)


def sync_folders(output_dir: Path, images: list[dict], names: dict[int, str], mode: str) -> None:
    """Identity folders and noise/ hold exactly the files `images` (reviewed entries) place there."""
    out = output_dir
    wanted = [entry_folders(img, names) for img in images]
    # 1. identity folders follow renames (matched by number); stale temp files go
    _rename_identity_dirs(out, names)
    for folder in {*names.values(), NOISE}:
        (out / folder).mkdir(exist_ok=True)
    present: dict[str, set[str]] = {}
    managed = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()
               and (identity_number(p.name) is not None or p.name == NOISE)]
    for d in managed:
        for f in os.listdir(d):
            if f.startswith(TMP_PREFIX):
                (d / f).unlink(missing_ok=True)
            else:
                present.setdefault(f, set()).add(d.name)
    link = Linker(mode)
    # 2. each image: move a copy it no longer needs, else copy one it has, else link the input
    for img, folders in zip(images, wanted):
        fname = flat_name(img["rel_path"])
        have = present.pop(fname, set())
        spare = sorted(have - set(folders))
        for folder in folders:
            if folder in have:
                continue
            dst = out / folder / fname
            if spare:
                os.rename(out / spare.pop() / fname, dst)
                continue
            fd, tmp = tempfile.mkstemp(dir=out / folder, prefix=TMP_PREFIX)
            os.close(fd)
            os.unlink(tmp)
            src = next((out / f / fname for f in sorted(have) if f in folders), None)
            try:
                if src is not None and not src.is_symlink():
                    shutil.copy2(src, tmp)
                else:
                    link(Path(img["path"]), Path(tmp))
                os.rename(tmp, dst)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                log.warning("could not place %s in %s: %s", img["rel_path"], folder, e.strerror or e)
        for folder in spare:
            (out / folder / fname).unlink(missing_ok=True)  # our own copy/link, never an input
    # 3. identities emptied by merges or moves disappear
    keep = set(names.values())
    for d in managed:
        if d.exists() and identity_number(d.name) is not None and d.name not in keep:
            try:
                d.rmdir()
            except OSError:
                log.warning("%s still holds files this review did not write: left in place", d)


def sync_face_crops(output_dir: Path, images: list[dict], names: dict[int, str]) -> None:
    """faces/<identity>/<stem>[_faceK].png (export.save_faces=true) follow their faces."""
    root = output_dir / FACES
    if not root.is_dir():
        return
    _rename_identity_dirs(root, names)
    want: dict[str, str] = {}
    for img in images:
        stem = Path(flat_name(img["rel_path"])).stem
        for fc in img.get("face_clusters") or []:
            suffix = "" if fc["face_index"] == img.get("face_index") else f"_face{fc['face_index']}"
            want[f"{stem}{suffix}.png"] = names.get(fc["cluster"], NOISE)
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
    for d in dirs:
        for f in os.listdir(d):
            target = want.get(f)
            if target and target != d.name:
                (root / target).mkdir(exist_ok=True)
                os.rename(d / f, root / target / f)
    for d in dirs:
        if identity_number(d.name) is not None and d.name not in names.values():
            try:
                d.rmdir()
            except OSError:
                pass


def _rename_identity_dirs(root: Path, names: dict[int, str]) -> None:
    """Identity folders follow renames (matched by their number)."""
    for p in root.iterdir():
        n = identity_number(p.name)
        if n is not None and p.is_dir() and not p.is_symlink():
            target = names.get(n)
            if target and target != p.name and not (root / target).exists():
                os.rename(p, root / target)
