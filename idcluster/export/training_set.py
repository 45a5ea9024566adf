"""Export formats side by side, each a small writer over the same records.

- `folders` (default): identity_NNN/ and noise/ in output_dir (idcluster.export.folders), re-materialised
  from the cached clustering.
- `kohya`: a training set for kohya-ss sd-scripts in export.dest (idcluster.export.kohya), read
  from identity_clustering.json (names and hidden identities from review included).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, InputError
from .identities import identities
from .imaging import Sizing
from .kohya import KohyaSettings, export_kohya
from .report import read_report

FORMATS = ("folders", "kohya")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"export.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def kohya_settings(cfg: DictConfig) -> KohyaSettings:
    e = cfg.export
    try:
        return KohyaSettings(
            sizing=Sizing(e.target_size, bool(e.upscale), str(e.square), str(e.background)),
            caption_prefix=str(e.caption_prefix or ""), repeats=e.repeats, max_repeats=e.max_repeats,
            max_per_view=e.max_per_view, dataset_config=bool(e.dataset_config), mode=str(e.mode),
            overwrite=bool(e.overwrite))
    except TypeError as err:
        raise ConfigError(f"bad export config: {err}") from None


def training_set(cfg: DictConfig, progress: bool = True) -> dict:
    """export.format=kohya: views from the JSON (subcluster-pose), else estimated now (pose cache)."""
    from ..cache.store import StageCache
    from ..pose.views import PoseSettings, estimate_views

    settings = kohya_settings(cfg)
    output_dir = Path(cfg.output_dir).expanduser()
    report = read_report(output_dir)
    names = OmegaConf.to_container(cfg.export.names) or {}
    ids = [i for i in identities(report, names) if not i.hidden]
    unknown = sorted(set(names) - {i.identity for i in identities(report)})
    if unknown:
        raise ConfigError(f"export.names names unknown identities: {', '.join(unknown)}")
    dest = Path(cfg.export.dest).expanduser() if cfg.export.dest else output_dir / "train"
    if dest.resolve() == output_dir.resolve():
        raise InputError("export.dest must differ from output_dir (e.g. export.dest=<output_dir>/train)")
    members = [m for i in ids for m in i.members]
    stored = report.get("pose") or {}
    if members and all("view" in m.entry.get("pose", {}) for m in members):
        views = {(m.identity, m.rel_path): m.entry["pose"]["view"] for m in members}
        centres = stored.get("kmeans", {}).get("centres", {})
    else:
        pose = PoseSettings.from_config(cfg)
        _, vs, centres = estimate_views(members, pose, StageCache(Path(cfg.cache_dir).expanduser()), progress)
        views = {(m.identity, m.rel_path): v for m, v in zip(members, vs)}
    protected = [Path(report["input_dir"])] if report.get("input_dir") else []
    return export_kohya(ids, views, dest, settings, protected, centres, PoseSettings.from_config(cfg).bins)
