"""subcluster-pose: split each identity of a clustering into view folders.

Reads identity_clustering.json (the source of truth), estimates the pose of
each member's face through the pose cache, assigns views (bins or kmeans),
writes `<root>/<identity>/<view>/` by copy or link (never moving), records the
pose per image in the JSON and draws a contact sheet per identity.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Mapping

from . import estimate as P
from ..cache.store import StageCache
from ..errors import ConfigError, InputError
from ..export.identities import Identity, Member, identities, select
from ..export.locking import output_lock
from ..export.report import JSON_NAME, Linker, flat_name, read_report, write_report
from ..progress import stage_bar

log = logging.getLogger(__name__)

SHEETS = "contact_sheets"
_VIEW_DIR = re.compile(r"^(%s|%s|pose_\d+)$" % ("|".join(P.VIEWS), P.NO_FACE))


class PoseSettings:
    """conf/pose/<option>.yaml, built by Hydra from its `_target_` (keys as in the YAML): the estimator,
    the view method (bins | kmeans) with its parameters, and where subcluster-pose writes."""

    def __init__(self, landmarks: str = P.DLIB68, max_error: float = 0.12, predictor_path: str | None = None,
                 method: str = "bins", bins: Mapping | None = None, kmeans: Mapping | None = None,
                 output_dir: str | None = None):
        try:
            self.estimator = P.PoseEstimator(str(landmarks), float(max_error), predictor_path)
            self.bins = P.Bins(**{str(k): float(v) for k, v in (bins or {}).items()})
            km = dict(kmeans or {})
            self.n_clusters, self.seed = int(km.pop("n_clusters", 5)), int(km.pop("seed", 0))
        except (TypeError, ValueError) as e:  # a value that is no number, an unknown bins key
            raise ConfigError(f"bad pose config: {e}") from None
        if km:
            raise ConfigError(f"bad pose config: unknown pose.kmeans key(s) {', '.join(sorted(km))}")
        self.method = P.check_method(str(method))
        self.output_dir = Path(str(output_dir)).expanduser() if output_dir else None

    def describe(self, centres: dict) -> dict:
        d = {"method": self.method, "landmarks": self.estimator.landmarks, "estimator": self.estimator.model_id}
        if self.method == "bins":
            d["bins"] = {"front": self.bins.front, "three_quarter": self.bins.three_quarter, "pitch": self.bins.pitch}
        else:
            d["kmeans"] = {"n_clusters": self.n_clusters, "seed": self.seed, "centres": centres}
        return d


def estimate_views(members: list[Member], settings: PoseSettings, cache: StageCache, progress: bool = True
                   ) -> tuple[list[P.Pose | None], list[str], dict]:
    """Pose and view of every member (faceless or unreadable -> no_face); kmeans centres."""
    P.check_method(settings.method)
    with_face = [i for i, m in enumerate(members) if m.face is not None and m.sha256]
    items = [(members[i].path, members[i].sha256, members[i].face) for i in with_face]
    with stage_bar("pose", len(items), progress) as bar:
        found = P.estimate_cached(items, settings.estimator, cache, progress=bar.advance)
    poses: list[P.Pose | None] = [None] * len(members)
    for n, i in enumerate(with_face):
        poses[i] = found[n]
    views, centres = P.assign_views(poses, settings.method, settings.bins, settings.n_clusters, settings.seed)
    return poses, views, centres


def record(member: Member, pose: P.Pose | None, view: str, method: str) -> None:
    """Pose and view of a membership, on its JSON entry (the image, or its face_clusters item)."""
    entry = {"view": view, "method": method}
    if pose is not None:
        entry.update(pose.to_dict())
    member.entry["pose"] = entry


def clear_views(identity_dir: Path) -> None:
    """Remove view folders an earlier split wrote (only folders with view names, only inside identity_dir)."""
    if not identity_dir.is_dir():
        return
    for p in identity_dir.iterdir():
        if p.is_dir() and not p.is_symlink() and _VIEW_DIR.match(p.name):
            shutil.rmtree(p)


def subcluster_pose(output_dir: Path, settings: PoseSettings, cache_dir: Path, mode: str = "copy",
                    names: dict | None = None, identity: str | None = None, progress: bool = True) -> dict:
    """Split identities by view (holding output_dir's lock); see _split. `names`: export.names."""
    output_dir = Path(output_dir)
    read_report(output_dir)  # a missing clustering is an error before the lock creates output_dir
    with output_lock(output_dir, "subcluster-pose"):
        return _split(output_dir, settings, cache_dir, mode, names, identity, progress)


def _split(output_dir: Path, settings: PoseSettings, cache_dir: Path, mode: str, names: dict | None,
           identity: str | None, progress: bool) -> dict:
    """Returns {"views": {identity: {view: count}}, "sheets", "centres", "root"}; views also go into the JSON."""
    report = read_report(output_dir)
    link = Linker(mode)
    chosen = select(identities(report, names), identity)
    if not chosen:
        raise InputError(f"{output_dir / JSON_NAME} has no visible identity to split")
    if identity is not None and not any(m.face is not None for m in chosen[0].members):
        raise InputError(f"{identity} has no member with a detected face: nothing to split by pose")
    members = [m for ident in chosen for m in ident.members]
    if not any(m.face is not None for m in members):
        raise InputError(f"no identity in {output_dir / JSON_NAME} has a member with a face")
    root = settings.output_dir or output_dir
    input_dir = Path(report.get("input_dir") or "").resolve()
    if report.get("input_dir") and (root.resolve() == input_dir or input_dir in root.resolve().parents):
        raise InputError(f"pose.output_dir={root} lies inside the input folder {input_dir}: choose another folder")

    poses, views, centres = estimate_views(members, settings, StageCache(Path(cache_dir)), progress)
    counts: dict[str, Counter] = {}
    by_view: dict[str, dict[str, list]] = {}
    for ident in chosen:
        clear_views(root / ident.identity)
    for m, pose, view in zip(members, poses, views):
        record(m, pose, view, settings.method)
        counts.setdefault(m.identity, Counter())[view] += 1
        by_view.setdefault(m.identity, {}).setdefault(view, []).append((m.path, list(m.face.box) if m.face else None))
        folder = root / m.identity / view
        folder.mkdir(parents=True, exist_ok=True)
        try:
            link(Path(m.path), folder / flat_name(m.rel_path))
        except OSError as e:
            log.warning("could not write %s: %s", folder / flat_name(m.rel_path), e.strerror or e)

    table = {ident.identity: dict(sorted(counts.get(ident.identity, {}).items(), key=lambda kv: view_order(kv[0])))
             for ident in chosen}
    summary = report.get("pose") or {}
    summary.update(settings.describe(centres))
    summary["output_dir"] = str(root.resolve())
    summary.setdefault("views", {}).update(table)
    report["pose"] = summary
    sheets = write_view_sheets(chosen, by_view, root / SHEETS)
    summary["contact_sheets"] = [str(p) for p in sheets]
    write_report(output_dir, report)
    return {"views": table, "sheets": sheets, "centres": centres, "root": root}


def view_order(view: str) -> tuple:
    order = ("front", "three_quarter_left", "three_quarter_right", "profile_left", "profile_right", "up", "down")
    if view in order:
        return (0, order.index(view), view)
    return (1 if view != P.NO_FACE else 2, 0, view)


def write_view_sheets(chosen: list[Identity], by_view: dict, folder: Path) -> list[Path]:
    from ..export.contact_sheet import view_sheet

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ident in chosen:
        views = by_view.get(ident.identity, {})
        ordered = {v: views[v] for v in sorted(views, key=view_order)}
        try:
            out.append(view_sheet(ident.name, ordered, folder / f"{ident.identity}.png"))
        except (OSError, ValueError) as e:
            log.warning("could not draw the view sheet of %s: %s", ident.identity, e)
    return out
