"""Identity numbers hold across runs (issue 18 item 8): re-run, review, added images, another clusterer.

A person keeps the number of the previous output's identity they share members with;
new people take numbers the folder never used, so `export.names.identity_003=woody`, a
user's notes and scripts keep pointing at the same person.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.export.report import JSON_NAME, NEXT_NUMBER, identity_number, renumber, stable_numbers
from idcluster.records import ImageRecord

FIRST = ["Adrien_Brody", "Angelina_Jolie", "Donald_Rumsfeld", "Gordon_Brown", "Jeb_Bush", "Naomi_Watts",
         "Tony_Blair", "Winona_Ryder"]
LATER = ["Hugh_Grant", "Li_Peng"]  # people who appear only once images are added


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _numbers(out: Path) -> dict[str, int]:
    """rel_path -> identity number of every clustered image."""
    report = json.loads((out / JSON_NAME).read_text())
    return {img["rel_path"]: img["cluster"] for img in report["images"] if img["cluster"] >= 0}


def _person_numbers(numbers: dict[str, int]) -> dict[str, int]:
    """person -> the number most of their images carry."""
    votes: dict[str, Counter] = {}
    for rel, n in numbers.items():
        votes.setdefault(rel.split("/")[0], Counter())[n] += 1
    return {p: c.most_common(1)[0][0] for p, c in votes.items()}


def _copy(eval_root: Path, dest: Path, people: list[str], part: slice) -> None:
    for person in people:
        for path in sorted((eval_root / "lfw_150px_40ids" / person).glob("*.jpg"))[part]:
            (dest / person).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / person / path.name)


def test_numbers_hold_across_rerun_review_added_images_and_another_clusterer(eval_root, tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    _copy(eval_root, inp, FIRST, slice(0, 7))
    common = [f"input_dir={inp}", f"output_dir={out}", f"cache_dir={tmp_path / 'cache'}", "tracking=off",
              "clusterer=agglomerative", "clusterer.min_cluster_size=3", "workers=1", "-q"]
    _cli("cluster", *common)
    first = _numbers(out)
    people = _person_numbers(first)
    assert sorted(people.values()) == list(range(8))  # a first run numbers largest first, from 0

    # Review: name one person (the folder becomes identity_NNN_woody), then re-run into the same folder.
    from idcluster.review.store import ReviewStore

    woody = people["Naomi_Watts"]
    ReviewStore(out).act({"op": "rename", "id": woody, "name": "woody"})
    _cli("cluster", *common)  # no export.overwrite: idcluster's own folder (item 9)
    assert _numbers(out) == first
    assert (out / f"identity_{woody:03d}_woody").is_dir()

    # More photos of the same people and two new people: old numbers stay, new people take new numbers.
    _copy(eval_root, inp, FIRST, slice(7, None))
    _copy(eval_root, inp, LATER, slice(0, None))
    _cli("cluster", *common)
    added = _numbers(out)
    assert {rel: added[rel] for rel in first} == first
    now = _person_numbers(added)
    assert {p: now[p] for p in FIRST} == people
    assert sorted(now[p] for p in LATER) == [8, 9]
    assert (out / f"identity_{woody:03d}_woody").is_dir()
    report = json.loads((out / JSON_NAME).read_text())
    assert report[NEXT_NUMBER] == 10

    # Another clusterer on the same images: every person keeps their number.
    _cli("cluster", *[c for c in common if not c.startswith("clusterer")], "clusterer=chinese_whispers",
         "clusterer.min_cluster_size=3")
    assert _person_numbers(_numbers(out)) == now

    # Identities that vanish retire their numbers: people who come back later get new ones.
    _cli("cluster", *common[:-3], "clusterer.min_cluster_size=10", "workers=1", "-q")
    gone = set(now.values()) - set(_numbers(out).values())
    assert gone  # the 9-photo people dropped below the size
    _cli("cluster", *common)
    back = _person_numbers(_numbers(out))
    returned = {p for p, n in now.items() if n in gone}
    assert all(back[p] >= 10 for p in returned) and len({back[p] for p in returned}) == len(returned)
    assert {p: back[p] for p in now if p not in returned} == {p: now[p] for p in now if p not in returned}
    assert {identity_number(p.name) for p in out.iterdir() if identity_number(p.name) is not None} == set(back.values())


def _records(assignment: dict[str, int]) -> list[ImageRecord]:
    """One single-face record per image name -> cluster label."""
    recs = []
    for name, label in assignment.items():
        r = ImageRecord(path=f"/x/{name}", rel_path=name, size=1, sha256=name * 8)
        r.face_index, r.face_labels, r.label = 0, {0: label}, label
        recs.append(r)
    return recs


def _report(assignment: dict[str, int], next_number: int = 0) -> dict:
    return {"clusters": [{"cluster": c} for c in sorted(set(assignment.values()) - {-1})], NEXT_NUMBER: next_number,
            "images": [{"sha256": n * 8, "cluster": c, "face_index": 0, "face_clusters": [{"face_index": 0, "cluster": c}]}
                       for n, c in assignment.items()]}


def test_stable_numbers_on_splits_merges_and_strangers():
    before = _report({"a1": 0, "a2": 0, "a3": 0, "b1": 1, "b2": 1, "c1": 2, "c2": 2, "n": -1}, next_number=5)
    # a split in two (the bigger part keeps 0), b and c merged (b is larger... a tie: the lower number wins),
    # a stranger cluster of new images, and a noise image that now forms part of a new cluster.
    records = _records({"a1": 0, "a2": 0, "a3": 3, "b1": 1, "b2": 1, "c1": 1, "c2": 1, "x1": 2, "x2": 2, "n": 3})
    numbers, start = stable_numbers(before, records)
    assert start == 5
    assert numbers == {0: 0, 1: 1, 2: 5, 3: 6}  # 2 is retired with c: never reused by the stranger
    renumber(records, numbers)
    assert {r.rel_path: r.label for r in records}["x1"] == 5 and records[2].face_labels == {0: 6}
    # Nothing shared with the earlier output (another set in the same folder): numbers start afresh.
    assert stable_numbers(before, _records({"z": 0, "y": 1})) == ({0: 0, 1: 1}, 0)
    assert stable_numbers(None, _records({"z": 0})) == ({0: 0}, 0)


@pytest.mark.parametrize("held", [0, 1])
def test_add_numbers_new_identities_past_every_used_number(held):
    from idcluster.export.report import next_number

    report = _report({"a": 0, "b": 3}, next_number=7 if held else 0)
    assert next_number(report) == (7 if held else 4)
