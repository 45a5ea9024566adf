"""An action from the review page, checked against the schema and the review state, as a journal entry.

Entries carry absolute values (the faces moved, the target identity, the name), so
replaying the journal (evidence.decisions.replay) is deterministic.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from ..evidence import decisions as D
from ..export.report import identity_folder, identity_width
from .schema import validate


class NameTaken(InputError):
    """A rename to the name another identity already has: the page asks whether they are one
    person (then it merges them) instead of letting a later run decide by name."""

    def __init__(self, name: str, ident: int, other: int):
        super().__init__(f"{name!r} is already the name of identity {other}: merge the two if they are one person, "
                         "else choose another name")
        self.name, self.ident, self.other = name, ident, other


def entry_for(a: dict, state: D.State, faces: dict, ranked: Callable[[int], list[str]]) -> dict:
    """The journal entry of action `a` (without its seq/base/time stamp); InputError when it does not apply
    (schema.BadRequest when `a` is malformed, NameTaken when a rename would give two identities one name).
    faces: every known face key; ranked(identity): its members, most central first."""
    a = validate(a)
    op = a["op"]
    s = state
    if op in ("undo", "redo"):
        stack = s.applied if op == "undo" else s.undone
        if not stack:
            raise InputError(f"nothing to {op}")
        return {"op": op, "target": stack[-1].get("seq")}
    if op == "rename":
        ident = _live(s, a["id"])
        name = (a["name"] or "").strip() or None
        other = name_holder(s, name, ident) if name else None
        if other is not None:
            raise NameTaken(name, ident, other)
        return {"op": "rename", "id": ident, "name": name}
    if op in ("hide", "unhide"):
        return {"op": "hide", "id": _live(s, a["id"]), "hidden": op == "hide"}
    if op == "merge":
        ids = [_live(s, i) for i in a["ids"]]
        to = _live(s, a.get("into", ids[0]))
        moved = [k for i in ids if i != to for k in s.members(i)]
        return {"op": "move", "kind": "merge", "faces": moved, "to": to, "from": sorted(set(ids) - {to})}
    if op == "split":
        return {"op": "move", "kind": "split", "faces": _known(faces, a["faces"]), "to": s.next_id}
    if op == "move":
        picked = _known(faces, a["faces"])
        to = D.NOISE if a["to"] == D.NOISE else _live(s, a["to"])
        return {"op": "move", "kind": "move", "faces": picked, "to": to}
    if op == "reject":  # "not this person": out to noise, never back into this identity
        picked = _known(faces, a["faces"])
        sources = {s.assign[k] for k in picked} - {D.NOISE}
        if len(sources) != 1:
            raise InputError("'not this person' works on faces of one identity")
        src = sources.pop()
        anchors = [k for k in ranked(src) if k not in picked][:D.MAX_ANCHORS]
        return {"op": "move", "kind": "reject", "reject": True, "faces": picked, "to": D.NOISE,
                "from": src, "anchors": anchors}
    if op == "dismiss":
        a_id, b_id = _live(s, a["a"]), _live(s, a["b"])
        return {"op": "dismiss", "a": ranked(a_id)[:5], "b": ranked(b_id)[:5]}
    raise InputError(f"unknown action {op!r}")  # pragma: no cover - validate() knows every op


def name_holder(state: D.State, name: str, ident: int) -> int | None:
    """Another live identity with this name (compared as kohya and folders do: case and spaces
    ignored), else None."""
    key = D.name_key(name)
    for i in sorted(state.live_ids()):
        d = state.identities.get(i)
        if i != ident and d is not None and d.name and D.name_key(d.name) == key:
            return i
    return None


def _known(faces: dict, picked: list[str]) -> list[str]:
    bad = [f for f in picked if f not in faces]
    if bad:
        raise InputError(f"unknown face {bad[0]!r}")
    return list(dict.fromkeys(picked))


def _live(state: D.State, ident: int) -> int:
    if ident not in state.live_ids():
        raise InputError(f"no identity {ident}")
    return ident


def describe(entry: dict, entries: list[dict], names: dict[int, str]) -> str:
    """What an action did, in words, for the page's status line ("undid: ..." for undo/redo)."""
    width = identity_width([*names, *(int(v) for k in ("id", "to") if isinstance(v := entry.get(k), int))])
    # an identity that is gone (merged away, undone) by the number its folder had
    where = lambda i: "noise" if i == D.NOISE else names.get(i) or identity_folder(i, width)  # noqa: E731
    faces = lambda e: f"{len(e['faces'])} face{'' if len(e['faces']) == 1 else 's'}"  # noqa: E731
    op = entry["op"]
    if op in ("undo", "redo"):
        target = next((e for e in entries if e.get("seq") == entry.get("target")), None)
        done = describe(target, entries, names) if target else f"action #{entry.get('target')}"
        return f"{'undid' if op == 'undo' else 'redid'}: {done}"
    if op == "move":
        kind = entry.get("kind", "move")
        if kind == "merge":
            return f"merged {', '.join(where(i) for i in entry.get('from', []))} into {where(entry['to'])}"
        if kind == "split":
            return f"split {faces(entry)} off into {where(entry['to'])}"
        if kind == "reject":
            return f"took {faces(entry)} out of {where(entry['from'])} (not this person)"
        return f"moved {faces(entry)} to {where(entry['to'])}"
    if op == "rename":  # the folder without the name it now carries
        folder = "_".join(where(entry["id"]).split("_")[:2])
        return f"named {folder} {entry['name']!r}" if entry.get("name") else f"removed the name of {folder}"
    if op == "hide":
        return f"{'hid' if entry['hidden'] else 'showed again'} {where(entry['id'])}"
    if op == "dismiss":
        return "dismissed a merge suggestion"
    return op
