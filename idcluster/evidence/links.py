"""Image-level facts from the constraint sources (seed names, video tracks and frames), by record index."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ImageLinks:
    """Image-level facts from constraint sources, by record index."""

    names: dict[int, str] = field(default_factory=dict)  # seed name
    tracks: dict[int, str] = field(default_factory=dict)  # video track
    frames: dict[int, str] = field(default_factory=dict)  # source frame

    def __or__(self, other: "ImageLinks") -> "ImageLinks":
        return ImageLinks({**self.names, **other.names}, {**self.tracks, **other.tracks}, {**self.frames, **other.frames})


def image_links(sources, records) -> ImageLinks:
    """Union of the ImageLinks of every constraint source that has `links(records)`."""
    out = ImageLinks()
    for s in sources or ():
        if hasattr(s, "links"):
            out = out | s.links(records)
    return out
