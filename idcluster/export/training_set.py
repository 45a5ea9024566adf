"""export=kohya: the identity folders, then a training set for kohya-ss sd-scripts in export.dest.

Export formats sit side by side, one class + one YAML each (conf/export/<format>.yaml
names the class by `_target_`): `folders` (idcluster.export.folders.FoldersExport)
and this one, which reads identity_clustering.json (names and hidden identities from
review included) and writes through idcluster.export.kohya.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..errors import ConfigError, InputError
from .folders import FoldersExport
from .identities import identities
from .imaging import Sizing
from .kohya import KohyaSettings, export_kohya
from .report import read_report


class KohyaExport(FoldersExport):
    """conf/export/kohya.yaml: folders' keys plus the training set's (dest, sizes, captions, repeats)."""

    reads_report = True
    needs_pose = True  # captions and max_per_view name each image's view

    def __init__(self, format: str = "kohya", mode: str = "copy", save_faces: bool = False, overwrite: bool = False,
                 names: dict | None = None, dest: str | None = None, caption_prefix: str | None = "",
                 target_size: int | None = None, upscale: bool = True, square: str = "none", background: str = "keep",
                 repeats: int = 10, max_repeats: int = 100, max_per_view: int | None = None,
                 dataset_config: bool = False, caption_extension: str = ".txt", class_word: str | None = None,
                 reg_images: str | None = None):
        super().__init__(format, mode, save_faces, overwrite, names)
        self.dest = Path(dest).expanduser() if dest else None
        try:
            self.settings = KohyaSettings(
                sizing=Sizing(target_size, bool(upscale), str(square), str(background)),
                caption_prefix=str(caption_prefix or ""), repeats=repeats, max_repeats=max_repeats,
                max_per_view=max_per_view, dataset_config=bool(dataset_config), mode=self.mode,
                overwrite=self.overwrite, caption_extension=str(caption_extension),
                class_word=None if class_word is None else str(class_word),
                reg_images=Path(str(reg_images)).expanduser() if reg_images else None)
        except TypeError as err:
            raise ConfigError(f"bad export config: {err}") from None

    def write(self, output_dir: Path, pose=None, cache_dir: Path | None = None, progress: bool = True) -> dict:
        """The training set of output_dir's visible identities. Views come from the JSON (subcluster-pose),
        else are estimated now with `pose` (pose.views.PoseSettings) through the pose cache in cache_dir."""
        from ..cache.store import StageCache
        from ..pose.views import estimate_views

        output_dir = Path(output_dir)
        report = read_report(output_dir)
        ids = [i for i in identities(report, self.names) if not i.hidden]
        unknown = sorted(set(self.names) - {i.identity for i in identities(report)})
        if unknown:
            raise ConfigError(f"export.names names unknown identities: {', '.join(unknown)}")
        dest = self.dest or output_dir / "train"
        if dest.resolve() == output_dir.resolve():
            raise InputError("export.dest must differ from output_dir (e.g. export.dest=<output_dir>/train)")
        members = [m for i in ids for m in i.members]
        stored = report.get("pose") or {}
        if members and all("view" in m.entry.get("pose", {}) for m in members):
            views = {(m.identity, m.rel_path): m.entry["pose"]["view"] for m in members}
            centres = stored.get("kmeans", {}).get("centres", {})
        else:
            _, vs, centres = estimate_views(members, pose, StageCache(Path(cache_dir)), progress)
            views = {(m.identity, m.rel_path): v for m, v in zip(members, vs)}
        protected = [Path(report["input_dir"])] if report.get("input_dir") else []
        return export_kohya(ids, views, dest, self.settings, protected, centres, pose.bins)

    def summary(self, done: dict) -> str:
        """What was written, and how sd-scripts reads it (its default caption extension is .caption)."""
        lines = [f"wrote a {self.format} training set ({done['files']} images) to {done['dest']}"]
        if done.get("dataset_config"):
            lines.append(f"sd-scripts: --dataset_config {shlex.quote(str(done['dataset_config']))}   or: {done['flags']}")
        else:
            lines.append(f"sd-scripts: {done['flags']}")
        return "\n".join(lines)
