"""Must-link / cannot-link constraints over embedding rows, and the post-processing
every clusterer applies them with.

Constraints are data: seeds, review decisions and video tracks/frames each turn
into a `Constraints` over the rows of the embedding matrix (via the image
content, `rows_by_content`), never over file names or cluster numbers, so they
survive renames and re-clustering. `apply_constraints` runs inside the shared
clusterer post-processing (`base.FaceClusterer.fit`, with `base.apply_constraints`), so every clusterer
honours them the same way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Constraints:
    """Pairwise constraints over embedding rows (rows of pipeline.Result.embeddings)."""

    must_link: tuple[tuple[int, ...], ...] = ()  # each tuple: rows that must share one identity
    cannot_link: tuple[tuple[int, int], ...] = ()  # row pairs that must never share one identity

    def __post_init__(self):
        object.__setattr__(self, "must_link", tuple(tuple(int(r) for r in g) for g in self.must_link if len(g)))
        object.__setattr__(self, "cannot_link", tuple((int(a), int(b)) for a, b in self.cannot_link if a != b))

    def __or__(self, other: "Constraints") -> "Constraints":
        return Constraints(self.must_link + other.must_link, self.cannot_link + other.cannot_link)

    def __bool__(self) -> bool:
        return bool(self.must_link or self.cannot_link)

    def key(self) -> str:
        """Stable hash of the constraint set (order of groups and pairs does not matter)."""
        ml = sorted(sorted(g) for g in self.must_link)
        cl = sorted(sorted(p) for p in self.cannot_link)
        return hashlib.sha256(json.dumps([ml, cl], separators=(",", ":")).encode()).hexdigest()


def rows_by_content(records) -> dict[tuple[str, int], int]:
    """(image sha256, face index) -> embedding row, for every embedded face.

    An image whose bytes appear twice in the input maps to the first row seen.
    """
    rows: dict[tuple[str, int], int] = {}
    for rec in records:
        if rec.sha256 is None:
            continue
        for k, row in sorted(rec.face_rows.items()):
            rows.setdefault((rec.sha256, int(k)), int(row))
    return rows


def union_groups(groups, n: int) -> list[np.ndarray]:
    """Union overlapping must-link groups (union-find over rows < n); each result sorted."""
    parent = np.arange(n)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    touched: set[int] = set()
    for g in groups:
        g = [r for r in g if 0 <= r < n]
        touched.update(g)
        for r in g[1:]:
            a, b = find(g[0]), find(r)
            if a != b:
                parent[b] = a
    by_root: dict[int, list[int]] = {}
    for r in sorted(touched):
        by_root.setdefault(find(r), []).append(r)
    return [np.array(v) for v in by_root.values()]


def must_linked_rows(constraints: Constraints | None, n: int) -> np.ndarray:
    """Boolean mask of rows in any must-link group (exempt from min_cluster_size)."""
    mask = np.zeros(n, dtype=bool)
    if constraints:
        for g in constraints.must_link:
            mask[[r for r in g if 0 <= r < n]] = True
    return mask


def cannot_link_map(constraints: Constraints | None) -> dict[int, set[int]]:
    """row -> rows it must never share an identity with."""
    out: dict[int, set[int]] = {}
    if constraints:
        for a, b in constraints.cannot_link:
            out.setdefault(a, set()).add(b)
            out.setdefault(b, set()).add(a)
    return out
