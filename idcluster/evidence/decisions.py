"""The decisions journal: append-only JSON lines in the output folder, keyed by image content.

Every line is one entry. A `base` entry snapshots the clustering a review started
from (face key -> identity, names, hidden, reviewed, and where images without a
clustered face were placed), `extend` entries add what `idcluster add` placed
since; action entries after it
(`move`, `rename`, `hide`, `dismiss`, `undo`, `redo`) replay on top of it. A face
key is "<image sha256>:<face index>", never a file name or a cluster number, so
decisions survive renames and re-clustering.

Writing a line (flush + fsync) is the commit point of an action; the folders and
the JSON are a view rebuilt from the replay, so a crash at any moment leaves
either the old or the new state after a restart. A torn last line (kill -9
during the write) is an uncommitted action and is dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

JOURNAL_NAME = "review_decisions.jsonl"
NOISE = -1
MAX_ANCHORS = 1000  # members recorded with a "not this person": enough to find the identity again


def face_key(sha256: str, face_index: int) -> str:
    return f"{sha256}:{int(face_index)}"


def name_key(name: str) -> str:
    """What makes two names the same name (folders and kohya captions ignore case and outer spaces)."""
    return " ".join(name.split()).casefold()


# ---------------------------------------------------------------- journal file


def read_journal(path: Path, repair: bool = False) -> list[dict]:
    """All committed entries. A torn last line is dropped (and cut off with repair=True);
    a corrupt line elsewhere is an error: the journal is the user's work, never guess."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a line whose write never finished
    if tail:
        log.warning("%s: dropping an unfinished last entry (interrupted write)", path)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(len(data) - len(tail))
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise InputError(f"{path} line {n} is not valid JSON: fix or remove that line") from None
    return entries


def append_entry(path: Path, entry: dict) -> None:
    line = (json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- replay


@dataclass
class Identity:
    id: int
    name: str | None = None
    hidden: bool = False
    reviewed: bool = False  # touched by a review action: its members stay together

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "hidden": self.hidden, "reviewed": self.reviewed}


@dataclass
class State:
    assign: dict[str, int]  # face key -> identity id (NOISE = -1)
    identities: dict[int, Identity]
    next_id: int
    applied: list[dict] = field(default_factory=list)  # effective actions (undo removes, redo restores)
    undone: list[dict] = field(default_factory=list)   # redo stack
    ran: dict[str, int] = field(default_factory=dict)  # face key -> identity as the clustering (and add) left it
    placed: dict[str, int] = field(default_factory=dict)  # image sha256 -> identity, images without a clustered face

    _index: dict[int, list[str]] | None = None  # identity -> members, rebuilt after a change

    def _by_ident(self) -> dict[int, list[str]]:
        if self._index is None:
            index: dict[int, list[str]] = {}
            for k, v in self.assign.items():
                index.setdefault(v, []).append(k)
            self._index = index
        return self._index

    def members(self, ident: int) -> list[str]:
        return list(self._by_ident().get(ident, ()))

    def live_ids(self) -> set[int]:
        return {v for v in self._by_ident() if v != NOISE}


def base_entry(base_id: str, assign: dict[str, int], clusters: list[dict], placed: dict[str, int] | None = None) -> dict:
    """placed: image sha256 -> identity of the images the run placed without a clustered face
    (appearance, seeds, tracks); the review keeps them there while that identity lives."""
    idents = [{"id": int(c["cluster"]), "name": c.get("name"), "hidden": bool(c.get("hidden", False)),
               "reviewed": bool(c.get("reviewed", False))} for c in clusters]
    entry = {"op": "base", "base": base_id, "assign": assign, "identities": idents}
    if placed:
        entry["placed"] = placed
    return entry


def extend_entry(base_id: str, assign: dict[str, int], placed: dict[str, int] | None = None) -> dict:
    """Faces (and images without a clustered face) the clustering gained after its base entry
    (`idcluster add`), where they were placed: part of the base on replay, not an undoable action."""
    entry = {"op": "extend", "base": base_id, "assign": assign}
    if placed:
        entry["placed"] = placed
    return entry


def state_from_base(entry: dict, extensions: list[dict] = ()) -> State:
    identities = {d["id"]: Identity(d["id"], d.get("name"), bool(d.get("hidden")), bool(d.get("reviewed")))
                  for d in entry["identities"]}
    assign = {k: int(v) for k, v in entry["assign"].items()}
    placed = {k: int(v) for k, v in (entry.get("placed") or {}).items()}
    for e in extensions:
        assign.update({k: int(v) for k, v in e["assign"].items() if k not in assign})
        placed.update({k: int(v) for k, v in (e.get("placed") or {}).items() if k not in placed})
    next_id = max([*identities, *assign.values(), *placed.values(), -1]) + 1
    return State(assign, identities, next_id, ran=dict(assign), placed=placed)


def _ident(state: State, i: int) -> Identity:
    if i not in state.identities:
        state.identities[i] = Identity(i)
    state.next_id = max(state.next_id, i + 1)
    return state.identities[i]


def apply_action(state: State, a: dict) -> None:
    """Apply one action entry in place (entries carry absolute values: replay is deterministic)."""
    op = a["op"]
    state._index = None
    if op == "move":
        to = int(a["to"])
        touched = {state.assign[k] for k in a["faces"] if k in state.assign}
        for k in a["faces"]:
            if k in state.assign:
                state.assign[k] = to
        for i in touched | {to}:
            if i != NOISE:
                _ident(state, i).reviewed = True
        if a.get("name") is not None and to != NOISE:
            _ident(state, to).name = a["name"]
    elif op == "rename":
        d = _ident(state, int(a["id"]))
        d.name, d.reviewed = (a["name"] or None), True
    elif op == "hide":
        d = _ident(state, int(a["id"]))
        d.hidden, d.reviewed = bool(a["hidden"]), True
    elif op == "dismiss":
        pass  # affects merge suggestions only (see dismissed())
    else:
        raise InputError(f"unknown review action {op!r} in the decisions journal")


def epochs(entries: list[dict]) -> list[tuple[dict | None, list[dict]]]:
    """Split the journal at base entries: [(base, entries after it), ...]."""
    out: list[tuple[dict | None, list[dict]]] = [(None, [])]
    for e in entries:
        if e.get("op") == "base":
            out.append((e, []))
        else:
            out[-1][1].append(e)
    return [(b, es) for b, es in out if b is not None or es]


def effective(actions: list[dict]) -> tuple[list[dict], list[dict]]:
    """(applied, redo stack) after undo/redo entries: a stack machine over the actions."""
    applied: list[dict] = []
    undone: list[dict] = []
    for e in actions:
        if e["op"] == "undo":
            if applied:
                undone.append(applied.pop())
        elif e["op"] == "redo":
            if undone:
                applied.append(undone.pop())
        else:
            applied.append(e)
            undone.clear()
    return applied, undone


def replay(base: dict, actions: list[dict]) -> State:
    state = state_from_base(base, [a for a in actions if a["op"] == "extend"])
    applied, undone = effective([a for a in actions if a["op"] != "extend"])
    for a in applied:
        apply_action(state, a)
    state.applied, state.undone = applied, undone
    return state


# ---------------------------------------------------------------- facts for the next run


@dataclass
class Facts:
    """What every later run must honour, all keyed by face content."""

    groups: list[dict]  # {"faces": [keys], "name", "hidden"}: reviewed identities (must-link each)
    rejects: list[tuple[str, list[str]]]  # (face, members of the identity it was taken out of)
    dismissed: list[tuple[list[str], list[str]]]  # merge suggestions the user dismissed

    def __bool__(self) -> bool:
        return bool(self.groups or self.rejects)


def facts(entries: list[dict]) -> Facts:
    """Reviewed identities of the latest review state; rejections and dismissals of every epoch."""
    rejects: list[tuple[str, list[str]]] = []
    dismissed: list[tuple[list[str], list[str]]] = []
    state = None
    for base, actions in epochs(entries):
        if base is None:
            log.warning("decisions journal entries before any base entry ignored")
            continue
        state = replay(base, actions)
        for a in state.applied:
            if a["op"] == "move" and a.get("reject"):
                rejects += [(k, a["anchors"]) for k in a["faces"]]
            elif a["op"] == "dismiss":
                dismissed.append((a["a"], a["b"]))
    groups = []
    if state is not None:
        named: dict[str, Identity] = {}
        for ident in sorted(state.identities.values(), key=lambda d: d.id):
            faces = state.members(ident.id)
            if not ident.reviewed or not faces:
                continue
            # One name on two identities is not a merge: only the user's own merge joins two people
            # (the review asks when a rename reuses a name); the next run keeps them apart.
            if ident.name and (first := named.setdefault(name_key(ident.name), ident)) is not ident:
                log.warning("identities %d and %d are both named %r but were never merged: kept apart "
                            "(merge them in review if they are one person)", first.id, ident.id, ident.name)
            groups.append({"faces": faces, "name": ident.name, "hidden": ident.hidden})
    return Facts(groups, rejects, dismissed)


def constraint_source(path: Path):
    """A pipeline constraint source: the journal's decisions as Constraints over embedding rows.

    Reviewed identities must-link; distinct reviewed identities cannot-link (one pair
    per two identities: each is must-linked already); a "not this person" face
    cannot-link every member of the identity it was taken out of.
    """
    from ..clustering.constraints import Constraints, rows_by_content

    found = facts(read_journal(path))

    def source(records) -> "Constraints":
        rows = rows_by_content(records)

        def row(key: str):
            sha, _, idx = key.rpartition(":")
            return rows.get((sha, int(idx)))

        must, reps = [], []
        for g in found.groups:
            r = sorted({x for x in map(row, g["faces"]) if x is not None})
            if r:
                must.append(tuple(r))
                reps.append(r[0])
        cannot = {(a, b) for i, a in enumerate(reps) for b in reps[i + 1:]}
        for face, anchors in found.rejects:
            f = row(face)
            if f is None:
                continue
            cannot |= {(min(f, x), max(f, x)) for x in map(row, anchors) if x is not None and x != f}
        return Constraints(must_link=tuple(must), cannot_link=tuple(sorted(cannot)))

    return source


def identity_meta(records, found: Facts) -> dict[int, dict]:
    """Cluster label -> {"name", "hidden", "reviewed"}: each reviewed group's name and hidden
    flag follow its people to the label most of its faces got (cluster numbers change)."""
    label_of = {}
    for r in records:
        if r.sha256 is None:
            continue
        for k, lab in r.face_labels.items():
            label_of[face_key(r.sha256, k)] = lab
    meta: dict[int, dict] = {}
    for g in sorted(found.groups, key=lambda g: -len(g["faces"])):  # larger group wins a tie
        votes = Counter(label_of[k] for k in g["faces"] if label_of.get(k, NOISE) != NOISE)
        if not votes:
            continue
        label = votes.most_common(1)[0][0]
        if label in meta:
            continue
        meta[label] = {"name": g["name"], "hidden": g["hidden"], "reviewed": True}
    return meta


def default_path(output_dir: Path) -> Path:
    return Path(output_dir) / JOURNAL_NAME
