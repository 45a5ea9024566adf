"""End-to-end pipeline on real faces, and the stage cache's reuse/invalidation rules."""

from __future__ import annotations

import contextlib
import errno
import logging
import os

import numpy as np
import pytest
from PIL import Image

from idcluster.pipeline import stages as pipeline
from idcluster import records as R
from idcluster.workflows.cluster import make_spec
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.experiments.metrics import bcubed_prf


def run(cfg, until="cluster"):
    return pipeline.run(make_spec(cfg, until, progress=False), until=until)


def labels_for(result, truth):
    by_name = {r.rel_path: r.label for r in result.records}
    names = sorted(truth)
    return [truth[n] for n in names], [by_name[n] for n in names]


@pytest.mark.parametrize("embedder, floor", [("dlib", 0.95), ("facenet", 0.95)])
def test_recovers_identities_of_real_faces(demo_set, tmp_path, embedder, floor, config):
    folder, truth = demo_set
    # workers=2 exercises the process pool.
    result = run(config(folder, f"embedder={embedder}", "workers=2"))
    assert len(result.records) == len(truth)
    y, pred = labels_for(result, truth)
    _, _, f1 = bcubed_prf(y, pred)
    assert f1 >= floor
    assert result.embeddings.shape[1] == {"dlib": 128, "facenet": 512}[embedder]
    assert np.allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)


class Spy:
    """Counts calls to a method while keeping its behaviour."""

    def __init__(self, monkeypatch, cls, name):
        self.calls = self.items = 0
        original = getattr(cls, name)

        def wrapped(obj, *a, **k):
            self.calls += 1
            self.items += len(a[0]) if name == "embed" else 1
            return original(obj, *a, **k)

        monkeypatch.setattr(cls, name, wrapped)


def test_second_run_computes_nothing(small_set, tmp_path, monkeypatch, config):
    folder, truth = small_set
    det = Spy(monkeypatch, RetinaFaceDetector, "detect")
    emb = Spy(monkeypatch, DlibEmbedder, "embed")
    first = run(config(folder))
    assert det.calls == len(truth) and emb.items == len(truth)
    assert emb.calls == -(-len(truth) // 16)  # faces of up to 16 images per forward pass
    second = run(config(folder))
    assert det.calls == len(truth) and emb.items == len(truth)  # no new calls
    assert not second.computed
    assert [r.label for r in first.records] == [r.label for r in second.records]


def test_clusterer_change_reruns_only_clustering(small_set, tmp_path, monkeypatch, config):
    folder, _ = small_set
    run(config(folder))
    det = Spy(monkeypatch, RetinaFaceDetector, "detect")
    emb = Spy(monkeypatch, DlibEmbedder, "embed")
    result = run(config(folder, "clusterer.linkage=complete"))
    assert (det.calls, emb.calls) == (0, 0)
    assert dict(result.computed) == {"cluster": 1}


def test_embedder_change_reembeds_without_redetecting(small_set, tmp_path, monkeypatch, config):
    folder, truth = small_set
    run(config(folder))
    det = Spy(monkeypatch, RetinaFaceDetector, "detect")
    result = run(config(folder, "embedder=facenet"))
    assert det.calls == 0
    assert result.computed["embed"] == len(truth) and "detect" not in result.computed


def test_detector_change_invalidates_everything(small_set, tmp_path, config):
    folder, truth = small_set
    run(config(folder))
    result = run(config(folder, "detector.score_threshold=0.8"))
    assert result.computed["detect"] == len(truth)
    assert result.computed["embed"] == len(truth)


def test_runtime_options_do_not_invalidate(small_set, tmp_path, config):
    folder, _ = small_set
    run(config(folder))
    result = run(config(folder, "detector.threads=1", "workers=2"))
    assert not result.computed


def test_renamed_file_reuses_cache(small_set, tmp_path, config):
    folder, truth = small_set
    run(config(folder))
    name = sorted(truth)[0]
    (folder / name).rename(folder / f"renamed_{name}")
    result = run(config(folder))
    assert "detect" not in result.computed and "embed" not in result.computed


def test_interrupted_run_resumes(small_set, tmp_path, monkeypatch, config):
    folder, truth = small_set
    original = DlibEmbedder.embed
    calls = {"n": 0}

    def flaky(self, chips):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, chips)

    monkeypatch.setattr(DlibEmbedder, "embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(config(folder, "batch_images=1"))
    monkeypatch.setattr(DlibEmbedder, "embed", original)
    result = run(config(folder))
    # The 7 images finished before the interrupt are kept; the rest are computed now.
    assert result.computed["embed"] == len(truth) - 7
    assert result.computed["detect"] == len(truth) - 7


def test_interrupted_batched_run_keeps_finished_batches(small_set, tmp_path, monkeypatch, config):
    folder, truth = small_set
    original = DlibEmbedder.embed
    calls = {"n": 0}

    def flaky(self, chips):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, chips)

    monkeypatch.setattr(DlibEmbedder, "embed", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(config(folder, "batch_images=3"))
    monkeypatch.setattr(DlibEmbedder, "embed", original)
    result = run(config(folder))
    assert result.computed["embed"] == len(truth) - 6  # two batches of 3 were cached


def test_corrupt_cache_entry_is_a_warning_and_a_recompute(small_set, tmp_path, caplog, config):
    folder, _ = small_set
    cfg = config(folder)
    run(cfg)
    from idcluster.cache import maintenance
    from idcluster.cache.pack import open_pack

    root = tmp_path / "cache"  # embeddings are packed: overwrite one with bytes no codec wrote
    key = min(e.packed.key for e in maintenance.entries(root)[0] if e.stage == pipeline.EMBED)
    open_pack(root).put(pipeline.EMBED, key, "npz", b"not an array record")
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        result = run(cfg)
    assert "corrupt cache entry" in caplog.text
    assert result.computed["embed"] == 1


def test_every_file_keeps_its_row_with_a_reason(small_set, tmp_path, config):
    folder, truth = small_set
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    Image.new("RGB", (200, 200), (30, 160, 90)).save(folder / "no_face.png")
    result = run(config(folder))
    by_name = {r.rel_path: r for r in result.records}
    assert len(result.records) == len(truth) + 3
    assert by_name["notes.txt"].reason == R.UNREADABLE
    assert by_name["broken.jpg"].reason == R.UNREADABLE and by_name["broken.jpg"].detail
    assert by_name["no_face.png"].reason == R.NO_FACE
    for name in ("notes.txt", "broken.jpg", "no_face.png"):
        assert by_name[name].label == -1


def test_small_faces_go_to_noise_without_reembedding(small_set, tmp_path, config):
    folder, _ = small_set
    run(config(folder))
    result = run(config(folder, "faces.min_face_size=150", "appearance.enabled=false"))
    small = [r for r in result.records if r.face.size < 150]
    assert small and all(r.reason == R.FACE_TOO_SMALL and r.label == -1 for r in small)
    assert all(r.reason != R.FACE_TOO_SMALL for r in result.records if r.face.size >= 150)
    assert "embed" not in result.computed and "detect" not in result.computed


def test_blur_filter_sends_blurry_faces_to_noise(small_set, tmp_path, config):
    folder, truth = small_set
    name = sorted(truth)[0]
    from PIL import ImageFilter

    Image.open(folder / name).convert("RGB").filter(ImageFilter.GaussianBlur(6)).save(folder / "blurred.png")
    result = run(config(folder, "faces.blur_threshold=20", "appearance.enabled=false"))
    by_name = {r.rel_path: r for r in result.records}
    assert by_name["blurred.png"].reason == R.BLURRY
    assert by_name["blurred.png"].blur < 20 < by_name[name].blur
    # The threshold is a filter after the cache: switching it off re-embeds nothing.
    assert "embed" not in run(config(folder, "appearance.enabled=false")).computed


def test_largest_face_of_a_group_photo_is_chosen(tmp_path, config):
    from idcluster.experiments.demo_data import insightface_image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(insightface_image("t1.jpg")).save(folder / "group.jpg")
    result = run(config(folder), until="detect")
    rec = result.records[0]
    assert len(rec.faces) == 6
    areas = [f.width * f.height for f in rec.faces]
    assert rec.face_index == int(np.argmax(areas))


def _side_by_side(a: Image.Image, b: Image.Image) -> Image.Image:
    h = max(a.height, b.height)
    out = Image.new("RGB", (a.width + b.width + 40, h), (128, 128, 128))
    out.paste(a, (0, 0))
    out.paste(b, (a.width + 40, 0))
    return out


@pytest.mark.parametrize("cannot_link", [True, False])
def test_select_all_clusters_every_face_and_respects_cannot_link(small_set, tmp_path, config, cannot_link):
    folder, truth = small_set
    person = sorted(truth)[0]
    crop = Image.open(folder / person).convert("RGB")
    # The same person twice in one photo: cannot-link must keep the two faces apart.
    _side_by_side(crop, crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).save(folder / "twice.png")
    result = run(config(folder, "faces.select=all", "clusterer=agglomerative",
                        f"clusterer.cannot_link_same_image={str(cannot_link).lower()}"))
    rec = next(r for r in result.records if r.rel_path == "twice.png")
    assert len(rec.face_rows) == 2 and len(result.embeddings) == len(truth) + 2
    assert set(result.groups.tolist()) == set(range(len(result.records)))
    person_label = next(r.label for r in result.records if r.rel_path == person)
    labels = sorted(rec.face_labels.values())
    if cannot_link:
        assert labels.count(person_label) == 1  # one face joins the person, the other cannot
    else:
        assert labels == [person_label, person_label]


def test_group_photo_lands_in_each_persons_folder(demo_set, tmp_path, config):
    from rich.console import Console

    from idcluster.workflows import cluster as app
    from idcluster.experiments.demo_data import insightface_image

    folder, truth = demo_set
    work = tmp_path / "in"
    work.mkdir()
    for name in truth:
        if truth[name].startswith("t1_person"):
            (work / name).symlink_to(folder / name)
    Image.open(insightface_image("t1.jpg")).save(work / "group.jpg")
    report = app.cluster(config(work, "faces.select=all"), Console(quiet=True), progress=False)
    row = next(r for r in report["images"] if r["rel_path"] == "group.jpg")
    identities = [f["identity"] for f in row["face_clusters"]]
    assert len(identities) == 6 and len(set(identities)) == 6 and "noise" not in identities
    for c in report["clusters"]:
        assert "group.jpg" in c["images"]
        assert (tmp_path / "out" / c["identity"] / "group.jpg").is_file()


def test_unreadable_subfolder_is_a_warning(small_set, tmp_path, config, caplog, monkeypatch):
    folder, truth = small_set
    locked = folder / "locked"
    locked.mkdir()
    (locked / "hidden.png").write_bytes(b"never read")
    real_scandir = os.scandir

    def scandir(path="."):  # what a folder without read permission does (root would read it anyway)
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING, logger="idcluster"):
        result = run(config(folder), until="detect")
    assert len(result.records) == len(truth)
    assert f"cannot read folder {locked} (Permission denied): its files are skipped" in caplog.text


def test_reduction_is_cached_and_shared_by_clusterer_changes(small_set, config):
    folder, _ = small_set
    first = run(config(folder, "reducer=pca", "reducer.n_components=8"))
    assert first.computed["reduce"] == 1
    second = run(config(folder, "reducer=pca", "reducer.n_components=8", "clusterer.linkage=complete"))
    assert dict(second.computed) == {"cluster": 1}
    assert "reduce" not in run(config(folder)).computed  # reducer=none stores nothing


@contextlib.contextmanager
def _unreadable(path):
    """A read of `path` fails with the OS's PermissionError: chmod 000, or where that cannot stop
    us (root reads any file) a failing open of that one file. Readable again on exit."""
    from idcluster.inputs import images

    real_open = images.Image.open

    def denied(p, *a, **k):
        if str(p) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        return real_open(p, *a, **k)

    with pytest.MonkeyPatch.context() as m:
        if os.geteuid() != 0:
            path.chmod(0)
        else:
            m.setattr(images.Image, "open", denied)
        try:
            yield
        finally:
            path.chmod(0o644)


def test_a_read_error_is_not_cached_and_is_retried(small_set, tmp_path, config):
    folder, truth = small_set
    name = sorted(truth)[0]
    # Another detector config first: the stat index then knows every file's hash, so the
    # next scan does not read the file and the failure happens where the pipeline decodes it.
    run(config(folder, "detector.score_threshold=0.85"))
    with _unreadable(folder / name):
        failed = run(config(folder))
    rec = next(r for r in failed.records if r.rel_path == name)
    assert rec.reason == R.UNREADABLE and "PermissionError" in rec.detail
    assert failed.computed["detect"] == len(truth) - 1  # the failure was not cached as a detection

    again = run(config(folder))
    rec = next(r for r in again.records if r.rel_path == name)
    assert rec.reason is None and rec.faces and rec.label >= 0
    assert (again.computed["detect"], again.computed["embed"]) == (1, 1)  # retried: only that image


def test_a_decode_failure_is_cached_for_the_decoders_that_failed(small_set, tmp_path, monkeypatch, config):
    from idcluster.pipeline import work

    folder, _ = small_set
    (folder / "notes.jpg").write_text("not an image")
    first = run(config(folder))
    assert next(r for r in first.records if r.rel_path == "notes.jpg").reason == R.UNREADABLE
    second = run(config(folder))
    assert "detect" not in second.computed  # the same bytes, the same decoders: the same failure
    # Other decoders (a Pillow upgrade, a new format plugin) may read it: decode it again ...
    monkeypatch.setattr(work, "decoders_id", lambda: "Pillow 99 new-plugin")
    third = run(config(folder))
    assert dict(third.computed) == {"detect": 1}  # same faces: clustering comes from the cache
    assert next(r for r in third.records if r.rel_path == "notes.jpg").reason == R.UNREADABLE
    # ... except when only reading the cache (export): the earlier run's outcome stands.
    monkeypatch.setattr(work, "decoders_id", lambda: "Pillow 100 newer")
    spec = make_spec(config(folder), "cluster", progress=False)
    assert not pipeline.run(spec, cached_only=True).computed
