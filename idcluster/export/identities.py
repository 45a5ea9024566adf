"""The typed view of identity_clustering.json: identities, their names and their members.

The JSON is the source of truth downstream of clustering (review edits it:
optional `"name"` and `"hidden"` on entries of `clusters`), so pose splits and
training-set exports read it (through export.report.read_report) rather than
re-deriving folders from labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from ..records import Face


@dataclass
class Member:
    """One image of one identity, with the face that placed it there (None for faceless members)."""

    identity: str
    rel_path: str
    path: str
    sha256: str | None
    face: Face | None
    probability: float
    entry: dict = field(repr=False)  # where this membership's "pose" is recorded in the JSON


@dataclass
class Identity:
    identity: str  # identity_NNN (the folder of the folders export)
    name: str  # export.names > the cluster's "name" > identity_NNN
    hidden: bool
    members: list[Member]


def identities(report: dict, names: dict | None = None) -> list[Identity]:
    """Identities in JSON order (largest first), with members and the face each was placed by."""
    names = dict(names or {})
    by_rel = {img["rel_path"]: img for img in report["images"]}
    out = []
    for c in report["clusters"]:
        ident = c["identity"]
        members = []
        for rel in c.get("images", []):
            img = by_rel.get(rel)
            if img is None:
                continue
            members.append(_member(ident, img))
        name = names.get(ident) or c.get("name") or ident
        out.append(Identity(ident, str(name), bool(c.get("hidden", False)), members))
    return out


def _member(ident: str, img: dict) -> Member:
    """The face of `img` that belongs to `ident`: its chosen face, or (faces.select=all) another one."""
    face, entry = None, img
    if img.get("identity") == ident and img.get("face"):
        face = Face.from_dict(img["face"])
    else:
        for fc in img.get("face_clusters", []):
            if fc.get("identity") == ident and fc.get("face_index") is not None and fc["face_index"] < len(img.get("faces", [])):
                face, entry = Face.from_dict(img["faces"][fc["face_index"]]), fc
                break
    return Member(ident, img["rel_path"], img["path"], img.get("sha256"), face,
                  float(img.get("probability") or 0.0), entry)


def select(all_ids: list[Identity], identity: str | None) -> list[Identity]:
    """Visible identities, or the one asked for (a clear error when unknown)."""
    if identity is None:
        return [i for i in all_ids if not i.hidden]
    for i in all_ids:
        if identity in (i.identity, i.name):
            return [i]
    known = ", ".join(i.identity for i in all_ids[:10]) + (" ..." if len(all_ids) > 10 else "")
    raise InputError(f"unknown identity={identity!r} (known: {known or 'none'})")
