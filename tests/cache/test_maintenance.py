"""The user-level cache: its default location, sharing across runs, `cache info|prune`, the
stat index that spares re-hashing, concurrent runs and the output-folder lock."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from idcluster.cache import array_codec
from idcluster.cache import maintenance as cm
from idcluster.cache.pack import PACK_NAME
from idcluster.inputs import scan as scan_mod
from idcluster.cache.store import CACHEDIR_TAG, StageCache, cache_key, default_cache_dir
from idcluster.cli import app
from idcluster.config.compose import load_config
from idcluster.errors import InputError
from idcluster.export.locking import output_lock
from idcluster.inputs.scan import scan_folder
from idcluster.inputs.stat_index import StatIndex

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_default_cache_follows_the_user_not_the_output(monkeypatch, tmp_path):
    monkeypatch.delenv("IDCLUSTER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_config(["input_dir=x", "output_dir=a"]).cache_dir == str(tmp_path / "xdg" / "idcluster")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "idcluster"
    monkeypatch.setenv("IDCLUSTER_CACHE", str(tmp_path / "mine"))
    assert load_config(["input_dir=x"]).cache_dir == str(tmp_path / "mine")
    assert load_config(["input_dir=x", f"cache_dir={tmp_path / 'cli'}"]).cache_dir == str(tmp_path / "cli")


def test_a_new_output_folder_and_a_copied_input_folder_reuse_the_cache(small_set, tmp_path):
    folder, truth = small_set
    common = ["clusterer.min_cluster_size=3", "tracking=off", "workers=1", "--quiet"]
    assert invoke("cluster", f"input_dir={folder}", f"output_dir={tmp_path / 'out1'}", *common).exit_code == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / f"renamed_{p.name}").write_bytes(p.read_bytes())
    for inp, out in ((folder, "out2"), (copy, "out3")):
        result = invoke("cluster", f"input_dir={inp}", f"output_dir={tmp_path / out}", *common)
        assert result.exit_code == 0, result.output
        stats = json.loads((tmp_path / out / "identity_clustering.json").read_text())["statistics"]
        assert stats["computed"] == {}, out  # nothing detected, embedded or clustered again


LAYOUTS = {"packed": {}, "files": {"pack_max_bytes": 0}}


@pytest.fixture(params=list(LAYOUTS))
def layout(request):
    return request.param


def _set_last_use(root: Path, key: str, t: float, layout: str) -> None:
    if layout == "files":
        p = StageCache(root).path("embed-v1", key, "npz")
        os.utime(p, (t, t))
    else:  # what a hit t seconds after the epoch would have written
        with sqlite3.connect(root / PACK_NAME) as db:
            assert db.execute("UPDATE entries SET used = ? WHERE key = ?", (int(t), bytes.fromhex(key))).rowcount == 1
        db.close()


def _present(root: Path) -> set[str]:
    found, _ = cm.entries(root)
    return {e.packed.key if e.packed else e.path.parent.name + e.path.name.split(".")[0] for e in found}


def _fill(root: Path, n: int, layout: str, age_s: float = 0.0) -> list[str]:
    cache = StageCache(root, **LAYOUTS[layout])
    keys = []
    for i in range(n):
        key = cache_key("t", i)
        cache.put_arrays("embed-v1", key, x=np.zeros(100))
        _set_last_use(root, key, time.time() - age_s - i, layout)  # entry 0 most recently used
        keys.append(key)
    return keys


def test_info_counts_entries_per_stage(tmp_path, layout):
    root = tmp_path / "c"
    _fill(root, 3, layout)
    StageCache(root, **LAYOUTS[layout]).put_json("detect-v1", cache_key("d"), {"faces": []})
    stats = cm.info(root)
    assert stats["stages"]["embed-v1"]["entries"] == 3 and stats["stages"]["detect-v1"]["entries"] == 1
    if layout == "files":
        assert stats["bytes"] == sum(p.stat().st_size for p in root.rglob("*.*") if p.name != CACHEDIR_TAG)
        assert stats["pack"] is None
    else:  # the bytes stored: three array records and one JSON text
        assert stats["bytes"] == 3 * len(array_codec.encode({"x": np.zeros(100)})) + len(b'{"faces":[]}')
        assert stats["pack"]["entries"] == 4 and stats["pack"]["disk_bytes"] >= stats["bytes"]
        assert PACK_NAME not in stats["other_files"]
    assert stats["entries"] == 4
    result = invoke("cache", "info", f"cache_dir={root}")
    assert result.exit_code == 0 and "4 entries" in result.output and "embed-v1" in result.output


def test_prune_older_than_and_max_size_drop_least_recently_used_first(tmp_path, layout):
    root = tmp_path / "c"
    keys = _fill(root, 6, layout)
    for key in keys[4:]:  # two entries unused for 40 days
        _set_last_use(root, key, time.time() - 40 * 86400, layout)
    outside = tmp_path / "precious.npz"
    outside.write_bytes(b"user data")
    stray = root / "notes.txt"
    stray.write_text("not an entry")
    r = cm.prune(root, older_than_s=cm.parse_age("30d"))
    assert r["removed"] == 2 and _present(root) == set(keys[:4])
    size = r["kept_bytes"] // 4
    r = cm.prune(root, max_bytes=2 * size)
    assert r["removed"] == 2 and _present(root) == set(keys[:2])
    cache = StageCache(root)
    assert [cache.get_arrays("embed-v1", k) is not None for k in keys] == [True, True, False, False, False, False]
    assert outside.exists() and stray.exists() and (root / CACHEDIR_TAG).exists()


def test_prune_gives_the_packed_space_back(tmp_path):
    root = tmp_path / "c"
    cache = StageCache(root)
    for i in range(2000):
        cache.put_arrays("embed-v1", cache_key("t", i), embedding=np.full(128, i, np.float32))
    full = cm.info(root)["pack"]["disk_bytes"]
    r = cm.prune(root, max_bytes=0)
    assert r["removed"] == 2000 and r["kept"] == 0
    assert cm.info(root)["pack"]["disk_bytes"] < full / 5  # freed pages returned, write-ahead log truncated
    assert cache.get_arrays("embed-v1", cache_key("t", 0)) is None


def test_prune_dry_run_and_refusals(tmp_path, layout):
    keys = _fill(tmp_path / "c", 3, layout)
    result = invoke("cache", "prune", f"cache_dir={tmp_path / 'c'}", "--max-size", "0B", "--dry-run")
    assert result.exit_code == 0 and "would remove 3 entries" in result.output
    assert _present(tmp_path / "c") == set(keys)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ab").mkdir()
    (plain / "ab" / ("c" * 62 + ".npz")).write_bytes(b"x")
    result = invoke("cache", "prune", f"cache_dir={plain}", "--max-size", "0B")
    assert result.exit_code == 2 and "not an idcluster cache" in result.output
    assert (plain / "ab" / ("c" * 62 + ".npz")).exists()
    with pytest.raises(InputError, match="cannot read size"):
        cm.parse_size("lots")
    with pytest.raises(InputError, match="cannot read age"):
        cm.parse_age("30 days")


def _last_use(root: Path, key: str) -> float:
    [e] = [e for e in cm.entries(root)[0] if (e.packed.key if e.packed else None) == key or e.path.stem == key[2:]]
    return e.mtime


def test_a_hit_refreshes_the_entry_for_lru(tmp_path, layout):
    (key,) = _fill(tmp_path, 1, layout, age_s=3 * 86400)
    before = _last_use(tmp_path, key)
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    assert cache.get_arrays("embed-v1", key) is not None
    cache.flush()  # packed refreshes are batched (written every few hundred hits, and at exit)
    assert _last_use(tmp_path, key) > before + 86400
    refreshed = _last_use(tmp_path, key)
    _set_last_use(tmp_path, key, refreshed - 3600, layout)  # used an hour ago: a hit writes nothing
    assert cache.get_arrays("embed-v1", key) is not None
    cache.flush()
    assert _last_use(tmp_path, key) == pytest.approx(refreshed - 3600, abs=1)


def test_packed_refreshes_are_written_when_the_process_exits(tmp_path):
    (key,) = _fill(tmp_path, 1, "packed", age_s=3 * 86400)
    before = _last_use(tmp_path, key)
    code = ("import sys; from idcluster.cache.store import StageCache; "
            f"c = StageCache({str(tmp_path)!r}); sys.exit(c.get_arrays('embed-v1', {key!r}) is None)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert _last_use(tmp_path, key) > before + 86400


def test_stat_index_spares_unchanged_files_and_rehashes_changed_ones(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"{i}.bin").write_bytes(bytes([i]) * 1000)
    calls = []
    real = scan_mod.sha256_file
    monkeypatch.setattr(scan_mod, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    cache = tmp_path / "cache"
    with StatIndex(cache) as index:
        first = scan_folder(src, index=index)
    assert len(calls) == 4
    calls.clear()
    with StatIndex(cache) as index:
        again = scan_folder(src, index=index)
        assert index.hits == 4
    assert calls == [] and [r.sha256 for r in again] == [r.sha256 for r in first]
    # Same size, new content: mtime moves, so it is re-hashed and gets its new hash.
    (src / "2.bin").write_bytes(b"\xff" * 1000)
    with StatIndex(cache) as index:
        changed = scan_folder(src, index=index)
    assert calls == ["2.bin"]
    assert changed[2].sha256 == real(src / "2.bin") != first[2].sha256


def test_broken_stat_index_is_a_warning_and_a_full_hash(tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.bin").write_bytes(b"abc")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stat-index.sqlite").write_bytes(b"this is not a database" * 100)
    with StatIndex(tmp_path / "cache") as index:
        recs = scan_folder(tmp_path / "in", index=index)
    assert recs[0].sha256 == scan_mod.sha256_file(tmp_path / "in" / "a.bin")
    assert "stat index" in caplog.text


def test_second_run_into_a_locked_output_folder_refuses_at_once(small_set, tmp_path):
    folder, _ = small_set
    out = tmp_path / "out"
    with output_lock(out, "review"):
        t0 = time.perf_counter()
        result = invoke("cluster", f"input_dir={folder}", f"output_dir={out}", "tracking=off", "--quiet")
        elapsed = time.perf_counter() - t0
    assert result.exit_code == 2
    assert "another idcluster process (review, pid" in result.output and str(out) in result.output
    assert not (tmp_path / "cache" / PACK_NAME).exists(), "refused before computing anything"
    assert not (tmp_path / "cache" / "detect-v1").exists()
    assert elapsed < 60
    # the lock is gone with its holder: the same command now runs
    result = invoke("cluster", f"input_dir={folder}", f"output_dir={out}", "tracking=off", "--quiet",
                    "clusterer.min_cluster_size=3", "workers=1")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_two_processes_on_overlapping_images_share_one_consistent_cache(small_set, tmp_path):
    folder, truth = small_set
    env = {**os.environ, "IDCLUSTER_CACHE": str(tmp_path / "shared")}
    cmd = [sys.executable, "-c", "from idcluster.cli import main; main()", "cluster", f"input_dir={folder}", "tracking=off", "--quiet",
           "clusterer.min_cluster_size=3", "workers=1"]
    procs = [subprocess.Popen([*cmd, f"output_dir={tmp_path / f'out{i}'}"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [json.loads((tmp_path / f"out{i}" / "identity_clustering.json").read_text()) for i in range(2)]
    assert reports[0]["clusters"] == reports[1]["clusters"]
    cache = StageCache(tmp_path / "shared")
    found, stale = cm.entries(tmp_path / "shared")
    assert stale == [] and not list((tmp_path / "shared").rglob(".tmp-*"))
    assert found and all(e.packed for e in found)  # every per-image entry packed, none a file
    for e in found:  # every entry either process wrote reads back whole
        got = cache.get_json(e.stage, e.packed.key) if e.packed.ext == "json" else cache.get_arrays(e.stage, e.packed.key)
        assert got is not None, e.packed
    third = subprocess.run([*cmd, f"output_dir={tmp_path / 'out3'}"], env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stdout + third.stderr
    stats = json.loads((tmp_path / "out3" / "identity_clustering.json").read_text())["statistics"]
    assert stats["computed"] == {}
