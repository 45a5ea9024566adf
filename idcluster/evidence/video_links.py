"""constraints.frame_pattern / constraints.track_pattern: video structure from file names.

Instances cut from one frame are different characters (cannot-link); instances
of one track are one character (must-link). Each pattern is a regular
expression searched in the input's relative path (with `/`); its first group
(or the group named `id`) names the frame or the track, e.g.
`frame_pattern='(.*)_inst\\d+'` or `track_pattern='track(\\d+)/'`. A path the
pattern does not match has no frame/track. A constraint source for every
clusterer (idcluster.clustering.constraints) and image-level links for the faceless stage
(idcluster.evidence.instance).
"""

from __future__ import annotations

import re
from collections import defaultdict
from itertools import combinations

from .links import ImageLinks
from ..errors import ConfigError


def _compile(pattern: str | None, option: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{option}={pattern!r} is not a regular expression: {e}") from None
    if rx.groups < 1:
        raise ConfigError(f"{option}={pattern!r} needs a group naming the {option.split('.')[-1][:-8]}, e.g. '(.*)_inst\\d+'")
    return rx


def _group(rx: re.Pattern, text: str) -> str | None:
    m = rx.search(text)
    if m is None:
        return None
    value = m.group("id") if "id" in rx.groupindex else m.group(1)
    return value or None


class VideoLinks:
    """Frames (cannot-link) and tracks (must-link) named by regex groups of the relative path."""

    def __init__(self, frame_pattern: str | None = None, track_pattern: str | None = None):
        self.frame_pattern, self.track_pattern = frame_pattern, track_pattern
        self._frame = _compile(frame_pattern, "constraints.frame_pattern")
        self._track = _compile(track_pattern, "constraints.track_pattern")

    def __bool__(self) -> bool:
        return bool(self._frame or self._track)

    def links(self, records) -> ImageLinks:
        out = ImageLinks()
        for i, r in enumerate(records):
            if r.sha256 is None:
                continue
            if self._frame and (f := _group(self._frame, r.rel_path)) is not None:
                out.frames[i] = f
            if self._track and (t := _group(self._track, r.rel_path)) is not None:
                out.tracks[i] = t
        return out

    def __call__(self, records):
        from ..clustering.constraints import Constraints, rows_by_content

        rows = rows_by_content(records)
        links = self.links(records)
        frames, tracks = defaultdict(list), defaultdict(list)
        for i, r in enumerate(records):
            row = rows.get((r.sha256, r.face_index)) if r.face_index is not None else None
            if row is None:
                continue
            if i in links.frames:
                frames[links.frames[i]].append(row)
            if i in links.tracks:
                tracks[links.tracks[i]].append(row)
        must = tuple(tuple(sorted(v)) for v in tracks.values() if len(v) > 1)
        cannot = tuple(pair for v in frames.values() for pair in combinations(sorted(v), 2))
        return Constraints(must_link=must, cannot_link=cannot)
