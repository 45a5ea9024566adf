#!/usr/bin/env python
"""idcluster against other face-grouping recipes: same images, same machine, same scoring.

Default input: LFW 40 identities + 50 distractor singletons from ../shared/eval.
Every row is scored by idcluster.experiments.evaluation (BCubed and pairwise over all
images; faceless or noise images are singletons) and timed end to end as a user
would run it (a subprocess each; wall, CPU, peak RSS with children).

  (a) face_recognition tutorial recipe: dlib HOG detector (upsample 1), largest
      face, 5-point shape predictor, dlib ResNet 128-d descriptor (num_jitters 1,
      face_recognition 1.3.0's defaults), sklearn DBSCAN(eps=0.5, euclidean,
      min_samples per --recipe-min-samples; 5 is sklearn's default, which the
      tutorial keeps). Written against dlib directly: face_recognition's PyPI
      package would pull a source build of dlib.
  (b) immich's person-assignment rule (server person.service handleRecognizeFaces)
      replayed on idcluster's cached embeddings: up to minFaces=3 neighbours within
      cosine maxDistance=0.5; a face with that many is "core" and joins the person
      of a neighbour (or the nearest face with a person within 0.5) or founds one;
      other faces get a second, deferred pass that may only join an existing person.
      Run on the dlib (default) and FaceNet embeddings with immich's 0.5 (tuned for
      its 512-d ArcFace), and on dlib with the embedder's calibrated threshold.
  (c) the original guide's defaults on idcluster's pipeline: HDBSCAN
      min_cluster_size=10, min_samples=2 (= idcluster's shipped defaults).
  (d) idcluster defaults with clusterer.min_cluster_size=3.
  (e) face-grouper (PyPI) `fgroup group --no-multi-export` (largest face, its
      defaults otherwise: HOG, DBSCAN eps 0.5, min_samples 2), when importable from
      --peer-site; install it there with --install-peers (pip --no-deps --target:
      its face_recognition dependency would build dlib from source).

  python scripts/bench_peers.py
  python scripts/bench_peers.py --quick        # 3 images per identity, LFW ids only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _bench_common import (
    DEFAULT_EVAL_ROOT,
    REPO,
    idcluster_cmd,
    link_input,
    machine_info,
    markdown,
    missing_sets,
    quiet_run,
    run_measured,
    tail,
    write_outputs,
)

DEFAULT_SETS = ["lfw_150px_40ids", "lfw_150px_distractor_singletons"]
PEER_SITE = REPO / "benchmarks" / "out" / "peer-site"
PEER_PACKAGES = ["face-grouper==0.5.0", "face_recognition==1.3.0"]
IMMICH = {"max_distance": 0.5, "min_faces": 3}  # immich's defaults (machineLearning.facialRecognition)
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff", ".gif"}

COLUMNS = [
    ("row", "{}"), ("tool", "{}"), ("images", "{}"), ("face_share", "{:.3f}"), ("noise_share", "{:.3f}"),
    ("bcubed_precision", "{:.3f}"), ("bcubed_recall", "{:.3f}"), ("bcubed_f1", "{:.3f}"), ("pairwise_f1", "{:.3f}"),
    ("identities_found", "{}"), ("clusters_merged", "{}"), ("distractors_merged", "{}"),
    ("wall_s", "{:.1f}"), ("cpu_s", "{:.1f}"), ("peak_rss_mb", "{:.0f}"), ("others_cpu_share", "{:.2f}"),
    ("note", "{}"),
]


# ---------------------------------------------------------------- scoring


def score(labels: dict[str, int], has_face: dict[str, bool], truth: dict, distractors: tuple) -> dict:
    """idcluster.experiments.evaluation over {rel_path: label}; images a tool never reported are noise."""
    from idcluster.experiments.evaluation import evaluate

    records = [SimpleNamespace(rel_path=rel, label=labels.get(rel, -1), face_index=0 if has_face.get(rel) else None)
               for rel in sorted(truth)]
    return evaluate(records, truth, distractors)


def measured_fields(m: dict) -> dict:
    keep = ("returncode", "others_cpu_share", "attempts", "loadavg", "load1", "cpu_busy_before", "contended")
    return {"wall_s": m["wall_s"], "cpu_s": m["cpu_user_s"] + m["cpu_sys_s"],
            "peak_rss_mb": m["peak_rss_tree_mb"] or m["peak_rss_max_process_mb"], **{k: m.get(k) for k in keep}}


class Timer:
    """Runs cmd_for(attempt) measured; waits for a quiet CPU first and reruns while other jobs shared it."""

    def __init__(self, retries: int, settle_s: float):
        self.retries, self.settle_s = retries, settle_s

    def __call__(self, cmd_for, **kw) -> dict:
        return quiet_run(lambda a: {**run_measured(cmd_for(a), **kw), "attempt": a}, self.retries, self.settle_s)


# ---------------------------------------------------------------- (a) face_recognition recipe


def image_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXT)


def recipe_worker(input_dir: Path, out: Path) -> None:
    """The tutorial's encode step (face_locations + face_encodings), one process like the tutorial."""
    import dlib
    import face_recognition_models as frm
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    rels, found, vectors = image_files(input_dir), [], []
    for rel in rels:
        img = np.array(Image.open(input_dir / rel).convert("RGB"))  # face_recognition.load_image_file
        h, w = img.shape[:2]
        rects = [dlib.rectangle(max(r.left(), 0), max(r.top(), 0), min(r.right(), w), min(r.bottom(), h))
                 for r in detector(img, 1)]  # face_locations(model="hog", upsample 1), trimmed to the image
        if not rects:
            found.append(False)
            vectors.append(np.zeros(128))
            continue
        rect = max(rects, key=lambda r: r.width() * r.height())  # largest face, as idcluster picks
        shape = predictor(img, rect)  # face_encodings(model="small")
        vectors.append(np.array(encoder.compute_face_descriptor(img, shape, 1)))  # num_jitters=1
        found.append(True)
    np.savez(out, rels=np.array(rels), found=np.array(found), vectors=np.array(vectors))


def run_recipe(timer: Timer, input_dir: Path, tmp: Path, truth: dict, distractors: tuple,
               min_samples: list[int]) -> list[dict]:
    from sklearn.cluster import DBSCAN

    out = tmp / "recipe.npz"
    log = tmp / "recipe.log"
    m = timer(lambda a: [sys.executable, __file__, "--recipe-worker", str(input_dir), str(out)], log=log)
    if m["returncode"] != 0:
        return [{"row": "a", "tool": "face_recognition recipe", "note": f"failed: {tail(log, 3)}"}]
    data = np.load(out)
    rels, found, X = list(data["rels"]), data["found"], data["vectors"]
    rows = []
    for ms in min_samples:
        t0 = time.perf_counter()
        labels = np.full(len(rels), -1)
        if found.sum():
            labels[found] = DBSCAN(eps=0.5, min_samples=ms, metric="euclidean").fit_predict(X[found])
        dbscan_s = time.perf_counter() - t0
        row = {"row": "a", "tool": f"face_recognition recipe: HOG + dlib 128-d + DBSCAN(eps 0.5, min_samples {ms})",
               **score(dict(zip(rels, labels.tolist())), dict(zip(rels, found.tolist())), truth, distractors),
               **measured_fields(m), "note": f"1 process (as the tutorial); DBSCAN {dbscan_s:.2f} s"}
        row["wall_s"] += dbscan_s
        rows.append(row)
    return rows


# ---------------------------------------------------------------- (b) immich's rule


def immich_rule(X: np.ndarray, max_distance: float = 0.5, min_faces: int = 3) -> np.ndarray:
    """Person ids (-1 = none) as immich's facial-recognition job assigns them, faces in input order."""
    n = len(X)
    person = np.full(n, -1)
    D = 1.0 - X @ X.T  # cosine distance (rows are unit vectors)
    order = np.argsort(D, axis=1, kind="stable")
    next_id = 0

    def assign(i: int, may_create: bool) -> None:
        nonlocal next_id
        within = [j for j in order[i] if D[i, j] <= max_distance]
        matches = within[:min_faces]  # searchFaces(numResults=minFaces) includes the face itself
        pid = next((person[j] for j in matches if person[j] >= 0), -1)
        if pid < 0:  # nearest face with a person within maxDistance
            pid = next((person[j] for j in within if person[j] >= 0), -1)
        if pid < 0 and may_create:
            pid, next_id = next_id, next_id + 1
        person[i] = pid

    deferred = []
    for i in range(n):
        matches = sum(1 for j in order[i][:min_faces] if D[i, j] <= max_distance)
        if min_faces > 1 and matches <= 1:
            continue  # "only matched the face itself": never assigned
        if matches < min_faces:
            deferred.append(i)  # non-core: retried once after everyone else
            continue
        assign(i, may_create=True)
    for i in deferred:
        assign(i, may_create=False)
    return person


def idcluster_embeddings(input_dir: Path, cache: Path, embedder: str):
    """Records and embeddings of `embedder` from idcluster's cache (filled by the runs before)."""
    from idcluster.workflows.cluster import make_spec
    from idcluster.config.settings import load_settings
    from idcluster.pipeline.stages import run

    cfg = load_settings([f"input_dir={input_dir}", f"cache_dir={cache}", f"embedder={embedder}"])
    threshold = cfg.distance_threshold
    return run(make_spec(cfg, "embed", progress=False), until="embed", cached_only=True), threshold


def run_immich(input_dir: Path, tmp: Path, cache: Path, truth: dict, distractors: tuple) -> list[dict]:
    """immich's rule on dlib (row d's cache) and FaceNet embeddings; its 0.5 suits 512-d ArcFace-like ones."""
    log = tmp / "embed-facenet.log"
    m = run_measured([sys.executable, "-m", "idcluster", "embed", f"input_dir={input_dir}", f"cache_dir={cache}",
                      "embedder=facenet", "--quiet"], log=log, cwd=tmp)
    if m["returncode"] != 0:
        return [{"row": "b", "tool": "immich rule", "note": f"facenet embedding failed: {tail(log, 3)}"}]
    rows = []
    for embedder, use_calibrated in (("dlib", False), ("facenet", False), ("dlib", True)):
        result, calibrated = idcluster_embeddings(input_dir, cache, embedder)
        params = dict(IMMICH)
        if use_calibrated:
            if calibrated is None:
                continue
            params["max_distance"] = float(calibrated)
        t0 = time.perf_counter()
        person = immich_rule(result.embeddings, **params)
        seconds = time.perf_counter() - t0
        labels = {r.rel_path: int(person[r.embedding_row]) for r in result.records if r.embedding_row is not None}
        has_face = {r.rel_path: r.face_index is not None for r in result.records}
        how = "idcluster's calibrated threshold" if use_calibrated else "immich's default"
        rows.append({"row": "b", "tool": f"immich rule (cosine {params['max_distance']:g}, min {params['min_faces']} faces) "
                                         f"on idcluster's {embedder} embeddings",
                     **score(labels, has_face, truth, distractors), "wall_s": seconds,
                     "note": f"rule only ({seconds:.2f} s) on cached embeddings; max distance = {how}"})
    return rows


# ---------------------------------------------------------------- (c), (d) idcluster


def run_idcluster(timer: Timer, row: str, name: str, input_dir: Path, tmp: Path, truth: dict, distractors: tuple,
                  overrides: list[str]) -> dict:
    log = tmp / f"idcluster-{row}.log"

    def cmd(attempt: int) -> list[str]:  # a fresh, empty cache per attempt: every attempt is cold
        return idcluster_cmd(f"input_dir={input_dir}", f"output_dir={tmp / f'out-{row}-{attempt}'}",
                             f"cache_dir={tmp / f'cache-{row}-{attempt}'}", *overrides)

    m = timer(cmd, log=log, cwd=tmp)  # cwd: MLflow's default store lands in the temp folder
    if m["returncode"] != 0:
        return {"row": row, "tool": name, "note": f"failed: {tail(log, 3)}"}
    report = json.loads((tmp / f"out-{row}-{m['attempt']}" / "identity_clustering.json").read_text())
    labels = {im["rel_path"]: im["cluster"] for im in report["images"]}
    has_face = {im["rel_path"]: im["face_index"] is not None for im in report["images"]}
    return {"row": row, "tool": name, **score(labels, has_face, truth, distractors), **measured_fields(m),
            "note": f"cold cache, {report['config']['workers']} workers", "overrides": overrides,
            "cache": str(tmp / f"cache-{row}-{m['attempt']}")}


# ---------------------------------------------------------------- (e) face-grouper


def peer_env(site: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def face_grouper_available(site: Path) -> str | None:
    """None when face-grouper imports from site, else why not."""
    probe = subprocess.run([sys.executable, "-c", "import face_grouper.cli, face_recognition"],
                           env=peer_env(site), capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    return f"not importable from {site} ({last}); run with --install-peers"


def install_peers(site: Path) -> None:
    """pip --no-deps --target: face_recognition's declared `dlib` would be built from source."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    *PEER_PACKAGES], check=True)


def run_face_grouper(timer: Timer, input_dir: Path, tmp: Path, site: Path, truth: dict, distractors: tuple) -> dict:
    name = "face-grouper 0.5.0 (HOG, dlib, DBSCAN eps 0.5 / min_samples 2)"
    why = face_grouper_available(site)
    if why:
        return {"row": "e", "tool": name, "note": why}
    log = tmp / "face-grouper.log"

    def cmd(attempt: int) -> list[str]:  # a new output folder per attempt (it asks before writing into one)
        return [sys.executable, "-c", "from face_grouper.cli import cli; cli()", "group", str(input_dir),
                "--output", str(tmp / f"out-face-grouper-{attempt}"), "--no-multi-export"]

    m = timer(cmd, log=log, env={**peer_env(site), "COLUMNS": "200"}, cwd=tmp)
    out = tmp / f"out-face-grouper-{m['attempt']}"
    if m["returncode"] != 0:
        return {"row": "e", "tool": name, **measured_fields(m), "note": f"failed: {tail(log, 3)}"}
    by_name = {Path(rel).name: rel for rel in truth}  # it resolves symlinks and keeps file names
    if len(by_name) != len(truth):
        return {"row": "e", "tool": name, "note": "duplicate file names: cannot map its output back"}
    labels = {}
    for folder in out.iterdir():
        match = re.fullmatch(r"person_(\d+)", folder.name)
        for f in folder.iterdir() if folder.is_dir() else []:
            if f.name in by_name:
                labels[by_name[f.name]] = int(match.group(1)) if match else -1
    row = {"row": "e", "tool": name, **score(labels, {rel: True for rel in labels}, truth, distractors),
           **measured_fields(m), "note": "1 process; --no-multi-export (largest face)"}
    found = re.search(r"across\s+(\d+)\s+image\(s\) with faces", tail(log, 400))
    row["face_share"] = int(found.group(1)) / len(truth) if found else None
    return row


# ---------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT, help="folder holding the labelled sets")
    ap.add_argument("--set", action="append", dest="sets", help=f"eval set (repeatable; default {' + '.join(DEFAULT_SETS)})")
    ap.add_argument("--per-identity", type=int, help="keep only the first N images of each identity")
    ap.add_argument("--recipe-min-samples", type=int, nargs="+", default=[5, 3], help="DBSCAN min_samples for (a)")
    ap.add_argument("--peer-site", type=Path, default=PEER_SITE, help="where face-grouper is installed (pip --target)")
    ap.add_argument("--install-peers", action="store_true", help=f"pip install --no-deps --target PEER_SITE {' '.join(PEER_PACKAGES)}")
    ap.add_argument("--override", action="append", default=[], help="extra idcluster override for rows c, d (repeatable)")
    ap.add_argument("--skip", nargs="+", default=[], choices=list("abcde"), help="rows to leave out")
    ap.add_argument("--no-settle", action="store_true", help="no waiting for a quiet CPU, no reruns (smoke tests)")
    ap.add_argument("--settle-s", type=float, default=300.0, help="longest wait for a quiet CPU before a timed run")
    ap.add_argument("--retries", type=int, default=3, help="reruns of a run during which other jobs used >10%% of the CPU")
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 images per identity, LFW identities only")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/peers"), help="writes OUT.json and OUT.md")
    ap.add_argument("--recipe-worker", nargs=2, metavar=("INPUT", "OUT_NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.per_identity = args.per_identity or 3
        args.sets = args.sets or DEFAULT_SETS[:1]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.recipe_worker:
        recipe_worker(Path(args.recipe_worker[0]), Path(args.recipe_worker[1]))
        return 0
    names = args.sets or DEFAULT_SETS
    missing = missing_sets(args.eval_root, names)
    if missing:
        print(f"eval sets not found under {args.eval_root}: {', '.join(missing)} (pass --eval-root)", file=sys.stderr)
        return 2
    if args.install_peers:
        install_peers(args.peer_site)
    distractors = tuple(n for n in names if "distractor" in n)
    rows = []
    timer = Timer(*((0, 0.0) if args.no_settle else (args.retries, args.settle_s)))

    def add(out) -> None:
        for r in out if isinstance(out, list) else [out]:
            rows.append(r)
            print(markdown([r], COLUMNS).splitlines()[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="idcluster-peers-") as t:
        tmp = Path(t)
        input_dir = tmp / "input"
        truth = link_input(args.eval_root, names, input_dir, args.per_identity)
        if "a" not in args.skip:
            add(run_recipe(timer, input_dir, tmp, truth, distractors, args.recipe_min_samples))
        if "c" not in args.skip:
            add(run_idcluster(timer, "c", "idcluster, original guide's defaults (HDBSCAN mcs 10, ms 2)", input_dir,
                              tmp, truth, distractors, ["clusterer=hdbscan", "clusterer.min_cluster_size=10",
                                                        "clusterer.min_samples=2", *args.override]))
        if "d" not in args.skip or "b" not in args.skip:
            d = run_idcluster(timer, "d", "idcluster default, clusterer.min_cluster_size=3", input_dir, tmp, truth,
                              distractors, ["clusterer.min_cluster_size=3", *args.override])
            add(d)
            if "b" not in args.skip and "cache" in d:
                add(run_immich(input_dir, tmp, Path(d["cache"]), truth, distractors))
        if "e" not in args.skip:
            add(run_face_grouper(timer, input_dir, tmp, args.peer_site, truth, distractors))
    rows = [r for r in rows if r["row"] not in args.skip]
    rows.sort(key=lambda r: r["row"])
    label = " + ".join(names) + (f" ({args.per_identity}/identity)" if args.per_identity else "")
    write_outputs(args.out, {"input": label, "machine": machine_info(), "rows": rows},
                  [f"Input: {label}, {len(truth)} images\n", markdown(rows, COLUMNS)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
