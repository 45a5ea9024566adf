"""Head-pose cost and agreement: dlib 68 points + solvePnP vs the detector's 5 points, same faces, one run.

    python scripts/bench_pose.py                       # first 100 images of lfw_150px_40ids
    python scripts/bench_pose.py --set orl_att_faces --limit 40 --out benchmarks/out/pose_orl

CPU time per face (time.process_time: the shared machine's load inflates it little),
share of 68-point fits kept, median |yaw68 - yaw5| and yaw sign agreement on faces
the 68-point fit calls turned by more than 20 degrees. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _bench_common import DEFAULT_EVAL_ROOT, REPO, machine_info, markdown, write_outputs
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.pipeline.faces import select_face
from idcluster.inputs.images import ImageDecodeError, load_image
from idcluster.pose.estimate import DLIB68, FIVE_POINT, PoseEstimator

SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".webp", ".bmp"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--set", default="lfw_150px_40ids")
    ap.add_argument("--limit", type=int, default=100, help="first N images (sorted paths)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "pose")
    args = ap.parse_args(argv)
    folder = args.eval_root / args.set
    if not folder.is_dir():
        print(f"error: {folder} not found (--eval-root)", file=sys.stderr)
        return 2
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.limit]
    det = RetinaFaceDetector()
    items = []
    for p in paths:
        try:
            image = load_image(p)
        except ImageDecodeError:
            continue
        faces = det.detect(image)
        if faces:
            items.append((image, faces[select_face(faces)]))
    if not items:
        print(f"error: no face found in {len(paths)} images of {folder}", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    rows, poses = [], {}
    for name in (DLIB68, FIVE_POINT):
        est = PoseEstimator(name)
        if name == DLIB68:
            est.predictor()  # loading the 100 MB model is not per-face cost
        t = time.process_time()
        poses[name] = [est.estimate(im, f) for im, f in items]
        cpu = time.process_time() - t
        kept = sum(p is not None and p.landmarks == name for p in poses[name])
        rows.append({"landmarks": name, "faces": len(items), "cpu_ms_per_face": 1000 * cpu / len(items), "fits_kept": kept})
    pairs = [(a, b) for a, b in zip(poses[DLIB68], poses[FIVE_POINT]) if a is not None and b is not None]
    turned = [(a, b) for a, b in pairs if abs(a.yaw) > 20]
    agreement = {
        "median_abs_yaw_difference": float(np.median([abs(a.yaw - b.yaw) for a, b in pairs])) if pairs else None,
        "turned_faces": len(turned),
        "sign_agreement": (sum(np.sign(a.yaw) == np.sign(b.yaw) for a, b in turned) / len(turned)) if turned else None,
    }
    tables = [f"Head pose on {len(items)} faces of {args.set} (load average at start {load:.1f})\n",
              markdown(rows, [("landmarks", "{}"), ("faces", "{}"), ("cpu_ms_per_face", "{:.2f}"), ("fits_kept", "{}")]),
              markdown([agreement], [("median_abs_yaw_difference", "{:.1f}"), ("turned_faces", "{}"), ("sign_agreement", "{:.3f}")])]
    write_outputs(args.out, {"machine": machine_info(), "set": args.set, "images": len(paths), "load_at_start": load,
                             "estimators": rows, "agreement": agreement}, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
