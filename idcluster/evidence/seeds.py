"""seeds=path: a few images the user names guide the clustering (few-shot).

A seeds file is a CSV `relative_path,name` (paths relative to the input
folder, or to the CSV's own folder) or a folder `<name>/<images>`. Seeds are
matched to the input images by content (sha256), never by file name, so a
seeds folder may live outside the input. Seeds of one name are must-linked,
seeds of different names cannot-linked (a constraint source for every
clusterer, idcluster.clustering.constraints); faceless seeds place their image directly
(evidence `seed`, idcluster.evidence.instance) and then vote like any member.
"""

from __future__ import annotations

import csv
import logging
from itertools import combinations
from pathlib import Path

from .links import ImageLinks
from ..errors import ConfigError
from ..inputs.scan import scan_folder, sha256_file

log = logging.getLogger(__name__)


def read_seeds(path: str | Path, input_dir: str | Path) -> dict[str, str]:
    """sha256 of each seed image -> name."""
    p = Path(path).expanduser()
    if p.is_dir():
        pairs = []
        for rec in scan_folder(p):
            if "/" not in rec.rel_path:
                continue  # loose files at the top have no name
            if rec.sha256:
                pairs.append((rec.sha256, rec.rel_path.split("/")[0], rec.rel_path))
    elif p.is_file():
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"relative_path", "name"} <= set(rows[0]):
            raise ConfigError(f"seeds file needs the columns relative_path,name: {p}")
        pairs = []
        for r in rows:
            rel, name = (r["relative_path"] or "").strip(), (r["name"] or "").strip()
            if not rel or not name:
                continue
            hits = [c for c in (Path(input_dir).expanduser() / rel, p.parent / rel) if c.is_file()]
            if not hits:
                log.warning("seed %s (%s) not found in the input folder or beside %s: ignored", rel, name, p.name)
                continue
            pairs.append((sha256_file(hits[0]), name, rel))
    else:
        raise ConfigError(f"seeds={path}: no such file or folder (a CSV relative_path,name or a folder <name>/<images>)")
    names: dict[str, str] = {}
    for sha, name, rel in pairs:
        if names.setdefault(sha, name) != name:
            raise ConfigError(f"seed image {rel} is named both {names[sha]!r} and {name!r}")
    if not names:
        raise ConfigError(f"seeds={path} names no image")
    return names


class Seeds:
    """Constraint source over named seed images (see module docstring)."""

    def __init__(self, path: str | Path, input_dir: str | Path):
        self.path = str(path)
        self.by_content = read_seeds(path, input_dir)

    def links(self, records) -> ImageLinks:
        names = {i: self.by_content[r.sha256] for i, r in enumerate(records) if r.sha256 in self.by_content}
        if not names:
            log.warning("seeds=%s: none of its %d images is among the inputs", self.path, len(self.by_content))
        return ImageLinks(names=names)

    def __call__(self, records):
        from ..clustering.constraints import Constraints, rows_by_content

        rows = rows_by_content(records)
        by_name: dict[str, list[int]] = {}
        for r in records:
            name = self.by_content.get(r.sha256)
            row = rows.get((r.sha256, r.face_index)) if name is not None else None
            if row is not None:
                by_name.setdefault(name, []).append(row)
        # Every name is a must-link group, one seed alone included: seeds are exempt from
        # min_cluster_size and stay when a cannot-link splits a cluster.
        must = tuple(tuple(sorted(v)) for v in by_name.values())
        cannot = tuple((a, b) for x, y in combinations(sorted(by_name), 2) for a in by_name[x] for b in by_name[y])
        return Constraints(must_link=must, cannot_link=cannot)
