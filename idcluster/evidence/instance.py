"""The whole-instance stream: images without a usable face join identities by how the whole image looks.

After the face stream has clustered the usable faces (pipeline.stages), every image
without a usable face gets, in order:

1. `seed`: the identity of the seed name the user gave it (seeds=...), where that name
   has a face identity; a name without one becomes an identity of its own below;
2. `track`: the identity most of its video track's placed images hold
   (constraints.track_pattern); the rest of a track moves as one unit below;
3. `appearance`: the identity that whole-instance evidence puts it in
   (clustering.two_stream): average linkage over units (face identities, faces that
   joined none, seeded names, tracks, single images) by the mean instance distance of
   their images, each kind of pair against its own threshold; two units that both hold
   usable faces never merge (their faces decided). A cluster holding a face identity
   joins it; one without becomes a new identity when it has `min_cluster_size` images
   (a seeded name's, at any size);
4. else noise (reason kept: no_face, face_too_small, blurry, face_out_of_domain).

A usable face is one the face embedder can speak for: detected, large and sharp
enough, and, with this stream on, in the embedder's domain (`face_domain`,
clustering.two_stream.face_in_domain: drawn faces under a human-face model are not).

The instance vectors (the `instance=` model, conf/instance/) are a per-image stage cached
by content (evidence/instance_vectors.py), computed only where they can decide
something: the images without a usable face, the faces that joined no identity, and up
to `representatives` members of each face identity (the most central by their faces),
so a folder where every image has a clear face computes none. Joins into a face
identity need a distance under the `impostor_quantile` of how close the run's face
identities come to each other in the instance space (with fewer than
`min_face_identities` there is nothing to calibrate on: face identities then take no
joins, seeded ones still do). Images of one source frame (constraints.frame_pattern)
never share an identity. Every record ends with `evidence` and `evidence_score`
(similarity to its cluster's centre in the instance space), which
identity_clustering.json reports.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from itertools import combinations

import numpy as np

from .. import records as R
from ..cache.store import StageCache
from ..clustering.base import centres, relabel_by_size, similarity_to_centre, unit_rows
from ..clustering.constraints import Constraints
from ..clustering.two_stream import (PairThresholds, cluster_units, face_in_domain, neighbour_average,
                                     unit_distances, unit_sums)
from ..errors import ConfigError
from .instance_vectors import instance_vectors
from .links import ImageLinks

log = logging.getLogger(__name__)

# Reasons of images without a usable face (their identity can come from the instance stream).
FACELESS = frozenset({R.NO_FACE, R.FACE_TOO_SMALL, R.BLURRY, R.FACE_OUT_OF_DOMAIN})


class InstanceStream:
    """The whole-instance stage; Hydra builds it from conf/appearance/<option>.yaml (`appearance.*` keys).

    distance_threshold / grey_distance_threshold: the instance model's calibrated same-identity
    cosine distances in its run space (conf/instance/<option>.yaml, by interpolation; None: the
    model's own, e.g. CCIP's from its metrics.json and comparator). face_domain: the face
    embedder's `domain_band` ([same, different] cosine distances of human faces; None: every
    face counts), `max_share`, `min_faces` (clustering.two_stream.face_in_domain).
    """

    def __init__(self, enabled: bool = True, distance_threshold: float | None = None,
                 grey_distance_threshold: float | None = None, min_cluster_size: int = 2,
                 impostor_quantile: float = 0.05, min_face_identities: int = 2, representatives: int = 2,
                 face_domain: dict | None = None, exact_max_units: int = 20_000, knn: int = 30):
        if not 0.0 <= float(impostor_quantile) <= 1.0:
            raise ConfigError(f"appearance.impostor_quantile must be in [0, 1], got {impostor_quantile}")
        if int(representatives) < 1:
            raise ConfigError(f"appearance.representatives must be at least 1, got {representatives}")
        domain = dict(face_domain or {})
        unknown = set(domain) - {"band", "max_share", "min_faces"}
        if unknown:
            raise ConfigError(f"appearance.face_domain: unknown keys {', '.join(sorted(unknown))} (band, max_share, min_faces)")
        band = domain.get("band")
        if band is not None and (len(band) != 2 or not 0 <= float(band[0]) < float(band[1])):
            raise ConfigError(f"appearance.face_domain.band must be [low, high] cosine distances, got {band}")
        self.enabled = bool(enabled)
        self.distance_threshold = None if distance_threshold is None else float(distance_threshold)
        self.grey_distance_threshold = None if grey_distance_threshold is None else float(grey_distance_threshold)
        self.min_cluster_size = int(min_cluster_size)
        self.impostor_quantile, self.min_face_identities = float(impostor_quantile), int(min_face_identities)
        self.representatives = int(representatives)
        self.face_band = None if band is None else (float(band[0]), float(band[1]))
        self.face_max_share = float(domain.get("max_share", 0.35))
        self.face_min_faces = int(domain.get("min_faces", 10))
        self.exact_max_units, self.knn = int(exact_max_units), int(knn)
        self.thresholds_: PairThresholds | None = None

    # ---------------------------------------------------------------- which faces are evidence

    def faces_out_of_domain(self, X: np.ndarray) -> np.ndarray:
        """Mask of face vectors (unit rows) the face embedder cannot speak for in this run (only
        with this stream on: off, every face counts, as before it existed)."""
        if not self.enabled or not len(X):
            return np.zeros(len(X), dtype=bool)
        return ~face_in_domain(X, self.face_band, self.face_max_share, self.face_min_faces)

    # ---------------------------------------------------------------- placing the images

    def assign(self, records, links: ImageLinks, cache: StageCache, model=None, face_vectors: np.ndarray | None = None,
               progress: bool = True, cached_only: bool = False, computed: Counter | None = None) -> bool:
        """Label the records without a usable face in place (module docstring); relabels by size.
        Returns whether instance vectors were used (the report names the model then)."""
        for rec in records:
            if rec.label >= 0 and rec.evidence is None:
                rec.evidence, rec.evidence_score = "face", round(float(rec.probability), 4)
        for i in links.names:  # a named seed is placed by its name, whatever else agreed
            if records[i].label >= 0:
                records[i].evidence, records[i].evidence_score = "seed", 1.0
        needy = [i for i, r in enumerate(records) if r.label < 0 and _without_usable_face(r)]
        used = False
        if needy and (self.enabled or links.names or links.tracks):
            place = _Placement(records, links)
            by_name = place.seeds(needy)
            place.tracks(needy)
            if self.enabled and model is not None:
                used = self._instances(place, needy, by_name, model, face_vectors, cache, progress, cached_only, computed)
            if not used:  # no instance evidence: a name without a face identity is an identity of its own
                for name, members in sorted(by_name.items()):
                    label = place.new_label()
                    for i in members:
                        place.give(i, label, "seed", 1.0)
        self._finish(records)
        return used

    def _instances(self, place: "_Placement", needy, by_name, model, face_vectors, cache, progress, cached_only,
                   computed) -> bool:
        records, links = place.records, place.links
        face_noise = [i for i, r in enumerate(records) if r.label < 0 and r.embedding_row is not None]
        reps = self._representatives(records, face_vectors)
        want = sorted(set(needy) | set(face_noise) | {i for m in reps.values() for i in m})
        V = instance_vectors(model, records, want, cache, progress, cached_only, computed)
        if not any(i in V for i in needy):
            return False
        rows = {i: n for n, i in enumerate(sorted(V))}
        # The space is the one of the images to place (a model that centres on its run centres on them).
        placing = np.isin(np.array(sorted(V)), needy)
        Z = unit_rows(model.run_space(np.stack([V[i] for i in sorted(V)]), placing))
        # Images without a usable face pull together with their nearest such images (never towards the
        # faces: a lone image averaged with its nearest face would look like that person).
        free = np.array([rows[i] for i in needy if i in rows], dtype=np.int64)
        Z[free] = neighbour_average(Z[free], getattr(model, "neighbours", 1))
        grey_rows = model.grey(np.stack([V[i] for i in sorted(V)])) if hasattr(model, "grey") else np.zeros(len(V), bool)

        units = _Units(records, links, rows)
        for label, members in sorted(reps.items()):  # face identities: representatives + images placed there by seed/track
            placed = [i for i in needy if records[i].label == label]
            units.add([i for i in members if i in rows] + [i for i in placed if i in rows], face=True, label=label)
        for i in face_noise:
            if i in rows:
                units.add([i], face=True)
        for name, members in sorted(by_name.items()):
            units.add([i for i in members if i in rows], name=name)
        for unit in place.free_units([i for i in needy if records[i].label < 0 and links.names.get(i) not in by_name]):
            units.add([i for i in unit if i in rows])

        threshold = self.distance_threshold if self.distance_threshold is not None else getattr(model, "distance_threshold", None)
        if threshold is None:
            raise ConfigError("appearance: this instance model has no calibrated distance_threshold: set instance.distance_threshold")
        grey = np.array([bool(grey_rows[[rows[i] for i in m]].all()) for m in units.members])
        S, sizes = unit_sums(Z, units.row_lists())
        thresholds = PairThresholds(float(threshold), self.grey_distance_threshold,
                                    self._face_bar(S, sizes, units, float(threshold)))
        self.thresholds_ = thresholds
        groups = cluster_units(Z, units.row_lists(), units.face_mask(), grey, thresholds, units.cannot(),
                               units.open_face_mask(), self.exact_max_units, self.knn)
        self._place_groups(place, units, groups, Z, rows)
        return True

    def _representatives(self, records, face_vectors) -> dict[int, list[int]]:
        """Face label -> up to `representatives` member records, the most central by their faces."""
        by_label: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            if r.label >= 0 and r.embedding_row is not None:
                by_label[r.label].append(i)
        if face_vectors is None or not len(face_vectors):
            return {label: members[:self.representatives] for label, members in by_label.items()}
        out = {}
        for label, members in by_label.items():
            X = unit_rows(face_vectors[[records[i].embedding_row for i in members]])
            sims = similarity_to_centre(X, np.zeros(len(members), dtype=np.int64))
            order = np.argsort(-sims, kind="stable")[:self.representatives]
            out[label] = [members[k] for k in order]
        return out

    def _face_bar(self, S, sizes, units: "_Units", threshold: float) -> float | None:
        """The bar for joins into a face unit: the `impostor_quantile` of each face identity's mean
        instance distance to its nearest other face unit (where people look alike, as photos of
        different people in similar settings do, instance evidence must beat that); None (no
        joins) with fewer than `min_face_identities` face identities."""
        identities = np.flatnonzero(units.face_mask() & (np.array(units.labels) >= 0))
        if len(identities) < max(self.min_face_identities, 2):
            return None
        faces = np.flatnonzero(units.face_mask())
        D = unit_distances(S[faces], sizes[faces])
        np.fill_diagonal(D, np.inf)
        nearest = D[np.searchsorted(faces, identities)].min(axis=1)
        return float(min(threshold, np.quantile(nearest, self.impostor_quantile)))

    def _place_groups(self, place: "_Placement", units: "_Units", groups: np.ndarray, Z: np.ndarray, rows) -> None:
        records = place.records
        unit_of_row = np.full(len(Z), -1)
        for u, m in enumerate(units.members):
            unit_of_row[[rows[i] for i in m]] = u
        in_unit = unit_of_row >= 0
        row_group = np.where(in_unit, groups[np.maximum(unit_of_row, 0)], -1)
        ids, C = centres(Z, row_group)
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            label = next((units.labels[u] for u in members if units.labels[u] >= 0), None)
            name = next((units.names[u] for u in members if units.names[u] is not None), None)
            images = [i for u in members for i in units.members[u]]
            if label is None:
                if name is None and len(images) < max(self.min_cluster_size, 1):
                    continue
                if name is None and len(members) == 1 and units.face[members[0]]:
                    continue  # a face that joined no identity, and nothing joined it: stays noise
                label = place.new_label()
            centre = C[np.searchsorted(ids, g)]
            for u in members:
                for i in units.members[u]:
                    rec = records[i]
                    if rec.label >= 0:
                        continue  # face identity members and images a seed or track already placed
                    score = float(Z[rows[i]] @ centre)
                    place.give(i, label, "seed" if place.links.names.get(i) is not None else "appearance", score)
                    if rec.reason == R.CLUSTER_NOISE:
                        rec.reason = rec.detail = None

    @staticmethod
    def _finish(records) -> None:
        """Identity numbers by size again (0 = largest; ties: the lower number, so face identities
        before instance ones) over face and instance labels together."""
        old = np.array([r.label for r in records], dtype=np.int64)
        new = relabel_by_size(old, ties="label")
        mapping = dict(zip(old[old >= 0].tolist(), new[old >= 0].tolist()))
        for r in records:
            r.label = mapping.get(r.label, -1)
            r.face_labels = {k: mapping.get(v, -1) for k, v in r.face_labels.items()}
            if r.label < 0:
                r.evidence, r.evidence_score = None, None


def _without_usable_face(rec) -> bool:
    """No face the face stream clustered: none found, too small, blurry, out of the embedder's
    domain, or no face embedded at all (a whole-instance model in the embedder slot)."""
    return rec.reason in FACELESS or (rec.reason is None and rec.embedding_row is None)


class _Placement:
    """Labels given so far, and the frames that already hold each label."""

    def __init__(self, records, links: ImageLinks):
        self.records, self.links = records, links
        self.frames_of: dict[str, set[int]] = defaultdict(set)
        for i, f in links.frames.items():
            if records[i].label >= 0:
                self.frames_of[f].add(records[i].label)

    def new_label(self) -> int:
        return max((r.label for r in self.records), default=-1) + 1

    def allowed(self, i: int, label: int) -> bool:
        f = self.links.frames.get(i)
        return f is None or label not in self.frames_of[f]

    def give(self, i: int, label: int, evidence: str, score: float) -> None:
        rec = self.records[i]
        rec.label, rec.probability = int(label), float(score)
        rec.evidence, rec.evidence_score = evidence, round(float(score), 4)
        if i in self.links.frames:
            self.frames_of[self.links.frames[i]].add(int(label))

    def seeds(self, needy) -> dict[str, list[int]]:
        """Seeded images whose name has a face identity join it; returns the other names' images."""
        label_of: dict[str, int] = {}
        for i, name in self.links.names.items():
            if self.records[i].label >= 0:
                label_of.setdefault(name, self.records[i].label)
        unplaced: dict[str, list[int]] = defaultdict(list)
        for i in needy:
            name = self.links.names.get(i)
            if name is None:
                continue
            if name in label_of:
                self.give(i, label_of[name], "seed", 1.0)
            else:
                unplaced[name].append(i)
        return dict(unplaced)

    def tracks(self, needy) -> None:
        """An image joins the identity most of its track's placed images hold."""
        members = defaultdict(list)
        for i, t in self.links.tracks.items():
            members[t].append(i)
        for i in needy:
            t = self.links.tracks.get(i)
            if t is None or self.records[i].label >= 0:
                continue
            held = Counter(self.records[j].label for j in members[t] if self.records[j].label >= 0)
            if held:
                label, n = held.most_common(1)[0]
                if self.allowed(i, label):
                    self.give(i, label, "track", n / sum(held.values()))

    def free_units(self, left) -> list[list[int]]:
        """The images left, one unit each, except that a track's images move as one unit."""
        by_track = defaultdict(list)
        units = []
        for i in left:
            t = self.links.tracks.get(i)
            if t is None:
                units.append([i])
            else:
                by_track[t].append(i)
        return units + list(by_track.values())


class _Units:
    """The units the instance stream clusters, with what each holds."""

    def __init__(self, records, links: ImageLinks, rows: dict[int, int]):
        self.records, self.links, self.rows = records, links, rows
        self.members: list[list[int]] = []
        self.face: list[bool] = []
        self.labels: list[int] = []
        self.names: list[str | None] = []

    def add(self, members: list[int], face: bool = False, label: int = -1, name: str | None = None) -> None:
        members = list(dict.fromkeys(members))
        if not members:
            return
        if name is None and label >= 0:  # a face identity holding a seed name is that name's
            name = next((self.links.names[i] for i in members if i in self.links.names), None)
        self.members.append(members)
        self.face.append(face)
        self.labels.append(label)
        self.names.append(name)

    def row_lists(self) -> list[np.ndarray]:
        return [np.array([self.rows[i] for i in m], dtype=np.int64) for m in self.members]

    def face_mask(self) -> np.ndarray:
        return np.array(self.face, dtype=bool)

    def open_face_mask(self) -> np.ndarray:
        """Face units with a seed name: the user vouched for them, they take joins at the colour threshold."""
        return self.face_mask() & np.array([n is not None for n in self.names], dtype=bool)

    def cannot(self) -> Constraints:
        """Two units holding images of one source frame; two units of different seed names; an
        image and a face identity already holding an image of its frame."""
        by_frame: dict[str, set[int]] = defaultdict(set)
        for u, m in enumerate(self.members):
            for i in m:
                if i in self.links.frames:
                    by_frame[self.links.frames[i]].add(u)
        pairs = {p for us in by_frame.values() for p in combinations(sorted(us), 2)}
        named = [u for u, n in enumerate(self.names) if n is not None]
        pairs |= {(a, b) for a, b in combinations(named, 2) if self.names[a] != self.names[b]}
        held: dict[int, set[str]] = defaultdict(set)  # frames each face identity holds, members outside its unit too
        for i, f in self.links.frames.items():
            if self.records[i].label >= 0:
                held[self.records[i].label].add(f)
        for u, label in enumerate(self.labels):
            if label >= 0:
                pairs |= {(min(u, v), max(u, v)) for f in held[label] for v in by_frame.get(f, ()) if v != u}
        return Constraints(cannot_link=tuple(sorted(pairs)))
