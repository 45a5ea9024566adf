"""Faceless instances join identities by appearance (after face-based clustering).

An image with no usable face (no face, face too small, blurry) is no longer
noise by default. In order, each such image gets:

1. `seed`: the identity of the seed name the user gave it (seeds=...);
2. `track`: the identity of labelled images of its video track
   (constraints.track_pattern); a track moves as one unit below;
3. `appearance` (vote): the face-based (or seeded) identity its appearance
   neighbours vote for: the k most similar labelled images whose cosine
   similarity reaches `min_similarity` vote with their similarity, and the
   winner needs `min_share` of the votes (`method=propagate` uses
   scikit-learn's LabelSpreading over the same kNN graph instead);
4. `appearance` (faceless cluster): average-linkage clustering among the
   faceless images left (cosine distance `cluster_threshold`, at least
   `min_cluster_size` images) into identities of their own;
5. else noise (reason kept: no_face, face_too_small, blurry).

Images of one source frame (constraints.frame_pattern) never join an identity
another image of that frame holds. The appearance vector of each image is a
per-image stage cached by image content (embedders/appearance.describe on the
file, alpha channel as the mask). Every record ends with `evidence` and
`evidence_score`, which identity_clustering.json reports.

The clustering itself is idcluster.clustering's: the kNN vote (clustering.vote),
average linkage with cannot-links as Constraints (clustering.clusterers.
average_linkage, then clustering.base.keep_compatible), centres and the final
relabel by size (clustering.base). This module decides what votes and when.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations

import numpy as np

from .. import records as R
from ..cache.store import StageCache, cache_key
from ..clustering.base import centres, keep_compatible, relabel_by_size
from ..clustering.clusterers import average_linkage
from ..clustering.constraints import Constraints, cannot_link_map
from ..clustering.vote import neighbour_vote
from ..embedders.appearance import AppearanceEmbedder, load_instance
from ..errors import CacheMiss, ConfigError
from ..inputs.images import ImageDecodeError
from ..progress import stage_bar
from .links import ImageLinks

log = logging.getLogger(__name__)

APPEARANCE = "appearance-v1"  # cache namespace of the per-image vectors
FACELESS = frozenset({R.NO_FACE, R.FACE_TOO_SMALL, R.BLURRY})
METHODS = ("vote", "propagate")


class AppearanceAssigner:
    """The faceless-assignment stage; Hydra builds it from conf/appearance/<option>.yaml (`appearance.*` keys)."""

    def __init__(self, enabled: bool = True, method: str = "vote", k: int = 5, min_similarity: float = 0.85,
                 min_share: float = 0.6, cluster_faceless: bool = True, cluster_threshold: float = 0.2,
                 min_cluster_size: int = 2, calibrate_quantile: float | None = 0.99, grey_threshold: float = 0.12,
                 descriptor: dict | None = None):
        if method not in METHODS:
            raise ConfigError(f"appearance.method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 0.0 <= float(min_share) <= 1.0:
            raise ConfigError(f"appearance.min_share must be in [0, 1], got {min_share}")
        self.enabled, self.method, self.k = bool(enabled), method, int(k)
        self.min_similarity, self.min_share = float(min_similarity), float(min_share)
        self.cluster_faceless, self.cluster_threshold = bool(cluster_faceless), float(cluster_threshold)
        self.min_cluster_size = int(min_cluster_size)
        self.calibrate_quantile = None if calibrate_quantile is None else float(calibrate_quantile)
        self.grey_threshold = float(grey_threshold)
        try:
            self.descriptor = AppearanceEmbedder(**(descriptor or {}))
        except TypeError as e:
            raise ConfigError(f"appearance.descriptor: {e}") from None

    # ---------------------------------------------------------------- per-image vectors

    def vectors(self, records, indices, cache: StageCache, progress: bool = True, cached_only: bool = False,
                computed: Counter | None = None) -> dict[int, np.ndarray]:
        """Appearance vector per record index (cached by image content + descriptor params)."""
        d = self.descriptor
        out: dict[int, np.ndarray] = {}
        todo = []
        for i in indices:
            key = cache_key("appearance", records[i].sha256, d.model_id, d.params)
            hit = cache.get_arrays(APPEARANCE, key)
            if hit is not None:
                out[i] = hit["vector"]
            else:
                todo.append((i, key))
        if todo and cached_only:
            raise CacheMiss(f"no cached appearance vectors for {len(todo)} image(s) in {cache.root}: "
                            "run `idcluster cluster` with the same overrides first")
        def describe(i: int) -> np.ndarray | None:
            try:
                rgb, mask = load_instance(records[i].path)
            except ImageDecodeError:  # changed since the scan: stays out of the stage
                return None
            return d.describe(rgb, mask)

        # Decoding (Pillow) and the histogram/HOG kernels (OpenCV, NumPy, scikit-image) release the
        # GIL for most of their time, so one thread per core runs them in parallel; results are
        # cached here, in order, as each finishes.
        with stage_bar("appearance", len(todo), progress) as bar, \
                ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1) or 1) as pool:
            for (i, key), vector in zip(todo, pool.map(describe, [i for i, _ in todo])):
                if vector is not None:
                    out[i] = vector
                    cache.put_arrays(APPEARANCE, key, vector=vector)
                    if computed is not None:
                        computed["appearance"] += 1
                bar.advance()
        return out

    # ---------------------------------------------------------------- assignment

    def assign(self, records, links: ImageLinks, cache: StageCache, progress: bool = True,
               cached_only: bool = False, computed: Counter | None = None) -> None:
        """Label the faceless records in place (see the module docstring); relabels by size."""
        for rec in records:
            if rec.label >= 0 and rec.evidence is None:
                rec.evidence, rec.evidence_score = "face", round(float(rec.probability), 4)
        for i in links.names:  # a named seed is placed by its name, whatever else agreed
            if records[i].label >= 0:
                records[i].evidence, records[i].evidence_score = "seed", 1.0
        faceless = [i for i, r in enumerate(records) if r.reason in FACELESS and r.label < 0]
        if not self.enabled and not links.names and not links.tracks:
            return
        next_label = max((r.label for r in records), default=-1) + 1
        frames_of = defaultdict(set)  # frame -> labels held there
        for i, f in links.frames.items():
            if records[i].label >= 0:
                frames_of[f].add(records[i].label)

        def allowed(i: int, label: int) -> bool:
            f = links.frames.get(i)
            return f is None or label not in frames_of[f]

        def give(i: int, label: int, evidence: str, score: float) -> None:
            rec = records[i]
            rec.label, rec.probability = int(label), float(score)
            rec.evidence, rec.evidence_score = evidence, round(float(score), 4)
            if i in links.frames:
                frames_of[links.frames[i]].add(int(label))

        V: dict[int, np.ndarray] = {}
        min_sim = self.min_similarity
        if self.enabled and faceless:  # nothing to place: no vectors needed
            refs = [i for i, r in enumerate(records) if r.label >= 0]
            V = self.vectors(records, sorted(set(faceless) | set(refs)), cache, progress, cached_only, computed)
            min_sim = self.calibrated_similarity(records, V, [i for i in refs if i in V])
        # Uncalibratable (fewer than 2 face identities, e.g. one face cluster of drawn faces that a
        # human-face model lumped together): face identities take no appearance votes.
        face_votes = min_sim is not None
        min_sim = self.min_similarity if min_sim is None else min_sim
        tight = min(self.cluster_threshold, 1.0 - min_sim) if min_sim > self.min_similarity else self.cluster_threshold
        self.thresholds_ = {"min_similarity": min_sim, "cluster_threshold": tight, "face_votes": face_votes}

        def refs_now() -> list[int]:
            return [i for i, r in enumerate(records) if r.label >= 0 and i in V
                    and (face_votes or r.evidence != "face")]

        # 1. seeds: a name's identity is where its labelled (face) seeds are; else where the name's
        #    faceless seeds vote (an identity no other name holds); else a new one.
        by_name: dict[str, int] = {}
        for i, name in links.names.items():
            if records[i].label >= 0:
                by_name.setdefault(name, records[i].label)
        unplaced = defaultdict(list)
        for i in faceless:
            if i in links.names and links.names[i] not in by_name:
                unplaced[links.names[i]].append(i)
        for name, unit in sorted(unplaced.items()):
            refs = refs_now()
            found = None
            if refs and all(i in V for i in unit):
                found = self._best(self._unit_vectors(V, [unit])[0], np.stack([V[i] for i in refs]),
                                   np.array([records[i].label for i in refs]), min_sim)
            if found is not None and found[0] not in by_name.values():
                by_name[name] = found[0]
            else:
                by_name[name], next_label = next_label, next_label + 1
        for i in faceless:
            if i in links.names:
                give(i, by_name[links.names[i]], "seed", 1.0)
        # 2. tracks: a faceless image joins the identity most of its track's labelled images hold.
        track_members = defaultdict(list)
        for i, t in links.tracks.items():
            track_members[t].append(i)
        for i in faceless:
            t = links.tracks.get(i)
            if t is None or records[i].label >= 0:
                continue
            held = Counter(records[j].label for j in track_members[t] if records[j].label >= 0)
            if held:
                label, n = held.most_common(1)[0]
                if allowed(i, label):
                    give(i, label, "track", n / sum(held.values()))
        if not self.enabled:
            return self._finish(records)

        # 3. kNN vote over the labelled images; 4. clusters among the faceless left.
        left = [i for i in faceless if records[i].label < 0 and i in V]
        units = self._units(left, links)  # a track of faceless images is one unit (mean vector)
        refs = refs_now()
        if units and refs:
            self._vote(records, V, units, refs, allowed, give, min_sim)
        units = [u for u in units if records[u[0]].label < 0]
        if self.cluster_faceless and units:
            next_label = max((r.label for r in records), default=-1) + 1
            anchors = [(i, records[i].label) for i in links.names if records[i].label >= 0 and i in V]
            self._cluster(records, V, units, links, next_label, give, tight, anchors, allowed)
        return self._finish(records)

    def calibrated_similarity(self, records, V, refs) -> float | None:
        """min_similarity, raised to the `calibrate_quantile` of the impostor similarity of this very
        run: for each image that face evidence placed, its highest appearance similarity to an image
        of another face identity. Where different people look alike (photos: similar backgrounds
        and clothes) appearance must clear that bar before it places anyone."""
        faced = [i for i in refs if records[i].evidence == "face"]
        y = np.array([records[i].label for i in faced])
        if self.calibrate_quantile is None or not faced:
            return self.min_similarity
        if len(faced) < 10 or len(set(y.tolist())) < 2:
            return None  # no impostors to calibrate on: appearance does not vote into face identities
        X = np.stack([V[i] for i in faced])
        S = X @ X.T
        S[y[:, None] == y[None, :]] = -np.inf
        impostor = S.max(axis=1)
        return max(self.min_similarity, float(np.quantile(impostor, self.calibrate_quantile)))

    def _grey(self, Q: np.ndarray) -> np.ndarray:
        return np.array([self.descriptor.grey_share(q) >= 0.95 for q in Q], bool)

    def _units(self, left: list[int], links: ImageLinks) -> list[list[int]]:
        by_track = defaultdict(list)
        units = []
        for i in left:
            t = links.tracks.get(i)
            if t is None:
                units.append([i])
            else:
                by_track[t].append(i)
        return units + list(by_track.values())

    @staticmethod
    def _unit_vectors(V, units) -> np.ndarray:
        """One vector per unit (a track of faceless images moves as one): the centre of its
        images' vectors, in their precision."""
        rows = [V[i] for u in units for i in u]
        which = np.repeat(np.arange(len(units)), [len(u) for u in units])
        return centres(np.stack(rows), which)[1].astype(rows[0].dtype)

    def _best(self, q, X, y, min_sim, probs=None, classes=None):
        """(identity, share, score) that the appearance neighbours of vector q (rows X with
        identities y) vote for, or None."""
        sims = X @ q
        bar = max(min_sim, 1.0 - self.grey_threshold) if self._grey(q[None])[0] else min_sim
        k = min(self.k, len(y))
        nn = np.argpartition(-sims, k - 1)[:k] if k < len(y) else np.arange(len(y))
        ok = nn[sims[nn] >= bar]
        if not len(ok):
            return None
        if probs is not None:  # method=propagate: LabelSpreading's choice, among the close neighbours only
            best = int(classes[int(np.argmax(probs))])
            share = float(np.max(probs))
            if best not in set(y[ok].tolist()):
                return None
            score = float(sims[ok][y[ok] == best].mean())
        else:  # the neighbours' similarity-weighted vote; score: the winner's voters' mean similarity
            votes = neighbour_vote(sims[nn][None], y[nn][None], bar)
            best, share, score = int(votes.label[0]), float(votes.share[0]), float(votes.mean[0])
        return (best, share, score) if share >= self.min_share else None

    def _vote(self, records, V, units, refs, allowed, give, min_sim: float) -> None:
        probs = classes = None
        X = np.stack([V[i] for i in refs])
        y = np.array([records[i].label for i in refs])
        Q = self._unit_vectors(V, units)
        if self.method == "propagate":
            probs, classes = self._propagate(X, y, Q)
        for row, unit in enumerate(units):
            found = self._best(Q[row], X, y, min_sim, None if probs is None else probs[row], classes)
            if found is not None and all(allowed(i, found[0]) for i in unit):
                for i in unit:
                    give(i, found[0], "appearance", found[2])

    def _propagate(self, X, y, Q):
        """LabelSpreading (kNN kernel) over labelled refs + the faceless queries."""
        from sklearn.semi_supervised import LabelSpreading

        classes, yi = np.unique(y, return_inverse=True)
        data = np.concatenate([X, Q])
        target = np.concatenate([yi, np.full(len(Q), -1)])
        k = max(1, min(self.k, len(data) - 1))
        model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=0.2, max_iter=100).fit(data, target)
        probs = model.label_distributions_[len(X):]
        return np.nan_to_num(probs), classes

    def _cluster(self, records, V, units, links: ImageLinks, next_label: int, give, threshold: float,
                 anchors: list[tuple[int, int]] = (), allowed=None) -> None:
        """Average-linkage clusters of the faceless units. Seeded images take part as anchors
        (cannot-linked across names): a cluster holding anchors joins their identity (each
        member that of its most similar anchor), one without becomes an identity of its own."""
        n_units = len(units)
        units = list(units) + [[i] for i, _ in anchors]
        anchor_label = np.array([-1] * n_units + [label for _, label in anchors])
        Q = self._unit_vectors(V, units)
        sizes = np.array([len(u) for u in units])
        cannot = self._cannot_links(units, links, anchor_label)
        D = np.clip(1.0 - Q @ Q.T, 0.0, 2.0)
        # Without colour (greyscale images) the descriptor is texture only and much weaker
        # (pair AUC 0.54 on simpsons14 vs 0.80 on colour anime): such pairs need grey_threshold.
        grey = self._grey(Q)
        if self.grey_threshold < threshold:
            either = grey[:, None] | grey[None, :]
            D = np.where(either, D * (threshold / max(self.grey_threshold, 1e-6)), D)
        np.fill_diagonal(D, 0.0)
        raw = average_linkage(D, threshold, cannot)  # cannot-linked units join last, and are split again below
        forbidden = cannot_link_map(cannot)
        for c, centre in zip(*centres(Q, raw)):
            members = np.flatnonzero(raw == c)
            held = members[anchor_label[members] >= 0]
            if len(held):
                for m in members[anchor_label[members] < 0]:
                    sims = Q[held] @ Q[m]
                    label = int(anchor_label[held[int(np.argmax(sims))]])
                    if allowed is None or all(allowed(i, label) for i in units[m]):
                        for i in units[m]:
                            give(i, label, "appearance", float(sims.max()))
                continue
            # Most typical first; a unit cannot-linked with one already kept (same frame) leaves.
            kept = keep_compatible(members[np.argsort(-(Q[members] @ centre), kind="stable")], forbidden)
            if sizes[kept].sum() < max(self.min_cluster_size, 1):
                continue
            for m in kept:
                for i in units[m]:
                    give(i, next_label, "appearance", float(Q[m] @ centre))
            next_label += 1

    @staticmethod
    def _cannot_links(units, links: ImageLinks, anchor_label: np.ndarray) -> Constraints:
        """Cannot-links between units: two units holding images of one source frame; two anchors
        (seeded images) of different names."""
        by_frame = defaultdict(set)
        for m, u in enumerate(units):
            for i in u:
                if i in links.frames:
                    by_frame[links.frames[i]].add(m)
        pairs = [p for members in by_frame.values() for p in combinations(sorted(members), 2)]
        named = np.flatnonzero(anchor_label >= 0)
        pairs += [(a, b) for a, b in combinations(named.tolist(), 2) if anchor_label[a] != anchor_label[b]]
        return Constraints(cannot_link=pairs)

    @staticmethod
    def _finish(records) -> None:
        """Identity numbers by size again (0 = largest; ties: the lower number, so face identities
        before appearance ones) over face and appearance labels together."""
        old = np.array([r.label for r in records], dtype=np.int64)
        new = relabel_by_size(old, ties="label")
        mapping = dict(zip(old[old >= 0].tolist(), new[old >= 0].tolist()))
        for r in records:
            r.label = mapping.get(r.label, -1)
            r.face_labels = {k: mapping.get(v, -1) for k, v in r.face_labels.items()}
            if r.label < 0:
                r.evidence, r.evidence_score = None, None
