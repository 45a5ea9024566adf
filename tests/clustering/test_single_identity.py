"""A folder that holds one character is one identity, with every clusterer (issue: HDBSCAN
alone never returns a single cluster), while folders of several people still split."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from idcluster.pipeline import stages as pipeline
from idcluster.workflows.cluster import make_spec
from idcluster.config.compose import group_options
from idcluster.experiments.demo_data import insightface_image

CLUSTERERS = ["hdbscan", *[c for c in group_options("clusterer") if c != "hdbscan"]]


def identities(config, folder, *overrides):
    result = pipeline.run(make_spec(config(folder, *overrides), "cluster", progress=False))
    return result, {r.rel_path: r.label for r in result.records}


@pytest.fixture
def duplicates(tmp_path):
    """One real portrait as 8 exact or near duplicates in PNG, JPEG and WebP."""
    folder = tmp_path / "dups"
    folder.mkdir()
    im = Image.open(insightface_image("Tom_Hanks_54745.png")).convert("RGB")
    im.save(folder / "a.png")
    im.save(folder / "b.jpg", quality=95)
    im.save(folder / "c.jpg", quality=60)
    im.save(folder / "d.webp", quality=90)
    im.save(folder / "e.webp", lossless=True)
    im.resize((im.width * 9 // 10, im.height * 9 // 10)).save(folder / "f.png")
    im.resize((im.width * 11 // 10, im.height * 11 // 10)).save(folder / "g.jpg", quality=90)
    im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "h.webp")
    return folder


@pytest.mark.parametrize("clusterer", CLUSTERERS)
def test_duplicates_of_one_portrait_are_one_identity(duplicates, config, clusterer):
    _, labels = identities(config, duplicates, f"clusterer={clusterer}")
    assert set(labels.values()) == {0}, labels


@pytest.mark.parametrize("clusterer", CLUSTERERS)
def test_two_people_stay_two(demo_set, tmp_path, config, clusterer):
    src, truth = demo_set
    people = sorted(set(truth.values()))[:2]
    folder = tmp_path / "two"
    folder.mkdir()
    for name, who in truth.items():
        if who in people:
            shutil.copy2(src / name, folder / name)
    _, labels = identities(config, folder, f"clusterer={clusterer}")
    found = {who: {labels[n] for n in labels if truth[n] == who} for who in people}
    assert all(len(v) == 1 and -1 not in v for v in found.values()), found
    assert found[people[0]] != found[people[1]]


@pytest.mark.eval
@pytest.mark.parametrize("clusterer", CLUSTERERS)
def test_one_lfw_persons_folder_is_one_identity(eval_root, config, clusterer):
    # The largest LFW identity of the shared set (10 photos, in the wild).
    root = eval_root / "lfw_150px_40ids"
    folder = max((p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")),
                 key=lambda p: (len(list(p.iterdir())), p.name))
    result, labels = identities(config, folder, f"clusterer={clusterer}")
    found = {l for l in labels.values() if l >= 0}
    assert found == {0}, labels
    assert sum(l == 0 for l in labels.values()) >= 0.8 * len(labels)
