"""Faces and whole instances in one clustering: each pair decided by the best evidence it has.

Faces cluster first, with the configured clusterer and the shared post-processing
(clustering.base), exactly as without this module. The whole-instance stream then
clusters *units* of images:

- a face identity (the instance vectors of some of its members),
- an image whose usable face joined no identity,
- a seeded name, a video track, or one image without a usable face.

Two units that both hold usable faces never merge here: face against face, their faces
already decided. Every other pair of units is decided by whole-instance evidence: the
mean instance distance over their images' pairs (what average linkage computes), each
kind of pair against its own calibrated threshold (`PairThresholds`: colour images,
grey images, joins into a face identity). Average linkage over the units
(clusterers.average_linkage) up to `exact_max_units`; above, a k-nearest-neighbour graph
over the units' mean vectors, clustered by Chinese Whispers (knn_graph, graph), so
memory stays O(units x k). Cannot-links between units (one source frame, two seed
names) hold in both.

`face_in_domain` is the other half of "usable face": a face embedder is only evidence
where its distances separate the run's faces (see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix

from .base import centres, keep_compatible, unit_rows
from .clusterers import average_linkage
from .constraints import Constraints, cannot_link_map

# A distance no average can bring under a threshold: units that must never share a cluster.
NEVER = 1e9
SHARE_SAMPLE = 2000  # faces each face is compared with in face_in_domain, at most


def face_in_domain(X: np.ndarray, band: tuple[float, float] | None, max_share: float, min_faces: int) -> np.ndarray:
    """Which face vectors (unit rows) the face embedder can speak for in this run.

    A face embedder calibrated on human faces puts two photos of one person closer than
    `band[0]` and two people farther than `band[1]` (dlib on LFW: 95% of same-person pairs
    under 0.071, 95% of different-person pairs over 0.105 cosine distance). Where most of a
    face's distances to the run's other faces fall inside that band, the embedder sees no
    identities there: drawn faces under a human-face model (anime dev: a face's median share
    0.55, 99% of faces over 0.3; LFW, ORL: at most 0.15 and 0.26). Such a face is not usable
    evidence; its image takes the whole-instance stream. The ambiguity must be collective: an
    ambiguous face whose in-band neighbours are mostly faces the embedder places clearly is a
    person who looks like those people (a small run of two look-alike people: one photo's
    share 0.47, its in-band neighbours all under the 0.35 bar), and it counts. Too few
    faces (< min_faces) to judge, or no band: every face counts.
    """
    n = len(X)
    if band is None or n < max(int(min_faces), 2):
        return np.ones(n, dtype=bool)
    lo, hi = float(band[0]), float(band[1])
    Xf = np.asarray(X, dtype=np.float32)
    # Each face against every other face, or against a fixed random sample of them on large runs
    # (a share: the sample estimates it, and the cost stays O(n x sample)).
    ref = np.arange(n) if n <= SHARE_SAMPLE else np.sort(np.random.default_rng(0).choice(n, SHARE_SAMPLE, replace=False))
    R = Xf[ref]
    step = max(1, 4_000_000 // len(ref))  # rows x sample distances per chunk (bounded memory at any size)

    def inside_band(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows x sample: which distances fall inside the band (the face itself left out), and
        whether each row is in the sample."""
        inside = ((D := 1.0 - Xf[rows] @ R.T) >= lo) & (D < hi)
        own = ref[np.searchsorted(ref, rows).clip(max=len(ref) - 1)] == rows
        inside[own, np.searchsorted(ref, rows[own])] = False
        return inside, own

    share = np.zeros(n)
    for a in range(0, n, step):
        rows = np.arange(a, min(a + step, n))
        inside, own = inside_band(rows)
        share[rows] = inside.sum(axis=1) / (len(ref) - own)
    over = share > float(max_share)
    out = np.zeros(n, dtype=bool)
    for a in range(0, n, step):  # collective: most of its in-band neighbours are ambiguous too
        rows = np.arange(a, min(a + step, n))
        rows = rows[over[rows]]
        if len(rows):
            inside, _ = inside_band(rows)
            out[rows] = (inside & over[ref]).sum(axis=1) > 0.5 * inside.sum(axis=1)
    return ~out


def neighbour_average(Z: np.ndarray, k: int) -> np.ndarray:
    """Each row replaced by the unit mean of itself and its k - 1 most similar rows (database-side
    augmentation, as instance retrieval uses it): weak features of one identity pull together,
    so average linkage cuts more cleanly (anime dev BCubed F1 with instance=fused: 0.71-0.76 over
    its best thresholds without, 0.76-0.80 with k=4; issue 17). k is capped at a tenth of the
    rows, so a small run is barely smoothed (under 20 rows: not at all). Neighbours come from
    knn_graph.nearest_neighbours (exact up to its exact_max_rows, O(n k) memory)."""
    from .knn_graph import nearest_neighbours

    Z = np.asarray(Z, dtype=np.float64)
    k = min(int(k), len(Z) // 10)
    if k < 2:
        return Z
    _, idx = nearest_neighbours(Z, k)
    idx = np.where(idx >= 0, idx, np.arange(len(Z))[:, None])  # fewer found than asked: the row itself
    return unit_rows(Z[idx].sum(axis=1))


@dataclass(frozen=True)
class PairThresholds:
    """Same-identity cosine distances in the instance space, by kind of pair.

    colour: any pair of units; grey: both units without colour (their descriptor sees
    texture alone); face: a pair joining a face unit (calibrated per run against how close
    the face identities come to each other; None: such joins are not allowed)."""

    colour: float
    grey: float | None = None
    face: float | None = None

    def matrix(self, grey: np.ndarray, face: np.ndarray, open_face: np.ndarray | None = None) -> np.ndarray:
        """Per pair of units, its threshold (0 where it may not join at all). `open_face`: face
        units that take joins at the colour threshold (a seeded name the user vouched for)."""
        n = len(grey)
        T = np.full((n, n), float(self.colour))
        if self.grey is not None:
            T[np.ix_(grey, grey)] = float(self.grey)
        guarded = face & ~(open_face if open_face is not None else np.zeros(n, bool))
        bar = 0.0 if self.face is None else float(self.face)
        T[guarded, :] = np.minimum(T[guarded, :], bar)
        T[:, guarded] = np.minimum(T[:, guarded], bar)
        return T

    def pair(self, gi: bool, gj: bool, fi: bool, fj: bool) -> float:
        """One pair's threshold (0: may not join), as `matrix` gives it."""
        t = float(self.grey) if (self.grey is not None and gi and gj) else float(self.colour)
        if fi or fj:
            return 0.0 if self.face is None else min(t, float(self.face))
        return t


def unit_sums(Z: np.ndarray, members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of each unit's rows of Z, how many rows it has)."""
    sizes = np.array([len(m) for m in members])
    rows = np.concatenate(members) if members else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(members)), sizes)
    M = coo_matrix((np.ones(len(rows)), (owner, rows)), shape=(len(members), len(Z))).tocsr()
    return np.asarray(M @ Z), sizes


def unit_distances(S: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Mean cosine distance over the pairs of rows of two units (unit rows summed in S)."""
    return 1.0 - (S @ S.T) / np.outer(sizes, sizes)


def cluster_units(Z: np.ndarray, members: list[np.ndarray], face: np.ndarray, grey: np.ndarray,
                  thresholds: PairThresholds, cannot: Constraints | None = None,
                  open_face: np.ndarray | None = None, exact_max_units: int = 20_000, k: int = 30) -> np.ndarray:
    """Cluster id of each unit (every unit has one; a unit alone is a cluster of its own).

    Z: the run's instance space (unit rows); members[u]: the rows of unit u; face[u]: it holds
    usable faces (two such units never share a cluster); grey[u]: its images have no colour;
    cannot: explicit cannot-links between units; open_face: face units that take joins at the
    colour threshold."""
    n = len(members)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    face, grey = np.asarray(face, bool), np.asarray(grey, bool)
    S, sizes = unit_sums(Z, members)
    if n <= exact_max_units:
        raw = _average_linkage(S, sizes, face, grey, thresholds, cannot, open_face)
    else:
        raw = _knn_graph(S, sizes, face, grey, thresholds, cannot, open_face, k)
    return _compatible(S, raw, face, cannot)


def _average_linkage(S, sizes, face, grey, thresholds, cannot, open_face) -> np.ndarray:
    T = thresholds.matrix(grey, face, open_face)
    # Each pair's distance on the scale of its own threshold: one cut at `colour` judges every pair.
    D = np.where(T > 0, unit_distances(S, sizes) * thresholds.colour / np.maximum(T, 1e-12), NEVER)
    D[np.ix_(face, face)] = NEVER
    if cannot and cannot.cannot_link:
        a, b = np.asarray(cannot.cannot_link, dtype=np.int64).T
        D[a, b] = D[b, a] = NEVER
    np.fill_diagonal(D, 0.0)
    return average_linkage(np.clip(D, 0.0, None), thresholds.colour)


def _knn_graph(S, sizes, face, grey, thresholds, cannot, open_face, k: int) -> np.ndarray:
    from .graph import chinese_whispers
    from .knn_graph import nearest_neighbours

    U = unit_rows(S)
    sims, idx = nearest_neighbours(U, int(k) + 1)
    rows = np.repeat(np.arange(len(U)), idx.shape[1])
    cols, w = idx.ravel(), sims.ravel().astype(np.float64)
    keep = (cols >= 0) & (cols != rows)
    rows, cols, w = rows[keep], cols[keep], w[keep]
    # The mean pairwise distance of two units (what average linkage would compare), per edge.
    d = 1.0 - np.einsum("ij,ij->i", S[rows], S[cols]) / (sizes[rows] * sizes[cols])
    opened = open_face if open_face is not None else np.zeros(len(U), bool)
    t = np.array([thresholds.pair(grey[i], grey[j], face[i] and not opened[i], face[j] and not opened[j])
                  for i, j in zip(rows, cols)])
    ok = (t > 0) & (d <= t) & ~(face[rows] & face[cols])
    if cannot and cannot.cannot_link:
        banned = {(min(a, b), max(a, b)) for a, b in cannot.cannot_link}
        ok &= np.array([(min(i, j), max(i, j)) not in banned for i, j in zip(rows, cols)], dtype=bool)
    g = coo_matrix((w[ok], (rows[ok], cols[ok])), shape=(len(U), len(U))).tocsr()
    return chinese_whispers(g.maximum(g.T).tocsr())


def _compatible(S: np.ndarray, raw: np.ndarray, face: np.ndarray, cannot: Constraints | None) -> np.ndarray:
    """Each cluster keeps its units greedily, most typical first (mean vector nearest the
    cluster's centre): at most one face unit, no explicit cannot-link inside; a unit that
    does not fit becomes a cluster of its own."""
    labels = np.asarray(raw, dtype=np.int64).copy()
    forbid = cannot_link_map(cannot)
    U = unit_rows(S)
    fresh = int(labels.max(initial=-1)) + 1
    for c, centre in zip(*centres(U, labels)):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        order = members[np.argsort(-(U[members] @ centre), kind="stable")]
        kept = keep_compatible(order, forbid, exclusive=face)
        for u in np.setdiff1d(members, kept):
            labels[u], fresh = fresh, fresh + 1
    return labels
