"""Where each face stands in its identity, and which identities the clusterer itself would join.

Everything is on the clusterer's own scale: cosine distances in units of the
embedder's calibrated same-person threshold `t` (recorded in the JSON's config;
every threshold-based clusterer cuts at it), read from the run's face vectors
(export.face_vectors). With dlib vectors the centres of any two people are ~0.93
similar, so centre similarity alone separates nothing; distances between faces,
against `t`, do.

- Representatives (overview cards): the members most similar to the identity's
  centre (clustering.centres.similarity_to_centre, one pass over every face).
- Member distance (identity page, "doubtful first"): a face's mean distance to the
  identity's core, / t. The core is the largest group left when the identity's
  members are clustered again at t by average linkage (the default clusterer's
  criterion), so in an identity that holds two people the faces of the second one
  (on average farther than t from the first) come first and are flagged (> 1).
- Merge suggestions: pairs of identities whose faces are on average closer than t,
  i.e. the pairs average linkage at the calibrated threshold would join (the mean
  distance over all face pairs, from the centres in O(identities^2 d)), nearest
  first, each with member-level evidence: the share of face pairs within t and how
  many faces of each side have a match within t. `scripts/bench_suggestions.py`
  measures them on LFW and ORL.

Without the run's vectors members keep the clusterer's probability order and there
are no suggestions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..clustering.centres import centres, similarity_to_centre
from ..evidence import decisions as D
from ..export.face_vectors import load_face_vectors

log = logging.getLogger(__name__)

MAX_RATIO = 1.0  # suggest pairs whose faces are on average closer than the threshold
CORE_SAMPLE = 1000  # members clustered to find an identity's core (evenly spaced); all are scored against it
EVIDENCE_SAMPLE = 2000  # faces per side compared pairwise for a suggestion's evidence


def recorded_threshold(report: dict) -> float | None:
    """The embedder's calibrated distance threshold the run recorded (else the clusterer's own)."""
    config = report.get("config") or {}
    for group, key in (("embedder", "distance_threshold"), ("clusterer", "distance_threshold"), ("clusterer", "eps")):
        value = (config.get(group) or {}).get(key)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return None


class Ranking:
    def __init__(self, report: dict, cache_dir: Path):
        key = (report.get("cache_keys") or {}).get("embeddings")
        vectors = load_face_vectors(cache_dir, key)
        if vectors is None:
            log.warning("face vectors of this run are not in the cache (%s): members are ordered by "
                        "clusterer probability and there are no merge suggestions", cache_dir)
        vectors = vectors or {}
        self.keys = list(vectors)
        self.row = {k: i for i, k in enumerate(self.keys)}
        self.X = np.stack(list(vectors.values())).astype(np.float64) if vectors else np.zeros((0, 1))
        self.threshold = recorded_threshold(report)
        self.probability: dict[str, float] = {}
        for img in report["images"]:
            if img.get("sha256") and img.get("face_index") is not None:
                self.probability[D.face_key(img["sha256"], img["face_index"])] = float(img.get("probability") or 0)
        self._state = None  # the state the per-face arrays below describe
        self._members: dict[int, tuple[tuple, dict]] = {}

    # ------------------------------------------------------------ per state: every face at once

    def _view(self, state: D.State) -> None:
        if self._state is state:
            return
        self.labels = np.fromiter((state.assign.get(k, D.NOISE) for k in self.keys), np.int64, len(self.keys))
        self.sim = similarity_to_centre(self.X, self.labels) if len(self.keys) else np.zeros(0)
        self.ids, self.C = centres(self.X, self.labels) if len(self.keys) else (np.zeros(0, np.int64), None)
        # |mean of an identity's unit vectors| = its members' mean similarity to its centre
        inside = self.labels >= 0
        idx = np.searchsorted(self.ids, self.labels[inside])
        total = np.bincount(idx, weights=self.sim[inside], minlength=len(self.ids))
        self.spread = total / np.maximum(np.bincount(idx, minlength=len(self.ids)), 1)
        self._state = state

    def centre(self, state: D.State, ident: int) -> np.ndarray | None:
        self._view(state)
        at = np.searchsorted(self.ids, ident)
        return self.C[at] if at < len(self.ids) and self.ids[at] == ident else None

    def ranked(self, state: D.State, ident: int) -> list[str]:
        """Members, most central first (similarity to the centre; faces without a vector last, by probability)."""
        self._view(state)
        members = state.members(ident)
        sim = {k: float(self.sim[self.row[k]]) for k in members if k in self.row}
        return sorted(members, key=lambda k: (k not in sim, -sim.get(k, self.probability.get(k, 0.0)), k))

    # ------------------------------------------------------------ one identity's members

    def member_distances(self, state: D.State, ident: int) -> dict[str, float | None]:
        """Each member's mean cosine distance to the identity's core, / threshold (over 1: farther
        than the clusterer joins). Noise, or no vectors/threshold: 1 - clusterer probability, None
        for noise. Cached until the identity's members change."""
        members = state.members(ident)
        hit = self._members.get(ident)
        if hit is not None and hit[0] == tuple(members):
            return hit[1]
        out: dict[str, float | None]
        if ident == D.NOISE:
            out = {k: None for k in members}
        elif self.threshold is None or not any(k in self.row for k in members):
            out = {k: 1.0 - self.probability.get(k, 0.0) for k in members}
        else:
            out = self._core_distances(members)
        self._members[ident] = (tuple(members), out)
        return out

    def _core_distances(self, members: list[str]) -> dict[str, float | None]:
        # imported here: scikit-learn is not needed (nor loaded) for the page's first view
        from ..clustering.clusterers import average_linkage

        t = self.threshold
        have = [k for k in members if k in self.row]
        X = self.X[[self.row[k] for k in have]].astype(np.float64)
        pick = np.unique(np.linspace(0, len(have) - 1, min(len(have), CORE_SAMPLE)).astype(np.int64))
        S = X[pick] @ X[pick].T
        groups = average_linkage(np.clip(1.0 - S, 0.0, 2.0), t)
        core = pick[groups == np.bincount(groups).argmax()]
        dist = np.clip(1.0 - X @ X[core].T, 0.0, 2.0)
        in_core = np.isin(np.arange(len(have)), core)
        others = len(core) - in_core  # a core face is not compared with itself (its distance 0 is in the sum)
        mean = np.divide(dist.sum(axis=1), others, out=np.zeros(len(have)), where=others > 0)
        out: dict[str, float | None] = {k: None for k in members}  # faces without a vector: unknown
        out.update({k: float(v / t) for k, v in zip(have, mean)})
        return out

    # ------------------------------------------------------------ merge suggestions

    def suggestions(self, state: D.State, dismissed: list[tuple[list[str], list[str]]], limit: int = 20,
                    max_ratio: float = MAX_RATIO) -> list[dict]:
        """Pairs of visible identities whose faces are on average closer than max_ratio x threshold,
        nearest first, with their evidence; dismissed pairs and pairs of two reviewed identities (the
        user kept them apart: later runs cannot-link them) left out."""
        if self.threshold is None or not len(self.keys):
            return []
        self._view(state)
        t = self.threshold
        ident = lambda i: state.identities.get(i) or D.Identity(i)  # noqa: E731
        visible = np.array([j for j, i in enumerate(self.ids) if not ident(int(i)).hidden], dtype=np.int64)
        if len(visible) < 2:
            return []
        C, m = self.C[visible], self.spread[visible]
        pairs: list[tuple[float, int, int]] = []
        for lo in range(0, len(visible), 1024):  # blocks: bounded memory at any number of identities
            mean_sim = (C[lo:lo + 1024] @ C.T) * m[lo:lo + 1024, None] * m[None, :]
            ratio = (1.0 - mean_sim) / t
            a, b = np.nonzero(ratio <= max_ratio)
            a = a + lo
            keep = a < b
            pairs += zip(ratio[a[keep] - lo, b[keep]].tolist(), a[keep].tolist(), b[keep].tolist())
        out = []
        for ratio, a, b in sorted(pairs):
            ia, ib = int(self.ids[visible[a]]), int(self.ids[visible[b]])
            if ident(ia).reviewed and ident(ib).reviewed:
                continue
            A, B = set(state.members(ia)), set(state.members(ib))
            if any((A & set(x) and B & set(y)) or (A & set(y) and B & set(x)) for x, y in dismissed):
                continue
            out.append({"a": ia, "b": ib, "distance": round(ratio, 3), **self._evidence(ia, ib)})
            if len(out) >= limit:
                break
        return out

    def _evidence(self, a: int, b: int) -> dict:
        """Member-level evidence for joining a and b: the share of their face pairs within the
        threshold, and the share of each side's faces with a face of the other side within it."""
        rows_a, rows_b = (np.flatnonzero(self.labels == i) for i in (a, b))
        rows_a, rows_b = (r[np.linspace(0, len(r) - 1, min(len(r), EVIDENCE_SAMPLE)).astype(np.int64)]
                          for r in (rows_a, rows_b))
        near = (self.X[rows_a].astype(np.float64) @ self.X[rows_b].T.astype(np.float64)) >= 1.0 - self.threshold
        return {"pairs_within": round(float(near.mean()), 3), "a_matched": round(float(near.any(axis=1).mean()), 3),
                "b_matched": round(float(near.any(axis=0).mean()), 3)}
