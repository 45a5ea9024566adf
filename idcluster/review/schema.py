"""The request bodies the review page sends: read one safely, and check it against the schema.

Every action body is a JSON object whose `op` names one of OPS; each op lists its
fields, each field its type. Anything else (a missing or unknown field, a float,
a boolean or a huge number where an identity number belongs, a name that is not
a string, a nested value where a face key belongs) is a `BadRequest` with the
reason: the server answers 400, never 500. A body over MAX_BODY bytes is refused
before it is read (413); JSON nested too deeply and the non-JSON constants
`Infinity`/`NaN` are refused while parsing.
"""

from __future__ import annotations

import json
import re

from ..errors import InputError

MAX_BODY = 8 * 2**20  # bytes: a split of 100,000 selected faces (~70 bytes a key) fits
MAX_FACES = 100_000
MAX_IDS = 10_000
MAX_NAME = 200
MAX_IDENTITY = 2**31 - 1
FACE_KEY = re.compile(r"[0-9a-f]{64}:[0-9]{1,6}")  # <image sha256>:<face index> (evidence.decisions.face_key)


class BadRequest(InputError):
    """A request the page would never send: 400 (413 when too large) with the reason."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------- field types: value -> value, or BadRequest


def identity(value, field: str, noise: bool = False) -> int:
    """An identity number: a JSON integer (not a float, not a boolean) in range; -1 (noise) only where allowed."""
    low = -1 if noise else 0
    if type(value) is not int or not low <= value <= MAX_IDENTITY:
        allowed = "an identity number (or -1 for noise)" if noise else "an identity number"
        raise BadRequest(f"{field} must be {allowed}, got {_show(value)}")
    return value


def identities(value, field: str) -> list[int]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_IDS:
        raise BadRequest(f"{field} must be a list of 2 to {MAX_IDS} identity numbers, got {_show(value)}")
    out = [identity(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if len(set(out)) < 2:
        raise BadRequest(f"{field} must name two or more different identities")
    return out


def faces(value, field: str) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FACES:
        raise BadRequest(f"{field} must be a list of 1 to {MAX_FACES} face keys, got {_show(value)}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not FACE_KEY.fullmatch(v):
            raise BadRequest(f"{field}[{i}] must be a face key (<sha256>:<face index>), got {_show(v)}")
    return value


def name(value, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise BadRequest(f"{field} must be a string of at most {MAX_NAME} characters (or null), got {_show(value)}")
    return value


def target(value, field: str) -> int:
    return identity(value, field, noise=True)


REQUIRED, OPTIONAL = True, False
OPS: dict[str, dict[str, tuple]] = {
    "undo": {},
    "redo": {},
    "rename": {"id": (identity, REQUIRED), "name": (name, REQUIRED)},
    "hide": {"id": (identity, REQUIRED)},
    "unhide": {"id": (identity, REQUIRED)},
    "merge": {"ids": (identities, REQUIRED), "into": (identity, OPTIONAL)},
    "split": {"faces": (faces, REQUIRED)},
    "move": {"faces": (faces, REQUIRED), "to": (target, REQUIRED)},
    "reject": {"faces": (faces, REQUIRED)},
    "dismiss": {"a": (identity, REQUIRED), "b": (identity, REQUIRED)},
}


def validate(body) -> dict:
    """The action `body` checked against OPS (a new dict); BadRequest names the first problem."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {_show(body)}")
    op = body.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise BadRequest(f"op must be one of {', '.join(OPS)}; got {_show(op)}")
    fields = OPS[op]
    unknown = sorted(set(body) - set(fields) - {"op"})
    if unknown:
        raise BadRequest(f"{op}: unknown field {unknown[0]!r} (allowed: {', '.join(fields) or 'none'})")
    out = {"op": op}
    for key, (check, required) in fields.items():
        if key in body:
            out[key] = check(body[key], key)
        elif required:
            raise BadRequest(f"{op} needs the field {key!r}")
    if op == "merge" and "into" in out and out["into"] not in out["ids"]:
        raise BadRequest(f"merge: into ({out['into']}) must be one of ids")
    if op == "dismiss" and out["a"] == out["b"]:
        raise BadRequest("dismiss needs two different identities")
    return out


# ---------------------------------------------------------------- parsing


def parse(data: bytes):
    """JSON from the request bytes: strict UTF-8, no Infinity/NaN, bounded nesting."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as e:
        raise BadRequest(f"the body is not JSON ({e})") from None


def _no_constant(word: str):
    raise BadRequest(f"{word} is not a JSON number")


async def read_body(request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes: by its Content-Length
    before reading anything, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise BadRequest(f"the body is larger than {limit} bytes", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _show(value) -> str:
    """A short, safe rendering of a rejected value for the error message."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 24 else text[:20] + "..."
    if isinstance(value, str):
        return json.dumps(value[:40] + ("..." if len(value) > 40 else ""))
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, type(value).__name__)
