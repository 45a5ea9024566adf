#!/usr/bin/env python
"""The per-image stage cache at N images: one file per entry (before) against the packed store, in one run.

Each image gets what the pipeline caches for it: a detection JSON (one face: box,
5 landmarks, score; ~250 bytes as a file) and a 128-d float32 embedding with its
blur score (an .npz of 1,032 bytes as a file), keyed exactly as the pipeline keys
them, written and read back through `StageCache`. Per layout: write and read
time, files, bytes stored (the entries' own sizes) against `du` (apparent and on
disk), and the housekeeping: `cache info`, `cache prune --max-size` (half the
entries, least recently used first) and removing the whole cache.

  python scripts/bench_cache.py --entries 10000                      # both layouts, a temp dir
  nice -n 10 python scripts/bench_cache.py --entries 100000 1000000 --layouts packed files
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _bench_common import machine_info, markdown, write_outputs

from idcluster.cache import maintenance as cm
from idcluster.cache.store import PACK_MAX_BYTES, StageCache, cache_key
from idcluster.pipeline.stages import DETECT, EMBED

LAYOUTS = {"files": 0, "packed": PACK_MAX_BYTES}  # StageCache(pack_max_bytes=...)
COLUMNS = [("layout", "{}"), ("images", "{:,}"), ("files", "{:,}"), ("write_s", "{:.1f}"), ("read_s", "{:.1f}"),
           ("write_us_per_entry", "{:.0f}"), ("read_us_per_entry", "{:.0f}"), ("stored_mb", "{:.1f}"),
           ("apparent_mb", "{:.1f}"), ("disk_mb", "{:.1f}"), ("disk_per_stored", "{:.2f}"), ("info_s", "{:.2f}"),
           ("prune_half_s", "{:.1f}"), ("disk_after_prune_mb", "{:.1f}"), ("remove_s", "{:.1f}")]


def du_mb(root: Path, apparent: bool) -> float:
    cmd = ["du", "-sk", *(["--apparent-size"] if apparent else []), str(root)]
    return int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[0]) / 1024


def entry_values(n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        face = {"box": [round(float(v), 2) for v in rng.uniform(10, 110, 4)],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in rng.uniform(30, 100, (5, 2))],
                "score": round(float(rng.uniform(0.9, 1)), 5), "detector": "retinaface"}
        vec = rng.normal(size=128).astype(np.float32)
        yield cache_key("detect", f"{i:064x}", ["retinaface-model-id", {}]), face, vec / np.linalg.norm(vec)


def bench(layout: str, n: int, root: Path) -> dict:
    cache = StageCache(root, pack_max_bytes=LAYOUTS[layout])
    keys = []
    t0 = time.perf_counter()
    for key, face, vec in entry_values(n):
        cache.put_json(DETECT, key, {"faces": [face], "width": 150, "height": 150})
        cache.put_arrays(EMBED, key, embedding=vec, blur=np.float64(100.0))
        keys.append(key)
    write_s = time.perf_counter() - t0
    if layout == "packed":
        cache._packed().close()  # as at the end of a run: the write-ahead log folds into the database
    subprocess.run(["sync"], check=False)
    rng = np.random.default_rng(1)
    order = rng.permutation(n)  # the pipeline reads in input order, which is random in key order
    cache = StageCache(root, pack_max_bytes=LAYOUTS[layout])
    t0 = time.perf_counter()
    for i in order:
        assert cache.get_json(DETECT, keys[i]) is not None
        assert cache.get_arrays(EMBED, keys[i]) is not None
    read_s = time.perf_counter() - t0
    files = sum(len(f) for _, _, f in os.walk(root))
    apparent, disk = du_mb(root, True), du_mb(root, False)
    t0 = time.perf_counter()
    stats = cm.info(root)
    info_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pruned = cm.prune(root, max_bytes=stats["bytes"] // 2)
    prune_s = time.perf_counter() - t0
    after = du_mb(root, False)
    del cache
    t0 = time.perf_counter()
    shutil.rmtree(root)
    remove_s = time.perf_counter() - t0
    stored = stats["bytes"] / 2**20
    return {"layout": layout, "images": n, "entries": stats["entries"], "files": files,
            "write_s": write_s, "read_s": read_s,
            "write_us_per_entry": 1e6 * write_s / (2 * n), "read_us_per_entry": 1e6 * read_s / (2 * n),
            "stored_mb": stored, "apparent_mb": apparent, "disk_mb": disk, "disk_per_stored": disk / stored,
            "info_s": info_s, "prune_half_s": prune_s, "pruned": pruned["removed"], "disk_after_prune_mb": after,
            "remove_s": remove_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, nargs="+", default=[10_000], help="images per measurement")
    ap.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    ap.add_argument("--root", type=Path, default=None, help="where the caches are written (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/cache"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="idcluster-bench-cache-", dir=args.root) as tmp:
        for n in args.entries:
            for layout in args.layouts:
                rows.append(bench(layout, n, Path(tmp) / f"{layout}-{n}"))
                print(markdown(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    data = {"machine": machine_info(), "load_before": load, "load_after": os.getloadavg(), "rows": rows}
    write_outputs(args.out, data, [
        "# Stage cache: a file per entry vs the packed store\n",
        f"Load average before / after: {' '.join(f'{v:.2f}' for v in load)} / "
        f"{' '.join(f'{v:.2f}' for v in data['load_after'])}\n",
        markdown(rows, COLUMNS)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
