"""The per-image seams: typed work items/results, worker copies that leave the caller's components alone."""

from __future__ import annotations

import pickle

import numpy as np

from idcluster.detectors.chain import ChainDetector
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.embedders.dlib_resnet import DlibEmbedder
from idcluster.pipeline import stages as pipeline
from idcluster.pipeline.work import Detection, FaceEmbedding, ImageStages, WorkItem, WorkResult, work_batch
from idcluster.records import Face
from idcluster.workflows.cluster import make_spec


class PlainDetector:
    """A plug-in outside idcluster's bases, with a thread setting."""

    model_id = "plain:v1"

    def __init__(self, threads: int = 0):
        self.threads = threads

    def detect(self, image):
        return []


def test_worker_copies_never_change_the_callers_components():
    det, emb = RetinaFaceDetector(threads=0), DlibEmbedder(threads=0)
    det._session = object()  # a loaded model: it must not travel to (or be shared with) the copy
    stages = ImageStages(det, emb, "largest", 32.0)
    workers = stages.for_workers()
    assert (workers.detector.threads, workers.embedder.threads) == (1, 1)
    assert (det.threads, emb.threads) == (0, 0) and workers.detector is not det and workers.embedder is not emb
    assert workers.detector._session is None and det._session is not None
    assert workers.detector.model_id == det.model_id and workers.embedder.model_id == emb.model_id
    assert (workers.select, workers.min_face_size) == ("largest", 32.0)

    pinned = RetinaFaceDetector(threads=3)  # a thread count the user chose is kept, and nothing is copied
    assert ImageStages(pinned).for_workers().detector is pinned

    plain = PlainDetector()
    copy = ImageStages(plain).for_workers().detector
    assert copy.threads == 1 and plain.threads == 0

    member = RetinaFaceDetector(threads=0)
    chain = ChainDetector([member, PlainDetector()], names=["a", "b"], threads=0)
    copy = ImageStages(chain).for_workers().detector
    assert [d.threads for d in copy.detectors] == [1, 1] and [d.threads for d in chain.detectors] == [0, 0]
    assert chain.threads == 0 and chain.detectors[0] is member


def test_a_pooled_run_leaves_the_specs_components_as_they_were(small_set, tmp_path, config):
    folder, truth = small_set
    spec = make_spec(config(folder, "workers=2"), "embed", progress=False)
    assert (spec.detector.threads, spec.embedder.threads) == (0, 0)
    result = pipeline.run(spec, until="embed")
    assert result.computed["embed"] == len(truth)  # really ran (on the pool: 21 images, 2 workers)
    assert (spec.detector.threads, spec.embedder.threads) == (0, 0)


def test_detection_round_trips_through_its_cache_entry():
    face = Face(box=(1.234, 2.0, 30.5, 40.25), landmarks=((1.111, 2.222),) * 5, score=0.987654321, detector="x")
    found = Detection.found([face], (50, 60, 3))
    assert (found.width, found.height) == (60, 50)
    assert found.faces[0].box == (1.23, 2.0, 30.5, 40.25) and found.faces[0].score == 0.98765  # the cache's rounding
    assert Detection.from_entry(found.to_entry()) == found and found.cacheable
    assert found.to_entry() == {"faces": [face.to_dict()], "width": 60, "height": 50}  # the cache format is unchanged

    read_error = Detection(error="PermissionError: denied")
    assert not read_error.cacheable  # may pass next time
    failed = Detection(error="UnidentifiedImageError: no", decoders="Pillow 1 abc")
    assert failed.cacheable and Detection.from_entry(failed.to_entry()) == failed
    assert Detection.from_entry({"error": "old entry"}).decoders is None  # before decoders were recorded


def test_work_batch_returns_typed_results_that_pickle(small_set, tmp_path):
    folder, truth = small_set
    paths = [str(folder / n) for n in sorted(truth)[:2]] + [str(folder / "missing.png")]
    stages = ImageStages(RetinaFaceDetector(), DlibEmbedder(), "largest", 0.0)
    outs = work_batch(stages, [WorkItem(i, p, embed=True) for i, p in enumerate(paths)])
    assert all(isinstance(o, WorkResult) for o in outs)
    for out in outs[:2]:
        assert out.detection.faces and set(out.embeddings) == {0}
        emb = out.embeddings[0]
        assert isinstance(emb, FaceEmbedding) and emb.vector.shape == (128,) and emb.blur > 0
        assert np.isclose(np.linalg.norm(emb.vector), 1.0, atol=1e-5)
        assert set(out.times) == {"decode", "detect", "embed"}
    assert outs[2].detection.error.startswith("FileNotFoundError") and not outs[2].detection.cacheable
    again = pickle.loads(pickle.dumps(outs))  # results travel back from worker processes
    assert again[0].detection == outs[0].detection
