"""Contact sheets: clustering results as one picture a reviewer can scan.

- `identity_sheet`: a row per identity (largest first) with its size, its most
  central faces, then (after a gap) its least confident members: the faces to
  check first; a noise row at the end.
- `view_sheet`: one identity, a row per view (subcluster-pose).

Thumbnails are face crops with margin where a face is known, else the whole image.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from ..inputs.images import ImageDecodeError, load_image

LABEL_W = 170
GAP = 12
BG, GAP_BG, TEXT = (255, 255, 255), (225, 225, 225), (0, 0, 0)


def thumbnail(path: str, box: list[float] | None, size: int) -> Image.Image | None:
    try:
        im = Image.fromarray(load_image(path))
    except ImageDecodeError:
        return None
    if box:
        x1, y1, x2, y2 = box
        m = 0.2 * max(x2 - x1, y2 - y1)
        im = im.crop((max(0, x1 - m), max(0, y1 - m), min(im.width, x2 + m), min(im.height, y2 + m)))
    im.thumbnail((size, size))
    return im


def draw_rows(rows: list[tuple[str, list[tuple[str, list | None]], list[tuple[str, list | None]]]], path: Path,
              thumb: int = 64, per_row: int = 8, tail: int = 0) -> Path:
    """rows: (label, head thumbnails, tail thumbnails) with each thumbnail as (image path, face box)."""
    per_row = max(1, min(per_row, max((len(h) for _, h, _ in rows), default=1)))  # no empty columns
    width = LABEL_W + per_row * thumb + (GAP + tail * thumb if tail else 0)
    sheet = Image.new("RGB", (width, max(1, len(rows)) * thumb), BG)
    draw = ImageDraw.Draw(sheet)
    for y, (label, head, rest) in enumerate(rows):
        top = y * thumb
        for n, line in enumerate(label.split("\n")[:3]):
            draw.text((4, top + 6 + 14 * n), line[:26], fill=TEXT)
        if tail:
            x0 = LABEL_W + per_row * thumb
            draw.rectangle((x0, top, x0 + GAP - 1, top + thumb - 1), fill=GAP_BG)
        for x, (p, box) in enumerate(head[:per_row]):
            im = thumbnail(p, box, thumb)
            if im is not None:
                sheet.paste(im, (LABEL_W + x * thumb, top))
        for x, (p, box) in enumerate(rest[:tail]):
            im = thumbnail(p, box, thumb)
            if im is not None:
                sheet.paste(im, (LABEL_W + per_row * thumb + GAP + x * thumb, top))
    sheet.save(path)
    return path


def _face_box(img: dict, identity: str) -> list | None:
    if img.get("identity") == identity and img.get("face"):
        return img["face"]["box"]
    for fc in img.get("face_clusters", []):
        if fc.get("identity") == identity and fc.get("face_index") is not None and fc["face_index"] < len(img.get("faces", [])):
            return img["faces"][fc["face_index"]]["box"]
    return None


def identity_sheet(report: dict, path: Path, centrality: dict[str, float] | None = None, central: int = 8,
                   least: int = 4, max_rows: int = 30, thumb: int = 64) -> Path:
    """A row per identity: `central` most central faces | `least` least confident members.

    centrality: rel_path -> higher is more central (e.g. cosine to the identity's
    mean embedding); without it the clusterer's membership probability ranks both.
    """
    by_rel = {img["rel_path"]: img for img in report["images"]}
    rows = []
    for c in [c for c in report["clusters"] if not c.get("hidden")][:max_rows]:
        imgs = [by_rel[r] for r in c["images"] if r in by_rel]
        score = (lambda im: centrality.get(im["rel_path"], -1.0)) if centrality else (lambda im: im.get("probability") or 0.0)
        by_doubt = sorted(imgs, key=lambda im: ((im.get("probability") or 0.0) if im.get("identity") == c["identity"] else 0.0, score(im)))
        rest = by_doubt[:min(least, len(imgs) // 2)]  # a small identity still shows its doubtful half
        doubtful = {im["rel_path"] for im in rest}
        head = sorted((im for im in imgs if im["rel_path"] not in doubtful), key=lambda im: -score(im))[:central]
        label = f"{c.get('name') or c['identity']}\n{c['size']} images"
        if c.get("name"):
            label += f"\n{c['identity']}"
        rows.append((label, [(im["path"], _face_box(im, c["identity"])) for im in head],
                     [(im["path"], _face_box(im, c["identity"])) for im in rest]))
    noise = report.get("noise", {})
    if noise.get("images"):
        imgs = [by_rel[r] for r in noise["images"] if r in by_rel]
        rows.append((f"noise\n{noise.get('size', len(imgs))} images", [(im["path"], (im.get("face") or {}).get("box")) for im in imgs], []))
    return draw_rows(rows, path, thumb=thumb, per_row=central, tail=least)


def view_sheet(title: str, views: dict[str, list[tuple[str, list | None]]], path: Path, per_row: int = 10,
               thumb: int = 64) -> Path:
    """One identity, a row per view: views = view name -> [(image path, face box)]."""
    rows = [(f"{title}\n{view}\n{len(items)} images", items, []) for view, items in views.items()]
    return draw_rows(rows, path, thumb=thumb, per_row=per_row)
