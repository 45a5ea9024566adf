"""Head-pose cost, agreement and stability: dlib 68 points + solvePnP vs the detector's 5 points, same faces, one run.

    python scripts/bench_pose.py                       # first 100 images of lfw_150px_40ids
    python scripts/bench_pose.py --limit 0             # all 299 (the figures in README and RESULTS)
    python scripts/bench_pose.py --set orl_att_faces --limit 40 --out benchmarks/out/pose_orl

CPU time per face (time.process_time: the shared machine's load inflates it little),
share of 68-point fits kept, median |yaw68 - yaw5| and yaw sign agreement on faces
the 68-point fit calls turned by more than 20 degrees.

Stability, for the estimator (`dlib68`: mirror-averaged over start boxes) and for the
single fit in the detector's box it replaced (`dlib68_single`, idcluster <= issue 18):
- mirror: the image and its mirror image are each detected on their own; |yaw + yaw_mirrored|
  (max, 95th percentile, share within 5 degrees) and the share of faces whose view bin
  (conf/pose/bins.yaml) is the mirror of the mirrored face's bin;
- jitter: the detection's box and 5 points moved by random whole pixels in [-2, 2]
  (4 draws per face, seed 0): |yaw change| (95th percentile, max) and the share of faces
  whose bin changes under some draw;
- faces within 5 degrees of the front / three-quarter edge (|yaw| 15-25).
Writes OUT.json and OUT.md.
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
from idcluster.pose.estimate import DLIB68, FIVE_POINT, INDEX_68, MODEL_68, Bins, Pose, PoseEstimator, solve
from idcluster.records import Face

SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".webp", ".bmp"}
MIRROR_VIEW = {"three_quarter_left": "three_quarter_right", "three_quarter_right": "three_quarter_left",
               "profile_left": "profile_right", "profile_right": "profile_left"}
JITTER_PX, JITTER_DRAWS = 2, 4


class SingleFit(PoseEstimator):
    """The estimate idcluster made before issue 18: one 68-point fit in a square on the detector's box."""

    def _estimate_68(self, image, face):
        x1, y1, x2, y2 = face.box
        pts = self.landmarks_68(np.ascontiguousarray(image), ((x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)))
        fit = solve(pts[list(INDEX_68)], MODEL_68, image.shape[:2], face.size)
        as_five = np.array([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
        drift = float(np.linalg.norm(as_five - face.landmarks_array(), axis=1).mean()) / max(face.size, 1.0)
        if fit is None or fit[3] > self.max_error or drift > self.max_error:
            return None
        return Pose(*fit[:3], DLIB68, fit[3])


def jittered(face: Face, rng) -> Face:
    d = rng.integers(-JITTER_PX, JITTER_PX + 1, size=6)
    box = (face.box[0] + d[0], face.box[1] + d[1], face.box[2] + d[2], face.box[3] + d[3])
    pts = tuple((x + d[4] + int(rng.integers(-1, 2)), y + d[5] + int(rng.integers(-1, 2))) for x, y in face.landmarks)
    return Face(box, pts, face.score, face.detector)


def stability(name: str, est: PoseEstimator, items: list, bins: Bins) -> dict:
    """Mirror and jitter figures of one estimator over (image, face, mirrored image, its face) items."""
    rng = np.random.default_rng(0)
    sums, same_bin, jumps, moved, edge = [], 0, [], 0, 0
    for image, face, mirror, mface in items:
        a, b = est.estimate(image, face), est.estimate(mirror, mface)
        if a is None or b is None:
            continue
        sums.append(abs(a.yaw + b.yaw))
        va, vb = bins.view(a.yaw, a.pitch), bins.view(b.yaw, b.pitch)
        same_bin += MIRROR_VIEW.get(va, va) == vb
        edge += 15 <= abs(a.yaw) <= 25
        changed = False
        for _ in range(JITTER_DRAWS):
            j = est.estimate(image, jittered(face, rng))
            if j is None:
                continue
            jumps.append(abs(j.yaw - a.yaw))
            changed |= bins.view(j.yaw, j.pitch) != va
        moved += changed
    n = len(sums)
    return {"estimator": name, "faces": n, "mirror_max": float(np.max(sums)), "mirror_p95": float(np.percentile(sums, 95)),
            "mirror_within_5": sum(s <= 5 for s in sums) / n, "mirror_same_bin": same_bin / n,
            "jitter_p95": float(np.percentile(jumps, 95)), "jitter_max": float(np.max(jumps)),
            "bin_changed_by_jitter": moved / n, "edge_15_25": edge}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-root", type=Path, default=DEFAULT_EVAL_ROOT)
    ap.add_argument("--set", default="lfw_150px_40ids")
    ap.add_argument("--limit", type=int, default=100, help="first N images (sorted paths; 0 = all)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "pose")
    args = ap.parse_args(argv)
    folder = args.eval_root / args.set
    if not folder.is_dir():
        print(f"error: {folder} not found (--eval-root)", file=sys.stderr)
        return 2
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.limit or None]
    det = RetinaFaceDetector()
    items, mirrored = [], []
    for p in paths:
        try:
            image = load_image(p)
        except ImageDecodeError:
            continue
        faces = det.detect(image)
        if faces:
            items.append((image, faces[select_face(faces)]))
            mirror = np.ascontiguousarray(image[:, ::-1])
            mfaces = det.detect(mirror)  # the mirror image detected on its own, as a user's flipped copy would be
            if mfaces:
                mirrored.append((image, items[-1][1], mirror, mfaces[select_face(mfaces)]))
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
    bins = Bins()
    stable = [stability(DLIB68, PoseEstimator(DLIB68), mirrored, bins),
              stability("dlib68_single", SingleFit(DLIB68), mirrored, bins)]
    tables = [f"Head pose on {len(items)} faces of {args.set} (load average at start {load:.1f})\n",
              markdown(rows, [("landmarks", "{}"), ("faces", "{}"), ("cpu_ms_per_face", "{:.2f}"), ("fits_kept", "{}")]),
              markdown([agreement], [("median_abs_yaw_difference", "{:.1f}"), ("turned_faces", "{}"), ("sign_agreement", "{:.3f}")]),
              markdown(stable, [("estimator", "{}"), ("faces", "{}"), ("mirror_max", "{:.1f}"), ("mirror_p95", "{:.1f}"),
                                ("mirror_within_5", "{:.3f}"), ("mirror_same_bin", "{:.3f}"), ("jitter_p95", "{:.1f}"),
                                ("jitter_max", "{:.1f}"), ("bin_changed_by_jitter", "{:.3f}"), ("edge_15_25", "{}")])]
    write_outputs(args.out, {"machine": machine_info(), "set": args.set, "images": len(paths), "load_at_start": load,
                             "estimators": rows, "agreement": agreement, "stability": stable}, tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
