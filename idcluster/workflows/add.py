"""Add new images to an existing export without re-clustering it (`idcluster add`).

1. The earlier export's identity_clustering.json says which image (sha256 +
   face index) is in which identity; their embeddings come back from the stage
   cache (same keys as pipeline.detect_and_embed), so nothing old is recomputed.
2. The new folder is detected and embedded as usual (same cache).
3. Each new face takes a kNN vote among the existing identities' faces: the
   `k` most similar existing faces within the embedder's calibrated distance
   vote with their similarity; the identity with the largest vote wins (the
   nearest-centroid rule alone lets a big, spread-out identity swallow
   look-alikes). Faces of one new image never join the same identity.
4. The rest are clustered among themselves on a kNN graph at the same threshold
   (clusterer=knn_graph; a handful of faces is too few for HDBSCAN's densities), keeping the
   configured min_cluster_size; their clusters become new identities, numbered past
   every number the output folder has used (export.report.next_number); the rest is noise.

Existing identities keep their folder, their members and every extra field a
reviewer wrote on them (`name`, `hidden`, ...): they only gain members.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import records as R
from ..pipeline import stages as pipeline
from ..cache.store import StageCache, cache_key
from ..errors import InputError
from ..export.locking import output_lock
from ..export.report import (NEXT_NUMBER, Linker, entry_folders, flat_name, identity_folder, identity_width, image_entry,
                             next_number, read_report, regroup, write_report)

log = logging.getLogger(__name__)


def embedding_key(spec: pipeline.Spec, sha256: str, face_index: int) -> str:
    """The embed-stage cache key of one face (the formula of pipeline.detect_and_embed)."""
    dkey = cache_key("detect", sha256, [spec.detector.model_id, spec.params.get("detector", {})])
    return cache_key("embed", dkey, face_index, [spec.embedder.model_id, spec.params.get("embedder", {})])


def existing_faces(report: dict, spec: pipeline.Spec) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, cluster) of every clustered face of the earlier export, read from the cache."""
    cache = StageCache(spec.cache_dir)
    rows, labels, missing = [], [], 0
    for img in report["images"]:
        faces = img.get("face_clusters") or ([{"face_index": img["face_index"], "cluster": img["cluster"]}]
                                             if img.get("face_index") is not None else [])
        for f in faces:
            if f["cluster"] < 0:
                continue
            hit = cache.get_arrays(pipeline.EMBED, embedding_key(spec, img["sha256"], f["face_index"]))
            if hit is None:
                missing += 1
                continue
            rows.append(hit["embedding"])
            labels.append(f["cluster"])
    if missing:
        raise InputError(f"{missing} face(s) of the earlier export are not in the cache {cache.root} with this "
                         "detector/embedder config: pass the overrides the export was made with (or cache_dir=)")
    if not rows:
        raise InputError("the earlier export has no identity to add to: run `idcluster cluster` on all images instead")
    X = np.stack(rows).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.asarray(labels, dtype=np.int64)


@dataclass
class Assignment:
    labels: np.ndarray  # per new row: existing cluster, new cluster (>= n_existing) or -1
    joined: int
    new_identities: int


def assign(X_old: np.ndarray, y_old: np.ndarray, X_new: np.ndarray, groups: np.ndarray, distance_threshold: float,
           clusterer, k: int = 10, first_new: int | None = None) -> Assignment:
    """kNN vote into existing identities at the calibrated threshold (clustering.vote); the rest
    clustered into new ones, numbered from first_new (default: past the existing ones)."""
    import faiss

    from ..clustering.base import relabel_by_size
    from ..clustering.knn_graph import KNNGraph
    from ..clustering.vote import neighbour_vote

    X_new = X_new / np.maximum(np.linalg.norm(X_new, axis=1, keepdims=True), 1e-12)
    n_old = int(y_old.max()) + 1 if first_new is None else int(first_new)
    labels = np.full(len(X_new), -1, dtype=np.int64)
    index = faiss.IndexFlatIP(X_old.shape[1])
    index.add(np.ascontiguousarray(X_old, dtype=np.float32))
    k = min(k, len(X_old))
    sims, idx = index.search(np.ascontiguousarray(X_new, dtype=np.float32), k)
    votes = neighbour_vote(sims, np.where(idx >= 0, y_old[idx], -1), 1.0 - distance_threshold)
    best, support = votes.label, votes.weight
    has = (best >= 0) & (support > 0)
    # One identity per image: its most supported face keeps the join, others of the image go on.
    order = np.argsort(-support, kind="stable")
    taken: set = set()
    for r in order[has[order]]:
        if (groups[r], best[r]) not in taken:
            taken.add((groups[r], best[r]))
            labels[r] = best[r]
    joined = int((labels >= 0).sum())
    rest = np.flatnonzero(labels < 0)
    new_ids = 0
    if len(rest) >= 2:
        # A threshold graph, not the configured clusterer: the rest is often a handful of faces,
        # too few for density-based clusterers; the configured min_cluster_size still applies.
        graph = KNNGraph(distance_threshold=distance_threshold, min_cluster_size=getattr(clusterer, "min_cluster_size", 2))
        sub = graph.fit_predict(X_new[rest], groups=groups[rest])
        sub = relabel_by_size(sub)
        labels[rest[sub >= 0]] = n_old + sub[sub >= 0]
        new_ids = int(sub.max()) + 1 if (sub >= 0).any() else 0
    return Assignment(labels, joined, new_ids)


def add_images(spec: pipeline.Spec, output_dir: Path, distance_threshold: float, mode: str, console,
               config: dict | None = None) -> dict:
    """`idcluster add`: embed spec.input_dir's images and merge them into the export in output_dir
    (holding the output folder's lock, as `cluster` does). distance_threshold: the embedder's calibrated
    one; mode: export.mode; config: the composed config, recorded with the addition."""
    output_dir = Path(output_dir)
    read_report(output_dir)  # no earlier export: an error before the lock creates output_dir
    with output_lock(output_dir, "add"):
        return _add_images(spec, output_dir, float(distance_threshold), mode, console, config or {})


def _add_images(spec: pipeline.Spec, output_dir: Path, threshold: float, mode: str, console, config: dict) -> dict:
    report = read_report(output_dir)
    link = Linker(mode)
    if Path(spec.input_dir).resolve() == output_dir.resolve():
        raise InputError("input_dir must be a different folder from output_dir")
    was = report.get("models", {}).get("embedder")
    if was and was != spec.embedder.model_id:
        raise InputError(f"{output_dir} was clustered with embedder {was}, this config has {spec.embedder.model_id}: "
                         "pass the embedder= override the export was made with")
    X_old, y_old = existing_faces(report, spec)

    result = pipeline.run(spec, until="embed")
    known = {img["sha256"] for img in report["images"]}
    repeats = [r for r in result.records if r.sha256 in known]
    if repeats:
        log.warning("%d image(s) of %s are already in the export (same content): left where they are",
                    len(repeats), spec.input_dir)
    rows = [row for i, rec in enumerate(result.records) if rec.sha256 not in known for row in rec.face_rows.values()]
    rows = np.asarray(sorted(rows), dtype=np.int64)
    if len(rows):
        a = assign(X_old, y_old, result.embeddings[rows], result.groups[rows], threshold, spec.clusterer,
                   first_new=next_number(report))
    else:
        a = Assignment(np.zeros(0, np.int64), 0, 0)
    row_label = dict(zip(rows.tolist(), a.labels.tolist()))
    new_records = [r for r in result.records if r.sha256 not in known]
    for rec in new_records:
        rec.face_labels = {k: row_label[row] for k, row in rec.face_rows.items()}
        if rec.embedding_row is not None:
            rec.label = row_label[rec.embedding_row]
            rec.probability = 1.0 if rec.label >= 0 else 0.0
            if rec.label < 0:
                rec.reason, rec.detail = R.CLUSTER_NOISE, "not close enough to any identity"

    # Names: existing ones as they are; new clusters continue the numbering at the same width.
    names = {c["cluster"]: c["identity"] for c in report["clusters"]}
    width = identity_width([*names, *a.labels.tolist()])
    for c in sorted(set(a.labels.tolist()) - set(names) - {-1}):
        names[c] = identity_folder(c, width)
        report["clusters"].append({"identity": names[c], "cluster": c, "size": 0, "images": []})
    entries = []
    for rec in new_records:
        entry = image_entry(rec, names)
        outputs = []
        for folder in entry_folders(entry, names):
            (output_dir / folder).mkdir(parents=True, exist_ok=True)
            dst = output_dir / folder / flat_name(rec.rel_path)
            if dst.exists() or dst.is_symlink():  # a same-named file from the earlier run
                dst = dst.with_name(f"{dst.stem}__{rec.sha256[:8]}{dst.suffix}")
            try:
                link(Path(rec.path), dst)
            except OSError as e:
                log.warning("could not export %s: %s", rec.rel_path, e.strerror or e)
            outputs.append(f"{folder}/{dst.name}")
        entry["output"] = outputs[0]
        entries.append(entry)
    report["images"].extend(entries)
    report[NEXT_NUMBER] = max([next_number(report), *(c + 1 for c in names)])
    regroup(report)
    added = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "input_dir": str(spec.input_dir.resolve()), "images": len(new_records), "already_present": len(repeats),
             "joined_existing": a.joined, "new_identities": a.new_identities,
             "noise": int(sum(1 for r in new_records if r.label < 0)), "config": config}
    report.setdefault("additions", []).append(added)
    path = write_report(output_dir, report)
    console.print(f"added {len(new_records)} images: {a.joined} faces joined existing identities, "
                  f"{a.new_identities} new identities, {added['noise']} to noise; wrote {path}")
    return report
