"""`idcluster add`: new images join existing identities or form new ones; the old export is untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from idcluster.cli import app
from idcluster.experiments.evaluation import link_sets
from idcluster.export.report import JSON_NAME
from idcluster.workflows.add import assign
from idcluster.experiments.metrics import bcubed_prf

from tests.conftest import copy_demo_images


def _cli(*args):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_add_joins_existing_identities_and_keeps_reviewer_fields(demo_set, tmp_path):
    src, truth = demo_set
    first = copy_demo_images(src, truth, tmp_path / "first", lambda pos, n_id: pos < 3 and n_id < 6)
    # New: one more photo of each of the 6 known people, and 4 photos of a seventh.
    second = copy_demo_images(src, truth, tmp_path / "second", lambda pos, n_id: (3 <= pos < 4 and n_id < 6) or (n_id == 6 and pos < 4))
    out = tmp_path / "out"
    common = [f"output_dir={out}", "tracking=off", "clusterer.min_cluster_size=3", "workers=1", "--quiet"]
    _cli("cluster", f"input_dir={tmp_path / 'first'}", *common)
    report = json.loads((out / JSON_NAME).read_text())
    assert len(report["clusters"]) == 6
    report["clusters"][0]["name"] = "Alice"  # what the review UI writes
    report["clusters"][1]["hidden"] = True
    (out / JSON_NAME).write_text(json.dumps(report))
    before = {c["identity"]: set(c["images"]) for c in report["clusters"]}

    output = _cli("add", f"input_dir={tmp_path / 'second'}", *common)
    assert "6 faces joined existing identities, 1 new identities" in output
    after = json.loads((out / JSON_NAME).read_text())
    assert after["clusters"][0]["name"] == "Alice" and after["clusters"][1]["hidden"] is True
    by_name = {c["identity"]: set(c["images"]) for c in after["clusters"]}
    member_truth = {**first, **second}
    for identity, members in by_name.items():
        assert len({member_truth[m] for m in members}) == 1, identity  # no identity mixes people
        if identity in before:
            assert before[identity] < members  # kept everything, gained one
            assert len(members - before[identity]) == 1
    assert len(by_name) == 7 and len(by_name[after["clusters"][6]["identity"]]) == 4
    for c in after["clusters"]:
        assert {p.name for p in (out / c["identity"]).iterdir()} == set(c["images"])
    assert after["statistics"]["images"] == len(member_truth)
    assert after["additions"][0]["joined_existing"] == 6

    assert "0 faces joined" in _cli("add", f"input_dir={tmp_path / 'second'}", *common)  # same images again: no-op
    assert json.loads((out / JSON_NAME).read_text())["statistics"]["images"] == len(member_truth)


def test_add_without_an_export_is_one_error_line(tmp_path):
    (tmp_path / "new").mkdir()
    result = CliRunner().invoke(app, ["add", f"input_dir={tmp_path / 'new'}", f"output_dir={tmp_path / 'none'}", "tracking=off"])
    assert result.exit_code == 2
    assert "no earlier export in" in result.output and "Traceback" not in result.output


def test_assign_votes_with_neighbours_and_never_puts_one_image_twice_in_an_identity():
    from idcluster.clustering.clusterers import Agglomerative

    e = np.eye(4)
    X_old = np.array([e[0], e[0], e[1], e[1]], dtype=np.float32)
    y_old = np.array([0, 0, 1, 1])
    X_new = np.array([e[0], e[0] * 0.99 + e[2] * 0.01, e[3], e[3] * 0.999 + e[2] * 0.04, e[2]], dtype=np.float32)
    groups = np.array([0, 0, 1, 2, 3])  # rows 0 and 1: faces of one image, both closest to identity 0
    a = assign(X_old, y_old, X_new, groups, 0.05, Agglomerative(distance_threshold=0.05, min_cluster_size=2))
    assert a.labels[:2].tolist().count(0) == 1
    assert a.labels[2] == a.labels[3] == 2  # a new identity, numbered after the existing ones
    assert a.labels[4] == -1 and a.joined == 1 and a.new_identities == 1


@pytest.mark.eval
@pytest.mark.slow
def test_adding_half_of_lfw_matches_clustering_everything(eval_root, tmp_path):
    """Real faces: cluster half of each LFW identity's photos, add the other half, compare with all at once."""
    truth = link_sets([eval_root / "lfw_150px_40ids"], tmp_path / "all")
    halves = {"a": {}, "b": {}}
    by_id: dict = {}
    for rel, (_, identity) in sorted(truth.items()):
        by_id.setdefault(identity, []).append(rel)
    for identity, rels in by_id.items():
        for pos, rel in enumerate(rels):
            part = "a" if pos % 2 == 0 else "b"
            link = tmp_path / part / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((tmp_path / "all" / rel).resolve())
            halves[part][rel] = identity
    cache = tmp_path / "cache"
    common = ["tracking=off", f"cache_dir={cache}", "clusterer=agglomerative", "--quiet"]
    _cli("cluster", f"input_dir={tmp_path / 'all'}", f"output_dir={tmp_path / 'o_all'}", *common)
    _cli("cluster", f"input_dir={tmp_path / 'a'}", f"output_dir={tmp_path / 'o_inc'}", *common)
    _cli("add", f"input_dir={tmp_path / 'b'}", f"output_dir={tmp_path / 'o_inc'}", *common)

    def f1(report, label_of):
        y, pred = [], []
        for img in report["images"]:
            y.append(label_of[img["rel_path"]])
            pred.append(img["cluster"])
        return bcubed_prf(y, pred)[2]

    full = json.loads((tmp_path / "o_all" / JSON_NAME).read_text())
    inc = json.loads((tmp_path / "o_inc" / JSON_NAME).read_text())
    label_of = {r: i for r, (_, i) in truth.items()}  # a/ and b/ hold the same relative paths as all/
    f_all, f_inc = f1(full, label_of), f1(inc, label_of)
    print(f"BCubed F1: all at once {f_all:.3f}, half + add {f_inc:.3f}")
    assert f_inc >= f_all - 0.03
