"""Speed of every detector and embedder on this CPU, and detection rates on ../shared/eval.

    python scripts/bench_models.py --out benchmarks/models      # writes models.json and models.md

Speed: one thread per model (the pipeline runs one image per core in `workers`
processes), median of repeated runs after a warm-up:
- detectors: ms per image on insightface's 1280x886 group photo (t1.jpg) and on
  150 px LFW crops;
- embedders: ms per face, one face per call and in batches of 32, on aligned
  chips of the demo set's real faces.
Detection rate: share of images where the detector finds at least one face, per
eval set. Options whose weights are not on this machine (InsightFace packs,
facenet-pytorch's InceptionResnetV1 weights) are reported as such; the
InceptionResnetV1 *architecture* is timed with untrained weights (speed does not
depend on the weight values) and flagged so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "eval"
EVAL_SETS = ("lfw_150px_40ids", "orl_att_faces", "face_recognition_knn_examples", "simpsons14_64px_gray")


def single_thread() -> None:
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def timed(fn, repeat: int) -> float:
    fn()  # warm-up (sessions, lazy loads)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def detectors() -> dict:
    from idcluster.detectors.anime import AnimeFaceDetector
    from idcluster.detectors.cascade import CascadeDetector
    from idcluster.detectors.chain import ChainDetector
    from idcluster.detectors.retinaface import RetinaFaceDetector
    from idcluster.detectors.whole_image import WholeImageDetector

    dets = {
        "retinaface": RetinaFaceDetector(threads=1),
        "opencv": CascadeDetector(),
        "none": WholeImageDetector(),
        "anime": AnimeFaceDetector(),
    }
    from idcluster.detectors.mtcnn import MTCNNDetector, require_torch

    dets["mtcnn"] = MTCNNDetector(threads=1)  # backend=onnx; both backends in detail: scripts/bench_mtcnn.py
    dets["auto"] = ChainDetector([RetinaFaceDetector(threads=1), MTCNNDetector(threads=1), CascadeDetector()],
                                 names=["retinaface", "mtcnn", "opencv"])
    try:
        require_torch("bench")
        dets["mtcnn_torch"] = MTCNNDetector(backend="torch", threads=1)
    except Exception as e:  # noqa: BLE001 - report what is missing instead
        print(f"mtcnn backend=torch skipped: {e}", file=sys.stderr)
    return dets


def bench_detectors(dets: dict, repeat: int) -> dict:
    from idcluster.experiments.demo_data import insightface_image
    from idcluster.inputs.images import load_image

    group = load_image(insightface_image("t1.jpg"))
    lfw = [load_image(p) for p in sorted((EVAL / "lfw_150px_40ids").glob("*/*"))[:20]] if EVAL.is_dir() else []
    out = {}
    for name, det in dets.items():
        row = {"model_id": det.model_id}
        row["group_photo_ms"] = 1000 * timed(lambda: det.detect(group), repeat)
        row["group_photo_faces"] = len(det.detect(group))
        if lfw:
            row["lfw_150px_ms"] = 1000 * timed(lambda: [det.detect(im) for im in lfw], max(1, repeat // 2)) / len(lfw)
        out[name] = row
        print(name, {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}, file=sys.stderr)
    return out


def detection_rates(dets: dict) -> dict:
    from idcluster.inputs.images import ImageDecodeError, load_image

    rates = {}
    for set_name in EVAL_SETS:
        folder = EVAL / set_name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".pgm"))
        images = []
        for p in files:
            try:
                images.append(load_image(p))
            except ImageDecodeError:
                pass
        for name, det in dets.items():
            if name == "none":
                continue
            found, by = 0, {}
            for im in images:
                faces = det.detect(im)
                if faces:
                    found += 1
                    src = faces[0].detector or name
                    by[src] = by.get(src, 0) + 1
            rates.setdefault(name, {})[set_name] = {"found": found, "images": len(images), "by_detector": by}
            print(set_name, name, found, "/", len(images), by, file=sys.stderr)
    return rates


def embedders() -> dict:
    from idcluster.embedders.dlib_resnet import DlibEmbedder
    from idcluster.embedders.facenet import FaceNetEmbedder

    embs = {"dlib": DlibEmbedder(), "facenet": FaceNetEmbedder()}
    notes = {}
    try:
        import torch
        from facenet_pytorch import InceptionResnetV1

        from idcluster.embedders.facenet_pytorch import FaceNetPytorchEmbedder

        e = FaceNetPytorchEmbedder()
        e._net, e._device = InceptionResnetV1().eval(), "cpu"  # untrained: architecture timing only
        embs["facenet_pytorch"] = e
        notes["facenet_pytorch"] = "InceptionResnetV1 with untrained weights (the real weights are a download): speed only"
    except ImportError:
        notes["facenet_pytorch"] = "torch not installed"
    notes["arcface"] = "no InsightFace pack on this machine (download only): not measured"
    return embs, notes


def bench_embedders(embs: dict, repeat: int) -> dict:
    from idcluster.experiments.demo_data import build_demo_set
    from idcluster.detectors.retinaface import RetinaFaceDetector
    from idcluster.inputs.images import load_image
    import tempfile

    det = RetinaFaceDetector(threads=1)
    folder, truth = build_demo_set(Path(tempfile.mkdtemp()), det)
    images = [load_image(folder / n) for n in sorted(truth)][:32]
    faces = [max(det.detect(im), key=lambda f: f.width * f.height) for im in images]
    out = {}
    for name, emb in embs.items():
        chips = [emb.align(im, f) for im, f in zip(images, faces)]
        row = {}
        row["align_ms"] = 1000 * timed(lambda: [emb.align(im, f) for im, f in zip(images, faces)], 1) / len(images)
        row["embed_one_ms"] = 1000 * timed(lambda: [emb.embed([c]) for c in chips[:8]], max(1, repeat // 2)) / 8
        row["embed_batch32_ms"] = 1000 * timed(lambda: emb.embed(chips), max(1, repeat // 2)) / len(chips)
        out[name] = row
        print(name, {k: round(v, 1) for k, v in row.items()}, file=sys.stderr)
    return out


def markdown(result: dict) -> str:
    lines = [f"# Model speed on this CPU ({result['machine']['cpu']}, 1 thread per model)", ""]
    lines += ["| detector | group photo 1280 px (ms/image) | faces found | LFW 150 px (ms/image) |", "|---|---|---|---|"]
    for name, r in result["detectors"].items():
        lfw = f"{r['lfw_150px_ms']:.1f}" if "lfw_150px_ms" in r else "-"
        lines.append(f"| {name} | {r['group_photo_ms']:.1f} | {r['group_photo_faces']} | {lfw} |")
    lines += ["", "| embedder | align (ms/face) | embed, 1 per call (ms/face) | embed, batch 32 (ms/face) |", "|---|---|---|---|"]
    for name, r in result["embedders"].items():
        lines.append(f"| {name} | {r['align_ms']:.1f} | {r['embed_one_ms']:.1f} | {r['embed_batch32_ms']:.1f} |")
    for name, note in result["notes"].items():
        lines.append(f"\n- {name}: {note}")
    if result.get("detection_rates"):
        sets = [s for s in EVAL_SETS if any(s in v for v in result["detection_rates"].values())]
        lines += ["", "| detector | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        for name, per in result["detection_rates"].items():
            cells = []
            for s in sets:
                r = per.get(s)
                cells.append("-" if r is None else f"{r['found']}/{r['images']} ({100 * r['found'] / max(1, r['images']):.1f}%)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/models", help="writes OUT.json and OUT.md")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--no-rates", action="store_true", help="skip the detection rates on ../shared/eval")
    args = ap.parse_args(argv)
    single_thread()
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    result = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "load_at_start": os.getloadavg()[0], "python": platform.python_version()}}
    dets = detectors()
    result["detectors"] = bench_detectors(dets, args.repeat)
    embs, notes = embedders()
    result["embedders"] = bench_embedders(embs, args.repeat)
    result["notes"] = notes
    if not args.no_rates and EVAL.is_dir():
        result["detection_rates"] = detection_rates(dets)
    result["machine"]["load_at_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
