"""The whole-instance stream: images without a usable face join identities; embedder=appearance; evidence in the JSON.

Instance folders are built in tmp from real photos (the demo crops of insightface's
shipped photos): shrunken copies whose face is below faces.min_face_size stand for
faceless instances (same person, same clothes, no usable face), RGBA cut-outs for
SAM-style instance crops.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from idcluster.pipeline import stages as pipeline
from idcluster import records as R
from idcluster.workflows.cluster import make_spec
from idcluster.evidence import instance as stream
from idcluster.evidence.instance import InstanceStream
from idcluster.evidence.links import ImageLinks
from idcluster.embedders.appearance import AppearanceEmbedder, describe, foreground_mask, load_instance
from idcluster.config.compose import build, group_options, load_config
from idcluster.errors import ConfigError


def run(cfg):
    return pipeline.run(make_spec(cfg, "cluster", progress=False))


def shrink(path, dest, factor=0.3):
    im = Image.open(path).convert("RGB")
    im.resize((max(8, round(im.width * factor)), max(8, round(im.height * factor))), Image.Resampling.LANCZOS).save(dest)


def rgba_cutout(path) -> Image.Image:
    """The crop as an instance cut-out: an elliptic alpha mask, transparent outside."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (0.45 * w)) ** 2 + ((yy - h / 2) / (0.48 * h)) ** 2 <= 1.0
    rgba = np.dstack([np.asarray(im), np.where(inside, 255, 0).astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


@pytest.fixture
def faceless_set(small_set, tmp_path):
    """small_set (21 crops, 7 people) plus one shrunken copy per person: face ~30 px, too small."""
    folder, truth = small_set
    extra = {}
    for identity in sorted(set(truth.values())):
        name = next(n for n in sorted(truth) if truth[n] == identity)
        dest = f"tiny_{identity}.png"
        shrink(folder / name, folder / dest)
        extra[dest] = identity
    return folder, truth, extra


def test_descriptor_is_unit_deterministic_and_uses_alpha(small_set, tmp_path):
    folder, truth = small_set
    name = sorted(truth)[0]
    cut = rgba_cutout(folder / name)
    vecs = []
    for k, bg in enumerate([(0, 0, 0, 0), (250, 20, 20, 0)]):  # transparent pixels of different colours
        arr = np.asarray(cut).copy()
        arr[arr[:, :, 3] == 0] = bg
        Image.fromarray(arr, "RGBA").save(tmp_path / f"cut{k}.png")
        rgb, mask = load_instance(tmp_path / f"cut{k}.png")
        assert 0.5 < mask.mean() < 0.9  # the alpha channel, not the whole image
        vecs.append(describe(rgb, mask))
    assert np.allclose(np.linalg.norm(vecs[0]), 1.0, atol=1e-5)
    assert np.allclose(vecs[0], vecs[1], atol=1e-6)
    # The same cut-out flattened on two different flat backgrounds: the border mask finds it again.
    flat = []
    for colour in [(255, 255, 255), (0, 90, 0)]:
        bg = Image.new("RGBA", cut.size, colour + (255,))
        rgb = np.asarray(Image.alpha_composite(bg, cut).convert("RGB"))
        flat.append(describe(rgb, foreground_mask(rgb)))
        assert describe(rgb, foreground_mask(rgb)).tobytes() == flat[-1].tobytes()  # deterministic
    assert float(flat[0] @ flat[1]) > 0.97
    # Without a mask the background dominates: clearly less alike.
    plain = [describe(np.asarray(Image.alpha_composite(Image.new("RGBA", cut.size, c + (255,)), cut).convert("RGB")))
             for c in [(255, 255, 255), (0, 90, 0)]]
    assert float(plain[0] @ plain[1]) < float(flat[0] @ flat[1]) - 0.05


def test_appearance_embedder_separates_real_people(small_set):
    """embedder=appearance + detector=none on the 7 people's crops: nearest neighbours agree."""
    folder, truth = small_set
    emb = AppearanceEmbedder()
    names = sorted(truth)
    X = emb.embed([np.asarray(Image.open(folder / n).convert("RGB")) for n in names])
    assert X.shape == (len(names), emb.dim) and X.dtype == np.float32
    S = X @ X.T
    np.fill_diagonal(S, -1)
    hits = [truth[names[int(S[i].argmax())]] == truth[n] for i, n in enumerate(names)]
    assert np.mean(hits) >= 0.8


def test_faceless_instances_join_the_identity_they_resemble(faceless_set, config, tmp_path):
    folder, truth, extra = faceless_set
    result = run(config(folder, "faces.min_face_size=64"))
    by = {r.rel_path: r for r in result.records}
    for name, identity in extra.items():
        rec = by[name]
        assert rec.reason in (R.NO_FACE, R.FACE_TOO_SMALL)  # the reason stays: no usable face
        assert rec.evidence == "appearance" and 0 < rec.evidence_score <= 1
        mates = {by[n].label for n in truth if truth[n] == identity}
        assert mates == {rec.label}
    assert all(by[n].evidence == "face" for n in truth)
    # Computed where it can decide something: the 7 faceless images and each identity's
    # appearance.representatives (2) most central members.
    assert result.computed["instance"] == len(extra) + 2 * len(set(truth.values()))
    # Second run: the instance vectors come from the cache.
    again = run(config(folder, "faces.min_face_size=64"))
    assert "instance" not in again.computed
    assert [r.label for r in again.records] == [r.label for r in result.records]


def test_only_representatives_of_face_identities_are_described(faceless_set, config):
    folder, truth, extra = faceless_set
    result = run(config(folder, "faces.min_face_size=64", "appearance.representatives=1"))
    assert result.computed["instance"] == len(extra) + len(set(truth.values()))


def test_a_folder_of_clear_faces_computes_no_instance_vectors(small_set, config):
    folder, truth = small_set
    result = run(config(folder))
    assert all(r.evidence == "face" for r in result.records)
    assert "instance" not in result.computed and result.instance_model is None


def test_appearance_off_or_tight_leaves_faceless_in_noise(faceless_set, config):
    folder, truth, extra = faceless_set
    for override in ["appearance.enabled=false", "instance.distance_threshold=0.0001"]:
        by = {r.rel_path: r for r in run(config(folder, override, "faces.min_face_size=64")).records}
        assert all(by[n].label == -1 and by[n].evidence is None for n in extra), override


def test_faceless_images_cluster_into_identities_of_their_own(faceless_set, config):
    """Shrunken copies of a person with no face-based identity form one of their own."""
    folder, truth, extra = faceless_set
    identity = sorted(set(truth.values()))[0]
    mates = [n for n in sorted(truth) if truth[n] == identity]
    for n in mates[1:]:
        shrink(folder / n, folder / f"tiny2_{n}.png")
    for n in mates:
        (folder / n).unlink()
    result = run(config(folder, "faces.min_face_size=64"))
    by = {r.rel_path: r for r in result.records}
    own = [by[f"tiny_{identity}.png"], *(by[f"tiny2_{n}.png"] for n in mates[1:])]
    assert len({r.label for r in own}) == 1 and own[0].label >= 0
    assert all(r.evidence == "appearance" for r in own)
    face_labels = {r.label for r in result.records if r.evidence == "face"}
    assert own[0].label not in face_labels


def test_json_records_evidence_score_and_the_instance_model(faceless_set, config, tmp_path):
    from idcluster.workflows.cluster import cluster
    from rich.console import Console

    folder, truth, extra = faceless_set
    cfg = config(folder, "faces.min_face_size=64")
    report = cluster(cfg, Console(quiet=True), progress=False)
    saved = json.loads((tmp_path / "out" / "identity_clustering.json").read_text())
    images = {i["rel_path"]: i for i in saved["images"]}
    assert {images[n]["evidence"] for n in extra} == {"appearance"}
    assert all(0 < images[n]["evidence_score"] <= 1 for n in extra)
    assert images[sorted(truth)[0]]["evidence"] == "face"
    assert saved["statistics"]["evidence"] == {"face": len(truth), "appearance": len(extra)}
    assert saved["models"]["instance"].startswith("fused:appearance-v1+mobilenetv2:")
    assert report["noise"]["size"] == 0 and not report["noise"]["reasons"]


def test_detector_none_with_appearance_embedder(small_set, config):
    folder, truth = small_set
    result = run(config(folder, "detector=none", "embedder=appearance", "clusterer=agglomerative",
                        "clusterer.min_cluster_size=2"))
    assert result.embeddings.shape[1] == AppearanceEmbedder().dim
    assert {r.evidence for r in result.records if r.label >= 0} <= {"face"}  # detector=none: every image is the instance


def test_bad_appearance_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="appearance.impostor_quantile"):
        InstanceStream(impostor_quantile=2)
    with pytest.raises(ConfigError, match="appearance.representatives"):
        InstanceStream(representatives=0)
    with pytest.raises(ConfigError, match="appearance.face_domain"):
        InstanceStream(face_domain={"colour": 1})
    with pytest.raises(ConfigError, match="appearance.face_domain.band"):
        InstanceStream(face_domain={"band": [0.2, 0.1]})
    with pytest.raises(ConfigError, match="instance.appearance_weight"):
        build(load_config(["input_dir=x", "instance.appearance_weight=2"]), "instance")


class VectorModel:
    """An instance model over given vectors (unit level: no images)."""

    model_id, params, batch_size, neighbours = "test-vectors", {}, 1, 1

    def __init__(self, V, threshold=0.2):
        self.V, self.distance_threshold = V, threshold

    def run_space(self, V, reference=None):
        self.reference = reference
        return np.asarray(V, dtype=np.float64)


def use_vectors(monkeypatch, V):
    monkeypatch.setattr(stream, "instance_vectors", lambda model, records, idx, *a, **k: {i: V[i] for i in idx if i in V})


def records_of(n, **fields):
    return [R.ImageRecord(path=f"/x/{i}", rel_path=f"{i}.png", size=1, sha256=f"{i}", **fields) for i in range(n)]


def test_frame_cannot_link_and_track(monkeypatch):
    """Unit level, on vectors: a track moves as one unit; one frame never holds one identity twice."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    recs = records_of(6)
    for i in (0, 5):  # two face identities (the bar needs two to calibrate on)
        recs[i].label, recs[i].embedding_row = (0 if i == 0 else 1), i // 5
    for r in recs[1:5]:
        r.reason = R.NO_FACE
    V = {0: a, 1: a + 0.01, 2: a + 0.02, 3: a + 0.4 * b, 4: a + 0.01, 5: -a}
    V = {k: v / np.linalg.norm(v) for k, v in V.items()}
    use_vectors(monkeypatch, V)
    faces = np.stack([V[0], V[5]])
    # 3 looks like b but shares a track with 1 (looks like a); 4 shares a frame with 0.
    links = ImageLinks(tracks={1: "t", 3: "t"}, frames={0: "f", 4: "f"})
    InstanceStream(distance_threshold=0.2, impostor_quantile=1.0).assign(
        recs, links, cache=None, model=VectorModel(V), face_vectors=faces, progress=False)
    assert recs[1].label == recs[3].label == recs[0].label  # the track moves as one unit and joins identity 0
    assert recs[1].evidence == recs[3].evidence == "appearance"
    assert recs[4].label != recs[0].label  # its frame already holds identity 0
    assert recs[2].label == recs[4].label >= 0 and recs[2].evidence == "appearance"  # its look-alike: their own


def test_faceless_clusters_respect_frames_and_seed_anchors(monkeypatch):
    """Unit level: look-alikes of one frame never share an identity; a seeded image anchors the
    cluster around it (its name's identity), across the cannot-link between names."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=8), rng.normal(size=8)
    recs = records_of(6, reason=R.NO_FACE)
    V = {0: a, 1: a + 0.01, 2: a + 0.02, 3: b, 4: b + 0.01, 5: b + 0.02}
    V = {k: v / np.linalg.norm(v) for k, v in V.items()}
    use_vectors(monkeypatch, V)
    links = ImageLinks(frames={0: "f", 1: "f"}, names={3: "bob"})
    InstanceStream(distance_threshold=0.2).assign(recs, links, cache=None, model=VectorModel(V), progress=False)
    assert recs[0].label != recs[1].label or recs[0].label == -1
    assert recs[2].label >= 0 and recs[2].label in {recs[0].label, recs[1].label}
    assert recs[3].evidence == "seed" and recs[4].label == recs[5].label == recs[3].label
    assert recs[4].evidence == "appearance"


def test_the_run_space_is_the_one_of_the_images_to_place(monkeypatch):
    """The model's run space is centred on the images without a usable face (`reference`), not on
    the face identities' representatives: in a mixed folder the photos would set the mean and
    every cartoon frame would share what is left (LFW + ORL + Simpsons: all 420 frames in one)."""
    rng = np.random.default_rng(3)
    recs = records_of(5)
    for i in (0, 1):
        recs[i].label, recs[i].embedding_row = i, i
    for r in recs[2:]:
        r.reason = R.NO_FACE
    V = {i: v / np.linalg.norm(v) for i, v in enumerate(rng.normal(size=(5, 8)))}
    use_vectors(monkeypatch, V)
    model = VectorModel(V)
    InstanceStream(distance_threshold=0.2).assign(recs, ImageLinks(), None, model, np.stack([V[0], V[1]]), progress=False)
    assert model.reference.tolist() == [False, False, True, True, True]


def test_face_identities_take_no_joins_without_a_calibration(monkeypatch):
    """One face identity: nothing to calibrate the bar on, so a look-alike without a face does not
    join it (it may only form an identity of its own); a seeded identity takes it."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=8)
    recs = records_of(3)
    recs[0].label, recs[0].embedding_row = 0, 0
    recs[1].reason = recs[2].reason = R.NO_FACE
    V = {0: a, 1: a + 0.01, 2: a + 0.02}
    V = {k: v / np.linalg.norm(v) for k, v in V.items()}
    use_vectors(monkeypatch, V)
    InstanceStream(distance_threshold=0.2).assign(recs, ImageLinks(), None, VectorModel(V), V[0][None], progress=False)
    assert recs[1].label == recs[2].label != recs[0].label
    for r in recs[1:]:
        r.label, r.evidence = -1, None
    recs[0].label = 0
    InstanceStream(distance_threshold=0.2).assign(recs, ImageLinks(names={0: "ann"}), None, VectorModel(V), V[0][None],
                                                  progress=False)
    assert recs[1].label == recs[2].label == recs[0].label


def test_drawn_faces_out_of_the_face_models_domain_take_the_instance_stream(monkeypatch, small_set, config):
    """A run whose faces the face model cannot tell apart (every pair in its ambiguous band, as a
    human-face model sees drawn faces) gives them reason face_out_of_domain, no face identity, and
    places them by whole-instance evidence instead; appearance.enabled=false keeps the old behaviour."""
    from idcluster.embedders.dlib_resnet import DlibEmbedder

    folder, truth = small_set
    real = DlibEmbedder.embed
    rng = np.random.default_rng(0)
    centre = rng.normal(size=128)
    centre /= np.linalg.norm(centre)

    def collapsed(self, chips):  # every face ~0.08 from every other: the band of a collapsed model
        X = real(self, chips)
        noise = rng.normal(size=X.shape)
        noise -= (noise @ centre)[:, None] * centre
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (0.96 * centre + np.sqrt(1 - 0.96 ** 2) * noise).astype(np.float32)

    monkeypatch.setattr(DlibEmbedder, "embed", collapsed)
    result = run(config(folder, "cache_dir=" + str(folder.parent / "c1")))
    assert {r.reason for r in result.records} == {R.FACE_OUT_OF_DOMAIN}
    assert {r.evidence for r in result.records if r.label >= 0} <= {"appearance"}
    assert len(result.embeddings) == 0 and result.computed["instance"] == len(truth)
    off = run(config(folder, "cache_dir=" + str(folder.parent / "c1"), "appearance.enabled=false"))
    assert all(r.reason in (None, R.CLUSTER_NOISE) for r in off.records) and len(off.embeddings) == len(truth)


@pytest.mark.parametrize("option", group_options("appearance"))
def test_every_appearance_option_composes_and_builds(option):
    cfg = load_config(["input_dir=x", f"appearance={option}"])
    s = build(cfg, "appearance")
    assert isinstance(s, InstanceStream) and cfg.appearance._target_.endswith(".InstanceStream")
    assert s.enabled and s.distance_threshold == cfg.instance.distance_threshold and s.face_band == (0.06, 0.10)


def test_appearance_keys_keep_working_on_the_command_line_and_in_the_project_file(tmp_path):
    from idcluster.config.project import load_project, resolve

    cfg = load_config(["input_dir=x", "appearance.enabled=false", "instance=appearance", "instance.size=64",
                       "appearance.representatives=3"])
    s, model = build(cfg, "appearance"), build(cfg, "instance")
    assert (s.enabled, s.representatives, s.distance_threshold, model.params["size"]) == (False, 3, 0.28, 64)
    path = tmp_path / "idcluster.toml"
    path.write_text('[defaults]\noverrides = ["instance=mobilenet"]\n\n[defaults.appearance]\nrepresentatives = 7\n'
                    'impostor_quantile = 0.1\n')
    defaults, explicit = resolve(load_project(path), ["input_dir=x", "appearance.representatives=9"])
    cfg = load_config(explicit, defaults=defaults)
    s = build(cfg, "appearance")
    assert (s.representatives, s.impostor_quantile, s.distance_threshold) == (9, 0.1, 0.53)  # the CLI beats the file
    assert type(build(cfg, "instance")).__name__ == "MobileNetEmbedder"
