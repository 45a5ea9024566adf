"""Files kohya-ss sd-scripts writes beside a training set's images, recognised by name.

sd-scripts caches into the image folders (--cache_latents_to_disk,
--cache_text_encoder_outputs_to_disk, a subset's cache_info):

    <stem>.npz                       latents, the older name (still read when present)
    <stem>_<WWWW>x<HHHH>_<model>.npz latents (model: sd, sdxl, sd3, flux, ...)
    <stem>_te_outputs.npz            text encoder outputs (SDXL)
    <stem>_<model>_te.npz            text encoder outputs (sd3, flux, lumina, ...)
    metadata_cache.json              image sizes and captions of the folder (absolute paths)

A re-export keeps them while their image and caption are unchanged and removes
the stale ones (image gone, rewritten or recaptioned): sd-scripts would
otherwise train on latents of an image that is no longer there.
"""

from __future__ import annotations

import re
from pathlib import Path

METADATA_CACHE = "metadata_cache.json"
# Latents or text-encoder outputs of the image `<stem>.<ext>` in the same folder (tried in this order).
_NPZ = (re.compile(r"^(?P<stem>.+)_\d{4}x\d{4}_[A-Za-z0-9]+\.npz$"),
        re.compile(r"^(?P<stem>.+)_te_outputs\.npz$"),
        re.compile(r"^(?P<stem>.+)_[A-Za-z0-9]+_te\.npz$"),
        re.compile(r"^(?P<stem>.+)\.npz$"))


def cache_stem(name: str, stems: set[str]) -> str | None:
    """The stem of the image in `stems` whose sd-scripts cache file `name` is, or None."""
    if not name.endswith(".npz"):
        return None
    for pattern in _NPZ:
        m = pattern.match(name)
        if m and m.group("stem") in stems:
            return m.group("stem")
    return None


def caches_in(folder: Path, stems: set[str]) -> dict[Path, str | None]:
    """sd-scripts' cache files in `folder` for images with these stems: path -> image stem
    (None for the folder's metadata_cache.json)."""
    found: dict[Path, str | None] = {}
    if not folder.is_dir():
        return found
    for p in folder.iterdir():
        if not p.is_file():
            continue
        if p.name == METADATA_CACHE:
            found[p] = None
        else:
            stem = cache_stem(p.name, stems)
            if stem is not None:
                found[p] = stem
    return found
