"""Must-link / cannot-link constraints over embedding rows, and the post-processing
every clusterer applies them with.

Constraints are data: seeds, review decisions and video tracks/frames each turn
into a `Constraints` over the rows of the embedding matrix (via the image
content, `rows_by_content`), never over file names or cluster numbers, so they
survive renames and re-clustering. `apply_constraints` runs inside the shared
clusterer post-processing (`clusterers._FaceClusterer.fit`), so every clusterer
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


def _centre_sims(Xn: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row to its own cluster's centre (noise: -inf)."""
    sims = np.full(len(labels), -np.inf)
    ok = labels >= 0
    if not ok.any():
        return sims
    ids, inv = np.unique(labels[ok], return_inverse=True)
    sums = np.zeros((len(ids), Xn.shape[1]))
    np.add.at(sums, inv, Xn[ok])
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    sims[ok] = np.einsum("ij,ij->i", Xn[ok], centres[inv])
    return sims


def apply_constraints(Xn: np.ndarray, labels: np.ndarray, constraints: Constraints | None) -> np.ndarray:
    """Labels that satisfy `constraints` (see the module docstring); noise is -1.

    1. Each must-link group (overlapping groups unioned) takes one label: the most
       common non-noise label among its members (ties: the larger cluster), else a
       fresh label.
    2. Two groups that a cannot-link pair separates but that ended on one label are
       split: the smaller group gets a fresh label.
    3. Any other cannot-link pair still sharing a label loses one member to noise:
       a must-linked member stays, else the one farther from the cluster centre leaves.
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    if not constraints:
        return labels
    n = len(labels)
    groups = union_groups(constraints.must_link, n)
    fresh = int(labels.max(initial=-1)) + 1
    group_of = np.full(n, -1)
    sizes = np.bincount(labels[labels >= 0], minlength=fresh) if fresh else np.zeros(0, int)
    for gi, g in enumerate(groups):
        group_of[g] = gi
        current = labels[g]
        current = current[current >= 0]
        if len(current):
            vals, counts = np.unique(current, return_counts=True)
            best = max(zip(counts, sizes[vals], -vals))  # most members, then larger cluster, then lower id
            labels[g] = -best[2]
        else:
            labels[g] = fresh
            fresh += 1

    pairs = [(a, b) for a, b in constraints.cannot_link if a < n and b < n]
    # 2. groups forced onto one label by step 1 but cannot-linked: split off the smaller group.
    for a, b in pairs:
        ga, gb = group_of[a], group_of[b]
        if ga >= 0 and gb >= 0 and ga != gb and labels[a] == labels[b] >= 0:
            small = groups[ga] if len(groups[ga]) < len(groups[gb]) else groups[gb]
            labels[small] = fresh
            fresh += 1
    # 3. remaining violations: one member of the pair becomes noise.
    sims = _centre_sims(np.asarray(Xn, dtype=np.float64), labels)
    for a, b in pairs:
        if labels[a] < 0 or labels[a] != labels[b]:
            continue
        if group_of[a] >= 0 and group_of[b] >= 0:
            continue  # both in one must-link group: contradictory input, the must-link wins
        if group_of[a] >= 0:
            loser = b
        elif group_of[b] >= 0:
            loser = a
        else:
            loser = a if sims[a] < sims[b] else b
        labels[loser] = -1
    return labels


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
