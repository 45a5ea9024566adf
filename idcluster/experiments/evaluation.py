"""Scoring a run against labelled sets (`<set>/<identity>/<image>` + labels.csv).

Used by scripts/eval_quality.py and the tests. Several sets can be clustered
together (e.g. LFW identities + single-photo distractors): their files are
symlinked into one temporary input folder, never copied into the project.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from .metrics import noise_as_singletons, score


def read_labels(set_dir: Path) -> dict[str, str]:
    """relative_path -> identity from labels.csv, else from `<identity>/<file>` folders."""
    labels_csv = set_dir / "labels.csv"
    if labels_csv.is_file():
        with open(labels_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "relative_path" in rows[0]:
            return {r["relative_path"]: r["identity"] for r in rows}
    out = {}
    for d in sorted(p for p in set_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for f in sorted(d.iterdir()):
            if f.is_file():
                out[f"{d.name}/{f.name}"] = d.name
    return out


def check_labels(labels: str) -> None:
    """The `labels=` option names `folders` or an existing file (checked before any work)."""
    from ..errors import ConfigError

    if labels != "folders" and not Path(labels).expanduser().is_file():
        raise ConfigError(f"labels must be 'folders' or a labels.csv path; not found: {Path(labels).expanduser()}")


def ground_truth(labels: str, records) -> dict[str, tuple[str, str]]:
    """The `labels=` option: a labels.csv path (relative_path,identity) or `folders`
    (each input's first folder is its identity). Returns rel path -> ("", identity)."""
    from ..errors import ConfigError

    check_labels(labels)
    if labels == "folders":
        return {r.rel_path: ("", r.rel_path.split("/")[0]) for r in records if "/" in r.rel_path}
    path = Path(labels).expanduser()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"relative_path", "identity"} <= set(rows[0]):
        raise ConfigError(f"labels file needs the columns relative_path,identity: {path}")
    return {r["relative_path"]: ("", r["identity"]) for r in rows}


def split_identities(labels: dict[str, str], part: str) -> dict[str, str]:
    """A deterministic identity-disjoint split: 'even' / 'odd' positions in the sorted names, or 'all'."""
    if part == "all":
        return labels
    names = sorted(set(labels.values()))
    keep = set(names[{"even": 0, "odd": 1}[part]::2])
    return {rel: ident for rel, ident in labels.items() if ident in keep}


def link_sets(set_dirs: list[Path], dest: Path, part: str = "all") -> dict[str, tuple[str, str]]:
    """Symlink the labelled files of several sets under dest/<set>/...; rel path -> (set, identity).

    `part` keeps an identity-disjoint half (see split_identities), e.g. a dev split for calibration.
    """
    truth = {}
    for set_dir in set_dirs:
        for rel, identity in split_identities(read_labels(set_dir), part).items():
            link = dest / set_dir.name / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink((set_dir / rel).resolve(), link)
            truth[f"{set_dir.name}/{rel}"] = (set_dir.name, f"{set_dir.name}:{identity}")
    return truth


def evaluate(records, truth: dict[str, tuple[str, str]], distractor_sets: tuple[str, ...] = ()) -> dict:
    """Metrics over every labelled image; noise and faceless images count as singletons."""
    recs = [r for r in records if r.rel_path in truth]
    y_true = [truth[r.rel_path][1] for r in recs]
    y_pred = np.array([r.label for r in recs])
    m = score(y_true, y_pred)
    singles = noise_as_singletons(y_pred)
    m["nmi"] = float(normalized_mutual_info_score(y_true, singles))
    m["ari"] = float(adjusted_rand_score(y_true, singles))
    m["images"] = len(recs)
    m["face_share"] = sum(r.face_index is not None for r in recs) / max(len(recs), 1)
    m["noise_share"] = float((y_pred < 0).mean()) if len(recs) else 0.0
    m["identities_true"] = len({t for (s, t) in (truth[r.rel_path] for r in recs) if s not in distractor_sets})
    m["identities_found"] = int(len(set(y_pred[y_pred >= 0].tolist())))

    by_true: dict[str, Counter] = defaultdict(Counter)
    by_cluster: dict[int, Counter] = defaultdict(Counter)
    for t, p in zip(y_true, y_pred.tolist()):
        if p >= 0:
            by_true[t][p] += 1
            by_cluster[p][t] += 1
    m["identities_split"] = sum(1 for c in by_true.values() if len(c) > 1)
    m["clusters_merged"] = sum(1 for c in by_cluster.values() if len(c) > 1)
    if distractor_sets:
        m["distractors_merged"] = sum(
            1 for r in recs if truth[r.rel_path][0] in distractor_sets and r.label >= 0
        )
    return m
