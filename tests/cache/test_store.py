"""StageCache: stable keys, round trips (packed and one file per entry), fan-out layout, corrupt entries are a
warning and a miss."""

import io
import logging
import os
import zipfile

import numpy as np
import pytest

from idcluster.cache.pack import PACK_NAME
from idcluster.cache.store import StageCache, cache_key

# Golden values: SHA-256 of the compact sorted JSON of the parts, e.g.
# '["detect","abc",{"a":2,"b":1}]'. If these change, every user's cache is invalidated.
GOLDEN = {
    ("detect", "abc", (("b", 1), ("a", 2))): "5d72abce52b9a9bc0bf4044797edba2a8c914be9c24aad19c88855e1ccc44246",
    ("embed", "abc", (("model", "dlib"), ("chip_size", 150), ("padding", 0.25))):
        "8f4809e6c55ae6a348896c14000edd44c689cd55163af731e682d60dbce978a4",
}
KEY = GOLDEN[("detect", "abc", (("b", 1), ("a", 2)))]


@pytest.mark.parametrize("spec, expected", list(GOLDEN.items()))
def test_golden_keys(spec, expected):
    stage, digest, params = spec
    assert cache_key(stage, digest, dict(params)) == expected


def test_dict_order_does_not_matter_but_params_do():
    k = cache_key("detect", "abc", {"b": 1, "a": 2})
    assert k == cache_key("detect", "abc", {"a": 2, "b": 1})
    assert cache_key("detect", "abc", {"a": 2, "b": 1.5}) != k
    assert cache_key("detect", "abc", {"a": 2}) != k
    assert cache_key("detect", "abd", {"b": 1, "a": 2}) != k
    assert cache_key("embed", "abc", {"b": 1, "a": 2}) != k
    nested = cache_key("x", {"p": {"z": 1, "y": [1, 2]}})
    assert nested == cache_key("x", {"p": {"y": [1, 2], "z": 1}})


def test_path_layout(tmp_path):
    cache = StageCache(tmp_path)
    assert cache.path("detect", KEY, "json") == tmp_path / "detect" / KEY[:2] / f"{KEY[2:]}.json"


LAYOUTS = {"packed": {}, "files": {"pack_max_bytes": 0}}


@pytest.fixture(params=list(LAYOUTS))
def layout(request):
    return request.param


def _where(cache, stage, key, ext, layout):
    """The entry is where its layout puts it, and only there."""
    assert cache.path(stage, key, ext).is_file() == (layout == "files")
    assert (cache.root / PACK_NAME).is_file() == (layout == "packed")


def test_json_round_trip_and_miss(tmp_path, layout):
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    assert cache.get_json("detect", KEY) is None
    value = {"faces": [{"box": [1.5, 2.0, 30.0, 40.0], "score": 0.99}], "n": 1, "tag": None}
    cache.put_json("detect", KEY, value)
    _where(cache, "detect", KEY, "json", layout)
    assert cache.get_json("detect", KEY) == value
    assert cache.get_json("other", KEY) is None  # stages do not share entries


def test_arrays_round_trip(tmp_path, layout):
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    assert cache.get_arrays("embed", KEY) is None
    emb = np.random.default_rng(0).normal(size=(5, 128)).astype(np.float32)
    labels = np.array([0, 0, 1, -1, 1], dtype=np.int64)
    cache.put_arrays("embed", KEY, embeddings=emb, labels=labels, blur=np.float64(3.5))
    _where(cache, "embed", KEY, "npz", layout)
    got = cache.get_arrays("embed", KEY)
    assert set(got) == {"embeddings", "labels", "blur"}
    np.testing.assert_array_equal(got["embeddings"], emb)
    assert got["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(got["labels"], labels)
    assert got["blur"].shape == () and float(got["blur"]) == 3.5


def test_bytes_round_trip(tmp_path, layout):
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    cache.put_bytes("thumbs", KEY, "jpg", b"\xff\xd8 a jpeg")
    _where(cache, "thumbs", KEY, "jpg", layout)
    assert cache.get_bytes("thumbs", KEY, "jpg") == b"\xff\xd8 a jpeg"
    assert cache.get_bytes("thumbs", KEY, "png") is None


def test_put_overwrites(tmp_path, layout):
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    cache.put_json("detect", KEY, [1])
    cache.put_json("detect", KEY, [2])
    assert cache.get_json("detect", KEY) == [2]


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _zip_with_bad_member():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", b"not an npy payload")
    return buf.getvalue()


GOOD_NPZ = _npz_bytes(x=np.arange(1000.0))


@pytest.mark.parametrize(
    "kind, garbage",
    [
        ("json", b"\x00\xffnot json{{"),
        ("json", b'{"no_value_key": 1}'),
        ("json", b"[1, 2]"),
        ("json", b""),
        ("npz", b"\x00\x01\x02 random bytes"),
        ("npz", b"PK\x03\x04 garbage, not a zip"),
        ("npz", GOOD_NPZ[: len(GOOD_NPZ) // 2]),  # truncated write
        ("npz", GOOD_NPZ[:200] + b"\x00" * 100 + GOOD_NPZ[300:]),  # bad CRC
        ("npz", b""),
        ("npz", _npy_bytes(np.arange(3))),  # a bare .npy, not an archive
        ("npz", _zip_with_bad_member()),  # a zip whose member is not .npy
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_corrupt_entry_is_warning_and_miss(tmp_path, caplog, kind, garbage):
    cache = StageCache(tmp_path)
    path = cache.path("stage", KEY, kind)
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    get = cache.get_json if kind == "json" else cache.get_arrays
    with caplog.at_level(logging.WARNING, logger="idcluster.cache.store"):
        assert get("stage", KEY) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrupt cache entry" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()
    assert not path.exists()  # removed, so the next run recomputes and rewrites it


@pytest.mark.parametrize(
    "kind, garbage",
    [
        ("json", b"\x00\xffnot json{{"),
        ("json", b""),
        ("npz", b"\x00\x01\x02 random bytes"),
        ("npz", GOOD_NPZ),  # an .npz is not the pack's array record
        ("npz", b""),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_corrupt_packed_entry_is_warning_and_miss(tmp_path, caplog, kind, garbage):
    cache = StageCache(tmp_path)
    cache.put_json("stage", cache_key("neighbour"), {"kept": True})
    cache._packed().put("stage", KEY, kind, garbage)  # bytes the codecs never wrote
    get = cache.get_json if kind == "json" else cache.get_arrays
    with caplog.at_level(logging.WARNING, logger="idcluster.cache.store"):
        assert get("stage", KEY) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrupt cache entry" in warnings[0].getMessage()
    assert f"stage/{KEY}.{kind}" in warnings[0].getMessage()
    assert cache._packed().get("stage", KEY, kind) is None  # removed: the next run recomputes it
    assert cache.get_json("stage", cache_key("neighbour")) == {"kept": True}


def _temp_files(root):
    return [p for p in root.rglob(".tmp-*")]


def test_put_leaves_no_temp_files(tmp_path, layout):
    cache = StageCache(tmp_path, **LAYOUTS[layout])
    cache.put_json("detect", KEY, {"a": 1})
    cache.put_arrays("embed", KEY, x=np.zeros(3))
    assert _temp_files(tmp_path) == []
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    if layout == "files":
        assert files == sorted([f"{KEY[2:]}.json", f"{KEY[2:]}.npz", "CACHEDIR.TAG"])
    else:  # one database (and SQLite's write-ahead log and shared-memory index beside it)
        assert files == sorted(["CACHEDIR.TAG", PACK_NAME, PACK_NAME + "-wal", PACK_NAME + "-shm"])


@pytest.mark.parametrize("kind", ["json", "npz"])
def test_failed_write_leaves_no_temp_and_no_entry(tmp_path, monkeypatch, kind):
    cache = StageCache(tmp_path, **LAYOUTS["files"])

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        if kind == "json":
            cache.put_json("s", KEY, {"a": 1})
        else:
            cache.put_arrays("s", KEY, x=np.ones(4))
    monkeypatch.undo()
    assert _temp_files(tmp_path) == []
    assert not cache.path("s", KEY, kind).exists()
    assert (cache.get_json if kind == "json" else cache.get_arrays)("s", KEY) is None
