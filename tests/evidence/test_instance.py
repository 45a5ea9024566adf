"""Faceless instances join identities by appearance; embedder=appearance; evidence in the JSON.

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
from idcluster.evidence.instance import AppearanceAssigner
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
        assert rec.evidence == "appearance" and rec.evidence_score >= 0.85
        mates = {by[n].label for n in truth if truth[n] == identity}
        assert mates == {rec.label}
    assert all(by[n].evidence == "face" for n in truth)
    assert result.computed["appearance"] == len(result.records)
    # Second run: the appearance vectors come from the cache.
    again = run(config(folder, "faces.min_face_size=64"))
    assert "appearance" not in again.computed
    assert [r.label for r in again.records] == [r.label for r in result.records]


def test_appearance_off_or_tight_leaves_faceless_in_noise(faceless_set, config):
    folder, truth, extra = faceless_set
    for override in ["appearance.enabled=false", "appearance.min_similarity=0.9999"]:
        by = {r.rel_path: r for r in run(config(folder, override, "appearance.cluster_faceless=false",
                                                "faces.min_face_size=64")).records}
        assert all(by[n].label == -1 and by[n].evidence is None for n in extra), override


def test_faceless_images_cluster_into_identities_of_their_own(faceless_set, config):
    """Two shrunken copies of a person with no face-based identity form one of their own."""
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


def test_json_records_evidence_and_score(faceless_set, config, tmp_path):
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
    assert report["noise"]["size"] == 0 and not report["noise"]["reasons"]


def test_detector_none_with_appearance_embedder(small_set, config):
    folder, truth = small_set
    result = run(config(folder, "detector=none", "embedder=appearance", "clusterer=agglomerative",
                        "clusterer.min_cluster_size=2"))
    assert result.embeddings.shape[1] == AppearanceEmbedder().dim
    assert {r.evidence for r in result.records if r.label >= 0} <= {"face"}  # detector=none: every image is the instance


def test_bad_appearance_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="appearance.method"):
        AppearanceAssigner(method="magic")
    with pytest.raises(ConfigError, match="appearance.min_share"):
        AppearanceAssigner(min_share=2)
    with pytest.raises(ConfigError, match="appearance.descriptor"):
        AppearanceAssigner(descriptor={"colour": 1})


def test_frame_cannot_link_and_track_in_the_faceless_stage():
    """Unit level, on vectors: a track moves as one unit; one frame never holds one identity twice."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    recs = [R.ImageRecord(path=f"/x/{i}", rel_path=f"{i}.png", size=1, sha256=f"{i}") for i in range(5)]
    recs[0].label, recs[0].evidence = 0, "face"
    for r in recs[1:]:
        r.reason = R.NO_FACE
    V = {0: a, 1: a + 0.01, 2: a + 0.02, 3: a + 0.4 * b, 4: a + 0.01}
    V = {k: v / np.linalg.norm(v) for k, v in V.items()}
    assigner = AppearanceAssigner(cluster_faceless=False, calibrate_quantile=None)  # one face identity: fixed bar
    assigner.vectors = lambda records, idx, *a, **k: {i: V[i] for i in idx}
    # 3 looks like b but shares a track with 1 (looks like a); 4 shares a frame with 0.
    links = ImageLinks(tracks={1: "t", 3: "t"}, frames={0: "f", 4: "f"})
    assigner.assign(recs, links, cache=None, progress=False)
    assert recs[1].label == recs[3].label == recs[0].label  # the track's mean still votes for identity 0
    assert recs[2].label == recs[0].label and recs[2].evidence == "appearance"
    assert recs[4].label == -1  # its frame already holds identity 0


def test_faceless_clusters_respect_frames_and_seed_anchors():
    """Unit level: look-alikes of one frame never share a faceless identity; a seeded image
    anchors the cluster around it (its name's identity), across the cannot-link between names."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=8), rng.normal(size=8)
    recs = [R.ImageRecord(path=f"/x/{i}", rel_path=f"{i}.png", size=1, sha256=f"{i}", reason=R.NO_FACE)
            for i in range(6)]
    V = {0: a, 1: a + 0.01, 2: a + 0.02, 3: b, 4: b + 0.01, 5: b + 0.02}
    V = {k: v / np.linalg.norm(v) for k, v in V.items()}
    assigner = AppearanceAssigner()
    assigner.vectors = lambda records, idx, *x, **k: {i: V[i] for i in idx}
    links = ImageLinks(frames={0: "f", 1: "f"}, names={3: "bob"})
    assigner.assign(recs, links, cache=None, progress=False)
    assert recs[0].label != recs[1].label or recs[0].label == -1
    assert recs[2].label >= 0 and recs[2].label in {recs[0].label, recs[1].label}
    assert recs[3].evidence == "seed" and recs[4].label == recs[5].label == recs[3].label
    assert recs[4].evidence == "appearance"


@pytest.mark.parametrize("option", group_options("appearance"))
def test_every_appearance_option_composes_and_builds(option):
    cfg = load_config(["input_dir=x", f"appearance={option}"])
    assigner = build(cfg, "appearance")
    assert isinstance(assigner, AppearanceAssigner) and cfg.appearance._target_.endswith(".AppearanceAssigner")
    assert assigner.method == option and assigner.enabled and assigner.k == 5


def test_appearance_keys_keep_working_on_the_command_line_and_in_the_project_file(tmp_path):
    from idcluster.config.project import load_project, resolve

    cfg = load_config(["input_dir=x", "appearance.method=propagate", "appearance.enabled=false",
                       "appearance.min_similarity=0.9", "+appearance.descriptor.size=64"])
    a = build(cfg, "appearance")
    assert (a.method, a.enabled, a.min_similarity, a.descriptor.params["size"]) == ("propagate", False, 0.9, 64)
    path = tmp_path / "idcluster.toml"
    path.write_text('[defaults]\noverrides = ["appearance=propagate"]\n\n[defaults.appearance]\nmin_share = 0.7\nk = 7\n')
    defaults, explicit = resolve(load_project(path), ["input_dir=x", "appearance.k=9"])
    a = build(load_config(explicit, defaults=defaults), "appearance")
    assert (a.method, a.min_share, a.k) == ("propagate", 0.7, 9)  # the CLI beats the project file
    with pytest.raises(ConfigError, match="appearance.method must be one of vote, propagate"):
        build(load_config(["input_dir=x", "appearance.method=magic"]), "appearance")
