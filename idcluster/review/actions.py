"""An action from the review page, checked against the review state, as a journal entry.

Entries carry absolute values (the faces moved, the target identity, the name), so
replaying the journal (evidence.decisions.replay) is deterministic.
"""

from __future__ import annotations

from typing import Callable

from ..errors import InputError
from ..evidence import decisions as D


def entry_for(a: dict, state: D.State, faces: dict, ranked: Callable[[int], list[str]]) -> dict:
    """The journal entry of action `a` (without its seq/base/time stamp); InputError when it does not apply.
    faces: every known face key; ranked(identity): its members, most central first."""
    op = a.get("op")
    s = state
    if op in ("undo", "redo"):
        stack = s.applied if op == "undo" else s.undone
        if not stack:
            raise InputError(f"nothing to {op}")
        return {"op": op, "target": stack[-1].get("seq")}
    if op == "rename":
        ident = _live(s, a.get("id"))
        name = str(a.get("name") or "").strip()[:200] or None
        return {"op": "rename", "id": ident, "name": name}
    if op in ("hide", "unhide"):
        return {"op": "hide", "id": _live(s, a.get("id")), "hidden": op == "hide"}
    if op == "merge":
        ids = [_live(s, i) for i in a.get("ids") or []]
        if len(set(ids)) < 2:
            raise InputError("merge needs two or more identities")
        to = _live(s, a.get("into", ids[0]))
        moved = [k for i in ids if i != to for k in s.members(i)]
        return {"op": "move", "kind": "merge", "faces": moved, "to": to, "from": sorted(set(ids) - {to})}
    if op == "split":
        return {"op": "move", "kind": "split", "faces": _known(faces, a.get("faces")), "to": s.next_id}
    if op == "move":
        picked = _known(faces, a.get("faces"))
        to = D.NOISE if a.get("to") in (None, -1, "noise") else _live(s, a.get("to"))
        return {"op": "move", "kind": "move", "faces": picked, "to": to}
    if op == "reject":  # "not this person": out to noise, never back into this identity
        picked = _known(faces, a.get("faces"))
        sources = {s.assign[k] for k in picked} - {D.NOISE}
        if len(sources) != 1:
            raise InputError("'not this person' works on faces of one identity")
        src = sources.pop()
        anchors = [k for k in ranked(src) if k not in picked][:D.MAX_ANCHORS]
        return {"op": "move", "kind": "reject", "reject": True, "faces": picked, "to": D.NOISE,
                "from": src, "anchors": anchors}
    if op == "dismiss":
        a_id, b_id = _live(s, a.get("a")), _live(s, a.get("b"))
        return {"op": "dismiss", "a": ranked(a_id)[:5], "b": ranked(b_id)[:5]}
    raise InputError(f"unknown action {op!r}")


def _known(faces: dict, picked) -> list[str]:
    if not isinstance(picked, list) or not picked:
        raise InputError("select at least one face")
    bad = [f for f in picked if f not in faces]
    if bad:
        raise InputError(f"unknown face {bad[0]!r}")
    return list(dict.fromkeys(picked))


def _live(state: D.State, ident) -> int:
    try:
        ident = int(ident)
    except (TypeError, ValueError):
        raise InputError(f"not an identity: {ident!r}") from None
    if ident not in state.live_ids():
        raise InputError(f"no identity {ident}")
    return ident
