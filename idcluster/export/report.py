"""identity_clustering.json and the end-of-run summary table."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from rich.console import Console
from rich.table import Table

from .. import __version__
from .folders import NOISE, identity_names, output_path, record_folders
from ..pipeline.stages import Result

FORMAT_VERSION = 1


def statistics(result: Result) -> dict:
    recs = result.records
    reasons = Counter(r.reason for r in recs if r.reason and r.label < 0)
    n_clusters = max((r.label for r in recs), default=-1) + 1
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


def build_report(result: Result, config: dict, models: dict, input_dir, output_dir,
                 meta: dict[int, dict] | None = None) -> dict:
    """`meta`: cluster -> {"name", "hidden", "reviewed"} carried over from review decisions."""
    recs = result.records
    stats = statistics(result)
    meta = meta or {}
    names = identity_names(stats["identities"], meta)
    members: dict[str, list[str]] = {}
    for r in recs:
        for folder in record_folders(r, names):
            members.setdefault(folder, []).append(r.rel_path)
    images = []
    for r in recs:
        face = r.face
        images.append({
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
        })
    return {
        "format_version": FORMAT_VERSION,
        "idcluster_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "config": config,
        "models": models,
        "cache_keys": result.keys,
        "clusters": [
            {"identity": name, "cluster": i, "size": len(members.get(name, [])), "images": members.get(name, []),
             **_review_fields(meta.get(i))}
            for i, name in enumerate(names)
        ],
        "noise": {"size": len(members.get(NOISE, [])), "reasons": stats["noise_reasons"], "images": members.get(NOISE, [])},
        "statistics": stats,
        "images": images,
    }


def _review_fields(m: dict | None) -> dict:
    """Optional fields of a clusters entry: "name" (user-given), "hidden": true, "reviewed": true."""
    if not m:
        return {}
    out = {"name": m["name"]} if m.get("name") else {}
    if m.get("hidden"):
        out["hidden"] = True
    if m.get("reviewed"):
        out["reviewed"] = True
    return out


def print_summary(report: dict, console: Console, max_rows: int = 15) -> None:
    stats = report["statistics"]
    n = stats['identities']
    table = Table(title=f"idcluster: {n} {'identity' if n == 1 else 'identities'} from {stats['images']} image{'' if stats['images'] == 1 else 's'}", title_justify="left")
    table.add_column("folder")
    table.add_column("images", justify="right")
    table.add_column("example", overflow="fold")
    for c in report["clusters"][:max_rows]:
        table.add_row(c["identity"], str(c["size"]), c["images"][0] if c["images"] else "")
    if len(report["clusters"]) > max_rows:
        rest = report["clusters"][max_rows:]
        table.add_row(f"... {len(rest)} more", str(sum(c["size"] for c in rest)), "")
    reasons = ", ".join(f"{k} {v}" for k, v in report["noise"]["reasons"].items())
    table.add_row("noise", str(report["noise"]["size"]), reasons)
    console.print(table)
    t = stats["timings_s"]
    parts = [f"{k} {v:.2f}s" for k, v in t.items()]
    console.print("time: " + ", ".join(parts))
