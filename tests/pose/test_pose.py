"""Head pose on real faces (signs, frontal shots, 5 vs 68 points), bins, the pose cache and subcluster-pose."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from idcluster.pose import estimate as P
from idcluster.cache.store import StageCache
from idcluster.cli import app

from tests.conftest import cluster_demo_subset
from idcluster.config.compose import build, group_options, load_config
from idcluster.errors import ConfigError
from idcluster.pose.views import PoseSettings
from idcluster.detectors.retinaface import RetinaFaceDetector
from idcluster.pipeline.faces import select_face
from idcluster.inputs.images import load_image

runner = CliRunner()
FRONTAL_KNN = ["obama/train_obama.jpg", "biden/train_biden2.jpg", "alex_lacamoire/test_alex_lacamoire1.jpg",
               "rose_leslie/train_img1.jpg"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def detector():
    return RetinaFaceDetector()


ESTIMATORS = {}  # one loaded predictor for the module (loading it takes ~1.5 s)


def _pose(detector, image, landmarks=P.DLIB68):
    faces = detector.detect(image)
    assert faces, "no face detected"
    est = ESTIMATORS.setdefault(landmarks, P.PoseEstimator(landmarks))
    return est.estimate(image, faces[select_face(faces)])


def test_angles_follow_the_documented_conventions():
    # A rotation that brings the nose towards the image right (+x) is yaw > 0 (the character's left).
    yaw, pitch, roll = P.angles(np.array([0.0, -np.radians(30), 0.0]))
    assert yaw == pytest.approx(30, abs=1e-6) and abs(pitch) < 1e-6 and abs(roll) < 1e-6
    _, pitch, _ = P.angles(np.array([-np.radians(20), 0.0, 0.0]))  # the face turns to look up
    assert pitch == pytest.approx(20, abs=1e-6)
    *_, roll = P.angles(np.array([0.0, 0.0, np.radians(15)]))
    assert roll == pytest.approx(15, abs=1e-6)


def _mirror_pair(detector, image):
    """Pose of the chosen face of an image and of its mirror image, each detected on its own."""
    return _pose(detector, image), _pose(detector, np.ascontiguousarray(image[:, ::-1]))


def test_mirrored_faces_get_opposite_yaw(detector, demo_set, eval_root):
    """Every face of the face_recognition examples and its mirror image (detected on its own): |yaw + yaw_mirrored|
    <= 5 deg, the sign flips where the face is turned by more than 10 deg, pitch agrees, roll flips."""
    paths = sorted((eval_root / "face_recognition_knn_examples").glob("*/*.jp*"))
    turned = 0
    for path in paths:
        a, b = _mirror_pair(detector, load_image(path))
        assert abs(a.yaw + b.yaw) <= 5, (path.name, a.yaw, b.yaw)
        if abs(a.yaw) > 10:
            turned += 1
            assert np.sign(a.yaw) == -np.sign(b.yaw), (path.name, a.yaw, b.yaw)
        assert abs(a.pitch - b.pitch) <= 8 and abs(a.roll + b.roll) <= 8, path.name
    assert turned >= 5


def test_the_same_detection_mirrored_gets_exactly_opposite_angles(detector, demo_set):
    """The estimate averages the face and its mirror image: a detection and the same detection mirrored get
    opposite yaw and roll and the same pitch (to rounding), on real crops."""
    folder, _ = demo_set
    est = ESTIMATORS.setdefault(P.DLIB68, P.PoseEstimator(P.DLIB68))
    for path in sorted(folder.glob("*"))[:6]:
        image = load_image(path)
        face = detector.detect(image)[0]
        a = est.estimate(image, face)
        b = est.estimate(np.ascontiguousarray(image[:, ::-1]), P.mirror_face(face, image.shape[1]))
        assert a.landmarks == b.landmarks == P.DLIB68
        assert abs(a.yaw + b.yaw) < 1e-6 and abs(a.roll + b.roll) < 1e-6 and abs(a.pitch - b.pitch) < 1e-6, path.name


@pytest.mark.slow
def test_every_lfw_face_and_its_mirror_sum_within_5_degrees(detector, eval_root):
    """Issue 18: on ~60 px LFW faces 1-2 px of landmark jitter moved yaw by 10-20 deg (a face and its mirror:
    +19.9 and +18.6). Every one of the 299 LFW faces and its mirror image, each detected on its own, now sum
    within 5 deg, and their view bins mirror each other for at least 95% (measured: 100% and 98.3%,
    scripts/bench_pose.py --limit 0)."""
    paths = sorted((eval_root / "lfw_150px_40ids").glob("*/*.jpg"))
    sums, same = [], 0
    mirror_view = {"three_quarter_left": "three_quarter_right", "three_quarter_right": "three_quarter_left",
                   "profile_left": "profile_right", "profile_right": "profile_left"}
    for path in paths:
        a, b = _mirror_pair(detector, load_image(path))
        sums.append((abs(a.yaw + b.yaw), path.name, round(a.yaw, 1), round(b.yaw, 1)))
        va, vb = P.Bins().view(a.yaw, a.pitch), P.Bins().view(b.yaw, b.pitch)
        same += mirror_view.get(va, va) == vb
    assert len(sums) == 299
    assert max(sums)[0] <= 5, sorted(sums)[-3:]
    assert same / len(sums) >= 0.95


def _demo_augmentations(truth: dict[str, str]) -> dict[str, tuple[str, str]]:
    """name -> (identity, augmentation), following build_demo_set's deterministic shuffle."""
    from idcluster.experiments.demo_data import AUGMENTATIONS

    ids = sorted(set(truth.values()))
    order = np.random.default_rng(0).permutation(len(ids) * len(AUGMENTATIONS))
    return {f"img_{n:03d}.{('png', 'jpg', 'webp')[n % 3]}": (ids[idx // len(AUGMENTATIONS)], AUGMENTATIONS[idx % len(AUGMENTATIONS)][0])
            for n, idx in enumerate(order)}


def test_flipped_demo_crops_get_opposite_yaw(detector, demo_set):
    """Package-shipped photos (no eval set needed): each person's crop and its mirror image;
    where the crop is turned by more than 10 deg the flip has the opposite sign, and the sum is
    within 5 deg when both used the same landmarks (a 5-point fallback reads smaller yaws)."""
    folder, truth = demo_set
    aug = _demo_augmentations(truth)
    assert all(aug[n][0] == truth[n] for n in truth)  # the reconstruction matches the set
    pairs = {}
    for name, (identity, a) in aug.items():
        if a in ("orig", "flip"):
            pairs.setdefault(identity, {})[a] = _pose(detector, load_image(folder / name))
    turned = 0
    for identity, p in pairs.items():
        if abs(p["orig"].yaw) > 10:
            turned += 1
            assert np.sign(p["orig"].yaw) == -np.sign(p["flip"].yaw), (identity, p)
        if p["orig"].landmarks == p["flip"].landmarks:
            assert abs(p["orig"].yaw + p["flip"].yaw) <= 5, (identity, p)
    assert turned >= 3


def test_frontal_portraits_come_out_near_zero(detector, eval_root):
    """ORL's first shot of each of its 40 people and frontal face_recognition examples:
    |yaw| <= 15 for at least 90%, median |yaw| <= 6 deg, and none in a profile bin."""
    paths = sorted((eval_root / "orl_att_faces").glob("s*/1.pgm"))
    paths += [eval_root / "face_recognition_knn_examples" / p for p in FRONTAL_KNN]
    yaws = []
    for path in paths:
        p = _pose(detector, load_image(path))
        yaws.append(p.yaw)
        assert "profile" not in P.Bins().view(p.yaw, 0.0), path
    yaws = np.abs(yaws)
    assert len(yaws) == 44
    assert np.median(yaws) <= 6 and np.mean(yaws <= 15) >= 0.9, sorted(yaws)[-5:]


@pytest.mark.slow
def test_five_and_68_points_agree_in_sign_on_turned_lfw_faces(detector, eval_root):
    """On LFW faces the 68-point fit calls turned by more than 20 deg, the 5-point estimate has
    the same yaw sign for at least 90% of them."""
    paths = sorted((eval_root / "lfw_150px_40ids").glob("*/*.jpg"))[::2]
    agree = total = 0
    est5 = P.PoseEstimator(P.FIVE_POINT)
    est68 = P.PoseEstimator(P.DLIB68)
    for path in paths:
        image = load_image(path)
        faces = detector.detect(image)
        if not faces:
            continue
        face = faces[select_face(faces)]
        a = est68.estimate(image, face)
        if a is None or a.landmarks != P.DLIB68 or abs(a.yaw) <= 20:
            continue
        b = est5.estimate(image, face)
        total += 1
        agree += int(np.sign(a.yaw) == np.sign(b.yaw))
    assert total >= 10
    assert agree / total >= 0.9, (agree, total)


def test_bins_at_their_boundaries():
    b = P.Bins()
    assert b.view(0, 0) == "front" and b.view(20, 0) == "front" and b.view(-20, 25) == "front"
    assert b.view(20.1, 0) == "three_quarter_left" and b.view(-55, 0) == "three_quarter_right"
    assert b.view(55.1, 0) == "profile_left" and b.view(-80, 0) == "profile_right"
    assert b.view(0, 25.1) == "up" and b.view(60, -30) == "down"
    with pytest.raises(P.ConfigError, match="front <= three_quarter"):
        P.Bins(front=60, three_quarter=30)


def test_kmeans_views_are_ordered_by_yaw_and_no_face_stays():
    poses = [P.Pose(y, p, 0, P.DLIB68, 0) for y, p in [(-60, 0), (-58, 2), (0, 0), (2, 1), (61, -3), (59, 0)]] + [None]
    views, centres = P.assign_views(poses, "kmeans", n_clusters=3)
    assert views == ["pose_0", "pose_0", "pose_1", "pose_1", "pose_2", "pose_2", "no_face"]
    assert centres["pose_0"]["yaw"] < -50 < 50 < centres["pose_2"]["yaw"]
    assert P.nearest_bin("pose_2", centres) == "profile_left"
    with pytest.raises(P.ConfigError, match="pose.method"):
        P.assign_views(poses, "nope")


def test_pose_cache_hit_does_not_estimate(detector, demo_set, tmp_path, monkeypatch):
    folder, _ = demo_set
    path = sorted(folder.glob("*"))[0]
    image = load_image(path)
    face = detector.detect(image)[0]
    est, cache = P.PoseEstimator(), StageCache(tmp_path / "c")
    first = P.estimate_cached([(str(path), "abc", face)], est, cache)
    calls = []
    monkeypatch.setattr(P.PoseEstimator, "estimate", lambda *a: calls.append(a))
    again = P.estimate_cached([(str(path), "abc", face)], est, cache)
    assert again == first and not calls
    assert first[0].landmarks == P.DLIB68


def test_every_pose_option_composes():
    for option in ("bins", "kmeans"):
        cfg = load_config([f"pose={option}"], require_input=False)
        assert cfg.pose.method == option and cfg.pose.bins.front == 20
    assert load_config(["pose.method=kmeans"], require_input=False).pose.method == "kmeans"


@pytest.mark.parametrize("option", group_options("pose"))
def test_every_pose_option_builds_its_settings(option):
    cfg = load_config([f"pose={option}", "pose.bins.front=15", "pose.kmeans.n_clusters=3"], require_input=False)
    settings = build(cfg, "pose")
    assert type(settings) is PoseSettings and cfg.pose._target_ == "idcluster.pose.views.PoseSettings"
    assert settings.method == option and settings.bins == P.Bins(15, 55, 25)
    assert (settings.n_clusters, settings.seed, settings.output_dir) == (3, 0, None)
    assert settings.estimator.landmarks == P.DLIB68 and settings.estimator.max_error == 0.12
    # and it runs: views of three poses (one missing face)
    poses = [P.Pose(0, 0, 0, P.DLIB68, 0.0), P.Pose(40, 0, 0, P.DLIB68, 0.0), None]
    views, _ = P.assign_views(poses, settings.method, settings.bins, settings.n_clusters, settings.seed)
    assert views[2] == P.NO_FACE and len(set(views[:2])) == 2


@pytest.mark.parametrize("override, message", [
    ("pose.method=nope", "pose.method must be one of bins, kmeans, got 'nope'"),
    ("pose.landmarks=nose", "pose.landmarks must be dlib68 or five_point"),
    ("pose.bins.front=wide", "bad pose config: could not convert string to float: 'wide'"),
    ("pose.bins.front=80", "pose bins must satisfy 0 <= front <= three_quarter"),
    ("+pose.kmeans.k=3", "unknown pose.kmeans key(s) k"),
])
def test_bad_pose_settings_are_one_config_error_line(override, message):
    with pytest.raises(ConfigError) as info:
        build(load_config([override], require_input=False), "pose")
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def clustered(demo_set, tmp_path_factory):
    """A clustering of 21 real crops (7 people x 3 augmentations incl. a mirror)."""
    return cluster_demo_subset(demo_set, tmp_path_factory.mktemp("posecl"))


def _copy_out(clustered, tmp_path) -> Path:
    _, out = clustered
    dst = tmp_path / "out"
    shutil.copytree(out, dst, symlinks=True)
    return dst


def test_subcluster_pose_writes_view_folders_and_json(clustered, tmp_path):
    out = _copy_out(clustered, tmp_path)
    r = invoke("subcluster-pose", f"output_dir={out}", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    assert "views per identity" in r.output and "front" in r.output
    report = json.loads((out / "identity_clustering.json").read_text())
    n = 0
    for c in report["clusters"]:
        for rel in c["images"]:
            img = next(i for i in report["images"] if i["rel_path"] == rel)
            pose = img["pose"]
            assert pose["method"] == "bins" and pose["landmarks"] in (P.DLIB68, P.FIVE_POINT)
            assert (out / c["identity"] / pose["view"] / rel.replace("/", "__")).is_file()
            n += 1
    assert n == sum(c["size"] for c in report["clusters"]) and n > 0
    assert sum(sum(v.values()) for v in report["pose"]["views"].values()) == n
    assert (out / "contact_sheets" / "identity_000.png").is_file()
    # A re-run with kmeans replaces the bins' folders (none left behind), sources untouched.
    r = invoke("subcluster-pose", f"output_dir={out}", "pose.method=kmeans", "pose.kmeans.n_clusters=2", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    subdirs = {p.name for c in report["clusters"] for p in (out / c["identity"]).iterdir() if p.is_dir()}
    assert subdirs <= {"pose_0", "pose_1"}


def test_one_identity_to_its_own_folder_and_faceless_members(clustered, tmp_path):
    out = _copy_out(clustered, tmp_path)
    report = json.loads((out / "identity_clustering.json").read_text())
    # A member without a face (issue 11's faceless instances) goes to no_face/.
    rel = report["clusters"][0]["images"][0]
    img = next(i for i in report["images"] if i["rel_path"] == rel)
    img["face"], img["face_clusters"] = None, []
    (out / "identity_clustering.json").write_text(json.dumps(report))
    dest = tmp_path / "poses"
    r = invoke("subcluster-pose", f"output_dir={out}", "identity=identity_000", f"pose.output_dir={dest}", "tracking=off", "-q")
    assert r.exit_code == 0, r.output
    assert (dest / "identity_000" / "no_face" / rel).is_file()
    assert [p.name for p in dest.iterdir() if p.name != "contact_sheets"] == ["identity_000"]


def test_bad_inputs_are_one_line_errors(clustered, tmp_path):
    r = invoke("subcluster-pose", f"output_dir={tmp_path / 'nothing'}", "tracking=off")
    assert r.exit_code == 2 and "no identity_clustering.json" in r.output
    out = _copy_out(clustered, tmp_path)
    r = invoke("subcluster-pose", f"output_dir={out}", "identity=identity_999", "tracking=off")
    assert r.exit_code == 2 and "unknown identity='identity_999'" in r.output
    r = invoke("subcluster-pose", f"output_dir={out}", "pose.method=nope", "tracking=off")
    assert r.exit_code == 2 and "pose.method must be one of" in r.output
    report = json.loads((out / "identity_clustering.json").read_text())
    for img in report["images"]:
        if img["identity"] == "identity_001":
            img["face"], img["face_clusters"] = None, []
    (out / "identity_clustering.json").write_text(json.dumps(report))
    r = invoke("subcluster-pose", f"output_dir={out}", "identity=identity_001", "tracking=off")
    assert r.exit_code == 2 and "identity_001 has no member with a detected face" in r.output
    assert "Traceback" not in r.output
    assert not any(p.is_dir() for p in (out / "identity_001").iterdir())


def test_contact_sheets_in_the_output_and_mlflow(clustered, tmp_path):
    """The run's sheet (a row per identity + noise) beside the JSON; a view sheet per identity, logged to MLflow."""
    _, out = clustered
    report = json.loads((out / "identity_clustering.json").read_text())
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.height == 64 * (len(report["clusters"]) + bool(report["noise"]["images"]))
    dst = _copy_out(clustered, tmp_path)
    uri = f"sqlite:///{tmp_path / 'runs.db'}"
    r = invoke("subcluster-pose", f"output_dir={dst}", f"tracking_uri={uri}", "-q")
    assert r.exit_code == 0, r.output
    report = json.loads((dst / "identity_clustering.json").read_text())
    views = report["pose"]["views"]["identity_000"]
    with Image.open(dst / "contact_sheets" / "identity_000.png") as sheet:
        assert sheet.height == 64 * len(views)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    [exp] = [e for e in c.search_experiments() if e.name == "idcluster"]
    [run] = c.search_runs([exp.experiment_id])
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {f"{i}.png" for i in report["pose"]["views"]}
    assert run.data.metrics[f"views.identity_000.{next(iter(views))}"] == next(iter(views.values()))
    assert f"MLflow runs: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs" in r.output
