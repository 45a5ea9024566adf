"""seeds=... and constraints.frame_pattern / track_pattern, on instance folders built from real photos.

Folders are made in tmp from the demo crops (insightface's shipped photos of 7 people):
file names carry the video structure (`t<track>_f<frame>_i<k>.png`), shrunken copies
stand for faceless instances.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image

from idcluster.pipeline import stages as pipeline
from idcluster.workflows.cluster import cluster, make_spec
from idcluster.errors import ConfigError
from idcluster.evidence.seeds import read_seeds
from idcluster.evidence.video_links import VideoLinks

FRAME, TRACK = r"_(f\d+)_", r"^(t\d+)_"


def run(cfg):
    return pipeline.run(make_spec(cfg, "cluster", progress=False))


def by_identity(truth):
    out = {}
    for name in sorted(truth):
        out.setdefault(truth[name], []).append(name)
    return out


def shrink(src, dest, factor=0.3):
    im = Image.open(src).convert("RGB")
    im.resize((max(8, round(im.width * factor)), max(8, round(im.height * factor))), Image.Resampling.LANCZOS).save(dest)


@pytest.fixture
def video_set(demo_set, tmp_path):
    """4 crops of each of 7 people, one track per person, frame f<k> holds each person's k-th crop."""
    src, truth = demo_set
    dest = tmp_path / "video"
    dest.mkdir()
    people = by_identity(truth)
    names, who = {}, {}
    for p, (identity, files) in enumerate(sorted(people.items())):
        for k, f in enumerate(files[:4]):
            name = f"t{p:02d}_f{k:02d}_i{p}.png"
            Image.open(src / f).convert("RGB").save(dest / name)
            names[name], who[identity] = identity, who.get(identity, []) + [name]
    return dest, names, who


def test_frame_pattern_cannot_links_in_every_clusterer(video_set, config):
    folder, truth, who = video_set
    a, b = sorted(who)[:2]
    # A mirrored copy of person a's frame-f01 crop, cut from that same frame f01.
    twin = folder / "t99_f01_i9.png"
    Image.open(folder / who[a][1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(twin)
    clusterers = [["clusterer=hdbscan", "clusterer.min_cluster_size=4"], ["clusterer=agglomerative"],
                  ["clusterer=dbscan"], ["clusterer=chinese_whispers"]]
    for overrides in clusterers:
        free = {r.rel_path: r for r in run(config(folder, *overrides, "appearance.enabled=false")).records}
        assert free[twin.name].label == free[who[a][1]].label >= 0, overrides  # without the pattern: together
        linked = {r.rel_path: r for r in run(config(folder, *overrides, f"constraints.frame_pattern='{FRAME}'",
                                                     "appearance.enabled=false")).records}
        assert linked[twin.name].label != linked[who[a][1]].label or linked[twin.name].label == -1, overrides


def test_track_pattern_must_links_faces_and_places_faceless(video_set, config, tmp_path):
    folder, truth, who = video_set
    a, b = sorted(who)[:2]
    # A crop of person b inside person a's track: the track says it is a.
    intruder = f"{who[a][0].split('_')[0]}_f50_i7.png"
    Image.open(folder / who[b][2]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / intruder)
    # A faceless (shrunken) crop of person b inside person a's track, too.
    faceless = f"{who[a][0].split('_')[0]}_f51_i7.png"
    shrink(folder / who[b][3], folder / faceless)
    cfg = config(folder, f"constraints.track_pattern='{TRACK}'", f"constraints.frame_pattern='{FRAME}'",
                 "faces.min_face_size=64")
    cluster(cfg, _quiet(), progress=False)
    saved = json.loads((tmp_path / "out" / "identity_clustering.json").read_text())
    images = {i["rel_path"]: i for i in saved["images"]}
    a_label = images[who[a][0]]["cluster"]
    assert a_label >= 0 and images[intruder]["cluster"] == a_label  # must-link beat the face
    assert images[faceless]["cluster"] == a_label and images[faceless]["evidence"] == "track"
    assert images[faceless]["links"] == {"track": who[a][0].split("_")[0], "frame": "f51"}
    assert images[who[b][0]]["cluster"] != a_label


def test_video_patterns_are_checked():
    with pytest.raises(ConfigError, match="needs a group"):
        VideoLinks(frame_pattern=r"frame\d+")
    with pytest.raises(ConfigError, match="not a regular expression"):
        VideoLinks(track_pattern="(unclosed")
    assert VideoLinks(frame_pattern=r"(?P<id>f\d+)_x(\d)")  # a named group wins over group 1


def _quiet():
    from rich.console import Console

    return Console(quiet=True)


def _seed_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relative_path", "name"])
        w.writerows(rows)


def test_seeds_name_identities_and_place_faceless_images(small_set, config, tmp_path):
    folder, truth = small_set
    people = by_identity(truth)
    a, c = sorted(people)[0], sorted(people)[2]
    shrink(folder / people[c][0], folder / "tiny_c.png")  # faceless, seeded
    shrink(folder / people[a][0], folder / "tiny_a.png")  # faceless, not seeded
    seeds = tmp_path / "seeds.csv"
    _seed_csv(seeds, [(people[a][0], "alice"), (people[a][1], "alice"), ("tiny_c.png", "carol"),
                      ("missing.png", "nobody")])
    result = run(config(folder, f"seeds={seeds}", "faces.min_face_size=64"))
    by = {r.rel_path: r for r in result.records}
    assert by[people[a][0]].evidence == "seed" and by[people[a][0]].label == by[people[a][1]].label >= 0
    assert by["tiny_c.png"].evidence == "seed" and by["tiny_c.png"].label == by[people[c][1]].label  # voted into c
    assert by["tiny_c.png"].links == {"seed": "carol"}
    assert by["tiny_a.png"].label == by[people[a][0]].label


def test_seeds_of_different_names_are_cannot_linked(small_set, config, tmp_path):
    """Two photos of one person under two names end in two identities: the user's word wins."""
    folder, truth = small_set
    people = by_identity(truth)
    a = sorted(people)[0]
    seeds = tmp_path / "seeds"
    for name, f in [("ann", people[a][0]), ("bea", people[a][1])]:
        (seeds / name).mkdir(parents=True)
        shutil.copy2(folder / f, seeds / name / "x.png")  # outside the input: matched by content
    assert read_seeds(seeds, folder) and len(set(read_seeds(seeds, folder).values())) == 2
    free = {r.rel_path: r.label for r in run(config(folder)).records}
    assert free[people[a][0]] == free[people[a][1]]
    seeded = {r.rel_path: r.label for r in run(config(folder, f"seeds={seeds}")).records}
    assert seeded[people[a][0]] != seeded[people[a][1]] and seeded[people[a][0]] >= 0


def test_bad_seeds_are_one_line_errors(small_set, tmp_path, config):
    folder, truth = small_set
    with pytest.raises(ConfigError, match="no such file or folder"):
        make_spec(config(folder, f"seeds={tmp_path / 'nope.csv'}"), "cluster")
    bad = tmp_path / "bad.csv"
    bad.write_text("path,who\nx,y\n")
    with pytest.raises(ConfigError, match="relative_path,name"):
        make_spec(config(folder, f"seeds={bad}"), "cluster")
    twice = tmp_path / "twice.csv"
    n = sorted(truth)[0]
    _seed_csv(twice, [(n, "ann"), (n, "bea")])
    with pytest.raises(ConfigError, match="named both"):
        make_spec(config(folder, f"seeds={twice}"), "cluster")


def test_seeds_and_patterns_from_the_project_file(small_set, tmp_path):
    from idcluster.config.settings import load_settings
    from idcluster.config.project import load_project, resolve

    folder, truth = small_set
    seeds = tmp_path / "seeds.csv"
    _seed_csv(seeds, [(sorted(truth)[0], "ann")])
    (tmp_path / "idcluster.toml").write_text(
        f'[defaults]\ninput_dir = "{folder}"\nseeds = "{seeds}"\n'
        'overrides = ["constraints.frame_pattern=\'_(f\\\\d+)_\'", "constraints.track_pattern=\'^(t\\\\d+)_\'"]\n')
    defaults, explicit = resolve(load_project(tmp_path / "idcluster.toml"), [])
    spec = make_spec(load_settings(explicit, defaults=defaults), "cluster")
    kinds = {type(s).__name__ for s in spec.constraint_sources}
    assert kinds == {"Seeds", "VideoLinks"}
    video = next(s for s in spec.constraint_sources if type(s).__name__ == "VideoLinks")
    assert video.frame_pattern == r"_(f\d+)_" and video.track_pattern == r"^(t\d+)_"
