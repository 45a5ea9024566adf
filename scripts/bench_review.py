"""How fast `idcluster review` opens and answers on a 10,000-image output folder.

The folder is built with idcluster's own scan, export and report code from real
photos (the demo crops: package-shipped, `idcluster.experiments.demo_data`), each copied
N/56 times with a unique trailer after the image data (so every file has its own
sha256, as distinct photos would). Detection and embedding are not run (10k
images take ~15 min here): each face box is the crop's RetinaFace box and each
vector is a synthetic identity centre plus noise, `--identities` identities.
Measured in-process (Starlette TestClient), cold (first review: journal base
written, thumbnails made) and warm (second open, thumbnails cached):

- open: ReviewStore (read JSON + journal, reconcile folders, write JSON)
- state: GET /api/state (every identity card, representatives, merge suggestions)
- first_screen: state + the thumbnails of the first 24 cards (4 each): "first view"
- identity page: GET /api/identity/<largest>?limit=200 + its 200 thumbnails
- one action: a merge of two identities (journal + folders + JSON rewrite)

    python scripts/bench_review.py --images 10000 --out benchmarks/out/review
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _bench_common import machine_info, markdown, write_outputs


def build_folder(root: Path, n_images: int, n_identities: int, dim: int = 128, seed: int = 0) -> Path:
    from idcluster.experiments.demo_data import build_demo_set
    from idcluster.detectors.retinaface import RetinaFaceDetector
    from idcluster.export.face_vectors import save_face_vectors
    from idcluster.export.folders import export
    from idcluster.inputs.images import load_image
    from idcluster.pipeline.stages import Result
    from idcluster.export.report import build_report, write_report
    from idcluster.inputs.scan import scan_folder

    det = RetinaFaceDetector()
    demo, _ = build_demo_set(root / "demo", det)
    sources = []
    for p in sorted(demo.iterdir()):
        im = Image.open(p).convert("RGB")
        im.thumbnail((200, 200))
        small = root / "small" / (p.stem + ".jpg")
        small.parent.mkdir(parents=True, exist_ok=True)
        im.save(small, quality=85)
        faces = det.detect(load_image(small))
        if faces:
            sources.append((small.read_bytes(), max(faces, key=lambda f: f.size)))
    inp = root / "in"
    for i in range(n_images):
        data, _ = sources[i % len(sources)]
        sub = inp / f"batch_{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img_{i:05d}.jpg").write_bytes(data + b"idcluster-bench-%d" % i)  # after EOI: same picture
    records = scan_folder(inp)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_identities, dim))
    sizes = rng.lognormal(0.0, 1.0, size=n_identities)  # a few large identities, many small
    owner = rng.choice(n_identities, size=len(records), p=sizes / sizes.sum())
    vectors = centres[owner] + rng.normal(scale=0.6, size=(len(records), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for row, rec in enumerate(records):
        n = int(rec.rel_path.split("_")[-1].split(".")[0])
        rec.faces, rec.face_index = [sources[n % len(sources)][1]], 0
        rec.width, rec.height = 200, 200
        rec.face_rows, rec.embedding_row = {0: row}, row
        rec.label = int(owner[row]) if rng.random() > 0.03 else -1
        rec.face_labels, rec.probability = {0: rec.label}, float(rec.label >= 0)
    # labels as clusterers leave them: 0 = largest
    ids = sorted({r.label for r in records if r.label >= 0}, key=lambda l: -sum(r.label == l for r in records))
    remap = {old: new for new, old in enumerate(ids)}
    for r in records:
        r.label = remap.get(r.label, -1)
        r.face_labels = {0: r.label}
    out = root / "out"
    cache = root / "cache"
    result = Result(records=records, embeddings=vectors.astype(np.float32), keys={"embeddings": "bench-%d" % n_images})
    export(records, out, "copy", progress=False)
    save_face_vectors(cache, result.keys["embeddings"], records, result.embeddings)
    cfg = {"cache_dir": str(cache), "export": {"mode": "copy"}, "embedder": {"distance_threshold": 0.07}}
    report = build_report(result, cfg, {"detector": "bench", "embedder": "synthetic"}, inp, out)
    write_report(out, report)
    shutil.copy2(out / "identity_clustering.json", root / "built.json")  # reset() starts over from this
    return out


def reset(root: Path) -> Path:
    """A kept folder back to its first-review state: no journal, the JSON as built, a cache holding
    only the run's face vectors (no thumbnails)."""

    from idcluster.cache.store import StageCache
    from idcluster.export.face_vectors import FACE_VECTORS

    out = root / "out"
    (out / "review_decisions.jsonl").unlink(missing_ok=True)
    shutil.copy2(root / "built.json", out / "identity_clustering.json")
    key = json.loads((root / "built.json").read_text())["cache_keys"]["embeddings"]
    arrays = StageCache(root / "cache").get_arrays(FACE_VECTORS, key)
    shutil.rmtree(root / "cache")
    StageCache(root / "cache").put_arrays(FACE_VECTORS, key, **arrays)
    return out


def measure(out: Path, label: str) -> dict:
    from starlette.testclient import TestClient

    from idcluster.review.server import create_app, reconcile_after_first_view
    from idcluster.review.store import ReviewStore

    t0 = time.perf_counter()
    store = ReviewStore(out, reconcile=False)  # as the CLI opens it: folders checked in the background
    t_open = time.perf_counter() - t0
    H = {"X-Review-Token": "t"}
    app = create_app(store, token="t")
    background = threading.Thread(target=reconcile_after_first_view, args=(store, app))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        t1 = time.perf_counter()
        background.start()
        state = c.get("/api/state", headers=H).json()
        t_state = time.perf_counter() - t1
        for d in state["identities"][:24]:
            for f in d["reps"]:
                assert c.get(f"/thumb/{f}", headers=H).status_code == 200
        t_first = time.perf_counter() - t1
        background.join()
        reconciled_s = time.perf_counter() - t1  # incl. the wait for the first view (+1.5 s for its thumbnails)
        t4 = time.perf_counter()
        n_sugg = len(c.get("/api/suggestions", headers=H).json()["suggestions"])  # the page asks after the first view
        t_sugg = time.perf_counter() - t4
        t2 = time.perf_counter()
        big = state["identities"][0]
        page = c.get(f"/api/identity/{big['id']}?limit=200", headers=H).json()
        for m in page["members"]:
            c.get(f"/thumb/{m['face']}", headers=H)
        t_page = time.perf_counter() - t2
        t3 = time.perf_counter()
        a, b = state["identities"][-2]["id"], state["identities"][-1]["id"]
        assert c.post("/api/action", json={"op": "merge", "ids": [a, b]}, headers=H).status_code == 200
        t_act = time.perf_counter() - t3
        c.post("/api/action", json={"op": "undo"}, headers=H)
    return {"run": label, "images": len(store.images), "identities": len(state["identities"]),
            "open_s": t_open, "state_s": t_state, "first_view_s": t_open + t_first, "first_screen_s": t_first,
            "reconciled_s": reconciled_s, "suggestions_s": t_sugg, "suggestions": n_sugg, "identity_page_s": t_page, "merge_s": t_act}


def measure_cli(out: Path, label: str) -> dict:
    """What a user waits for: `idcluster review OUT --no-browser` started as a process until the URL
    is printed, then the page, its script and style, /api/state and the first screen's thumbnails
    fetched over HTTP on 6 connections at once (as a browser does) until all have arrived."""
    import subprocess
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("idcluster")), "review", str(out), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = next((line.split()[1] for line in proc.stdout if line.startswith("open http")), None)
        t_url = time.perf_counter() - t0
        if url is None:
            raise SystemExit(f"review did not start: {proc.stdout.read()}")
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        base = f"{parts.scheme}://{parts.netloc}"

        def get(path: str) -> bytes:
            req = urllib.request.Request(base + path, headers={"X-Review-Token": token})
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read()

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(get, ["/", "/static/app.js", "/static/style.css"]))
            state = json.loads(get("/api/state"))
            list(pool.map(get, [f"/thumb/{f}" for d in state["identities"][:24] for f in d["reps"]]))
        t_view = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"run": label, "url_printed_s": t_url, "first_view_s": t_view}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--identities", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/review"))
    ap.add_argument("--folder", type=Path, default=None,
                    help="build the folder here and keep it (reused when it exists: its review journal and "
                         "thumbnails are reset first); default: a temporary folder")
    args = ap.parse_args()
    root = args.folder or Path(tempfile.mkdtemp(prefix="bench_review_"))
    try:
        t0 = time.perf_counter()
        if args.folder and (root / "out" / "identity_clustering.json").is_file():
            out = reset(root)
        else:
            out = build_folder(root, args.images, args.identities)
        build_s = time.perf_counter() - t0
        rows = [measure(out, "cold (first review)"), measure(out, "warm (reopen, thumbnails cached)")]
        reset(root)
        cli = [measure_cli(out, "cold (first review)"), measure_cli(out, "warm (reopen, thumbnails cached)")]
    finally:
        if not args.folder:
            shutil.rmtree(root, ignore_errors=True)
    cols = [("run", "{}"), ("images", "{}"), ("identities", "{}"), ("open_s", "{:.2f}"), ("state_s", "{:.2f}"),
            ("first_screen_s", "{:.2f}"), ("first_view_s", "{:.2f}"), ("reconciled_s", "{:.2f}"), ("suggestions_s", "{:.2f}"),
            ("identity_page_s", "{:.2f}"), ("merge_s", "{:.2f}")]
    table = markdown(rows, cols)
    cli_table = markdown(cli, [("run", "{}"), ("url_printed_s", "{:.2f}"), ("first_view_s", "{:.2f}")])
    write_outputs(args.out, {"machine": machine_info(), "build_s": build_s,
                             "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "cli": cli},
                  [f"idcluster review on {args.images} images, in process\n", table,
                   "\n`idcluster review` as a user starts it (process start, imports included)\n", cli_table])


if __name__ == "__main__":
    sys.exit(main())
