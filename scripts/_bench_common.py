"""Helpers shared by the benchmark scripts: machine facts, measured subprocesses, output.

Imported as a sibling module (`python scripts/bench_*.py` puts scripts/ on sys.path).
Timing runs share this machine with other people's jobs, so every measurement
records the load it started under, and `settle()` waits for a quiet CPU first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

from idcluster.experiments.evaluation import link_sets, read_labels

REPO = Path(__file__).resolve().parents[1]
DEFAULT_EVAL_ROOT = REPO.parent / "shared" / "eval"
# A timing that started above this 1-minute load average (2-core machine) is flagged.
MAX_LOAD = 1.5
# A run is contended when other processes used more than this share of all CPUs during it.
MAX_OTHERS = 0.10

try:  # optional: whole-process-tree RSS; without it only the largest process is known
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


# ---------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in (
            "idcluster", "numpy", "scikit-learn", "onnxruntime", "dlib-bin", "opencv-python", "psutil")},
    }


def cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat; None where unknown."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(fields)
    return (total - fields[3] - fields[4]) / tick, total / tick  # idle and iowait are not busy


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next `seconds`; -1 where unknown."""
    a = cpu_seconds()
    time.sleep(seconds)
    b = cpu_seconds()
    if a is None or b is None:
        return -1.0
    return (b[0] - a[0]) / max(b[1] - a[1], 1e-9)


class OthersCpu:
    """CPU share used by other processes while a block runs: machine busy time minus ours."""

    def __enter__(self):
        self._start, self._wall = cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._end, self.wall = cpu_seconds(), time.perf_counter() - self._wall

    def share(self, our_cpu_s: float) -> float | None:
        if self._start is None or self._end is None:
            return None
        others = max(0.0, self._end[0] - self._start[0] - our_cpu_s)
        return others / max(self.wall * (os.cpu_count() or 1), 1e-9)


def settle(max_busy: float = 0.25, max_wait: float = 180.0) -> dict:
    """Wait (bounded) until other jobs leave the CPU mostly idle; return the load at the start.

    The 1-minute load average lags by a minute (it still counts our own last
    run), so the wait uses current CPU use; the load average is recorded as asked.
    """
    t0 = time.monotonic()
    busy = cpu_busy(1.0 if max_wait > 0 else 0.2)
    while busy > max_busy and time.monotonic() - t0 < max_wait:
        time.sleep(4)
        busy = cpu_busy()
    load = os.getloadavg()
    return {
        "loadavg": [round(v, 2) for v in load],
        "cpu_busy_before": round(busy, 3),
        "waited_s": round(time.monotonic() - t0, 1),
        "busy_at_start": busy > max_busy or load[0] > MAX_LOAD,
    }


# ---------------------------------------------------------------- measured runs


class _TreeRss:
    """Samples the summed RSS of a process and its descendants (needs psutil)."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process(pid) if psutil else None
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(interval)

    def __enter__(self):
        if self._proc is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._proc is not None:
            self._thread.join()


def run_measured(cmd: list[str], log: Path | None = None, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run cmd to completion: wall time, CPU time and peak RSS including its child processes.

    os.wait4 reports the child's rusage including its waited-for descendants
    (the worker pool), so `peak_rss_max_process_mb` is the largest single
    process; `peak_rss_tree_mb` sums the live tree (sampled, needs psutil).
    """
    with open(log, "w") if log else contextlib.nullcontext(subprocess.DEVNULL) as out, OthersCpu() as others:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        with _TreeRss(proc.pid) as tree:
            _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_s": wall,
        "cpu_user_s": ru.ru_utime,
        "cpu_sys_s": ru.ru_stime,
        "peak_rss_max_process_mb": ru.ru_maxrss / 1024,  # Linux: KiB
        "peak_rss_tree_mb": tree.peak / 2**20 if psutil else None,
        "others_cpu_share": others.share(ru.ru_utime + ru.ru_stime),
    }


def quiet_run(measure, retries: int, settle_s: float) -> dict:
    """measure(attempt) -> dict with others_cpu_share; after settle(), rerun while other jobs shared the CPU.

    Keeps the least contended attempt and says how many were made.
    """
    best = None
    for attempt in range(retries + 1):
        load = settle(max_wait=settle_s)
        m = {**measure(attempt), **load, "load1": load["loadavg"][0], "attempts": attempt + 1}
        share = m.get("others_cpu_share")
        if best is None or (share or 0.0) < (best.get("others_cpu_share") or 0.0):
            best = m
        if share is None or share <= MAX_OTHERS:
            break
    best["attempts"] = attempt + 1
    best["contended"] = (best.get("others_cpu_share") or 0.0) > MAX_OTHERS
    return best


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def idcluster_cmd(*overrides: str) -> list[str]:
    """The user's invocation (`idcluster cluster ...`) with the interpreter running this script."""
    return [sys.executable, "-m", "idcluster", "cluster", *overrides, "--quiet"]


# ---------------------------------------------------------------- input sets


def link_input(eval_root: Path, names: list[str], dest: Path, per_identity: int | None = None) -> dict:
    """Symlink labelled sets into dest (never copied); per_identity keeps the first N files of each identity."""
    if per_identity is None:
        return link_sets([eval_root / n for n in names], dest)
    truth = {}
    for name in names:
        by_id: dict[str, list[str]] = {}
        for rel, identity in read_labels(eval_root / name).items():
            by_id.setdefault(identity, []).append(rel)
        for identity, rels in sorted(by_id.items()):
            for rel in sorted(rels)[:per_identity]:
                link = dest / name / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    os.symlink((eval_root / name / rel).resolve(), link)
                truth[f"{name}/{rel}"] = (name, f"{name}:{identity}")
    return truth


def missing_sets(eval_root: Path, names: list[str]) -> list[str]:
    return [n for n in names if not (eval_root / n).is_dir()]


# ---------------------------------------------------------------- output


def fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(fmt(r.get(c), spec) for c, spec in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def write_outputs(out: Path, data: dict, tables: list[str]) -> None:
    """OUT.json (everything measured) and OUT.md (the tables); the tables also go to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))
    text = "\n".join(tables)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
