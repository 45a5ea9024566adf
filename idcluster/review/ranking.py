"""How central each face is in its identity, and which identities look alike (merge suggestions).

By the run's face vectors (export.face_vectors, written by `cluster`); without them members
are ordered by the clusterer's probability and there are no suggestions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..evidence import decisions as D
from ..export.face_vectors import load_face_vectors

log = logging.getLogger(__name__)


class Ranking:
    def __init__(self, report: dict, cache_dir: Path):
        key = (report.get("cache_keys") or {}).get("embeddings")
        vectors = load_face_vectors(cache_dir, key)
        if vectors is None:
            log.warning("face vectors of this run are not in the cache (%s): members are ordered by "
                        "clusterer probability and there are no merge suggestions", cache_dir)
        self.vectors: dict[str, np.ndarray] = vectors or {}
        self.probability: dict[str, float] = {}
        for img in report["images"]:
            if img.get("sha256") and img.get("face_index") is not None:
                self.probability[D.face_key(img["sha256"], img["face_index"])] = float(img.get("probability") or 0)
        # Centres closer than 1.5x the embedder's calibrated distance threshold are worth a look.
        t = ((report.get("config") or {}).get("embedder") or {}).get("distance_threshold") or 0.1
        self.floor = 1.0 - 1.5 * float(t)

    def centre(self, state: D.State, ident: int) -> np.ndarray | None:
        vs = [self.vectors[k] for k in state.members(ident) if k in self.vectors]
        if not vs:
            return None
        c = np.mean(vs, axis=0)
        return c / max(float(np.linalg.norm(c)), 1e-12)

    def confidence(self, state: D.State, ident: int) -> dict[str, float]:
        """Cosine similarity of each member to its identity's centre (clusterer probability without vectors)."""
        members = state.members(ident)
        c = self.centre(state, ident) if ident != D.NOISE else None
        if c is None:
            return {k: self.probability.get(k, 0.0) for k in members}
        return {k: float(self.vectors[k] @ c) if k in self.vectors else 0.0 for k in members}

    def ranked(self, state: D.State, ident: int) -> list[str]:
        """Members, most central first."""
        conf = self.confidence(state, ident)
        return sorted(conf, key=lambda k: (-conf[k], k))

    def suggestions(self, state: D.State, dismissed: list[tuple[list[str], list[str]]], limit: int = 20,
                    min_similarity: float | None = None) -> list[dict]:
        """Pairs of visible identities with the most similar centres; dismissed pairs and pairs of
        two reviewed identities (the user kept them apart: later runs cannot-link them) left out."""
        min_similarity = self.floor if min_similarity is None else min_similarity
        ident = lambda i: state.identities.get(i) or D.Identity(i)  # noqa: E731
        ids = sorted(i for i in state.live_ids() if not ident(i).hidden)
        centres = {i: c for i in ids if (c := self.centre(state, i)) is not None}
        ids = list(centres)
        if len(ids) < 2:
            return []
        C = np.stack([centres[i] for i in ids])
        sims = C @ C.T
        np.fill_diagonal(sims, -np.inf)
        out = []
        for flat in np.argsort(-sims, axis=None):
            a, b = divmod(int(flat), len(ids))
            if a >= b:
                continue
            if sims[a, b] < min_similarity or len(out) >= limit:
                break
            if ident(ids[a]).reviewed and ident(ids[b]).reviewed:
                continue
            A, B = set(state.members(ids[a])), set(state.members(ids[b]))
            if any((A & set(x) and B & set(y)) or (A & set(y) and B & set(x)) for x, y in dismissed):
                continue
            out.append({"a": ids[a], "b": ids[b], "similarity": round(float(sims[a, b]), 4)})
        return out
