"""Caption text of a training image: `prefix, name, view` on one line."""

from __future__ import annotations

# What each view bin reads as in a caption. pitch "up" means the face looks up,
# i.e. the camera sees it from below.
VIEW_PHRASES = {
    "front": "front view",
    "three_quarter_left": "three-quarter view",
    "three_quarter_right": "three-quarter view",
    "profile_left": "profile",
    "profile_right": "profile",
    "up": "from below",
    "down": "from above",
    "no_face": "",
}


def caption(prefix: str, name: str, view_bin: str | None) -> str:
    parts = [str(prefix or "").strip(), name.strip(), VIEW_PHRASES.get(view_bin or "", "")]
    return ", ".join(" ".join(p.split()) for p in parts if p)
