"""Apply review actions to the journal, the identity folders and identity_clustering.json.

Order of an action: validate -> append to the journal (fsync: the commit point)
-> replay -> move/copy files inside the output folder -> write the JSON
atomically (recording the journal length it reflects). Opening a store always
reconciles the folders and the JSON with the journal, so a crash or kill -9
anywhere in that sequence leaves a consistent state on restart. Files are only
ever renamed, copied or removed inside the output folder: inputs are never touched.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from .. import records as R
from ..cache.store import cache_key, default_cache_dir
from ..errors import InputError
from ..export.face_vectors import load_face_vectors
from ..export.report import (FACES as FACES_DIR, NOISE as NOISE_DIR, JSON_NAME, Linker, flat_name, identity_folders,
                             identity_number, read_report, write_report)
from ..evidence import decisions as D

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-review-"
REVIEW_NOISE = "review_noise"


def base_id(report: dict) -> str:
    """Which clustering run a review works on (the review rewrites the JSON, never these fields)."""
    return cache_key(report.get("created"), report.get("cache_keys"))


def load_embeddings(cache_dir: Path, key: str | None) -> dict[str, np.ndarray]:
    """The run's face vectors (written by `cluster`, export.face_vectors) by face key."""
    vectors = load_face_vectors(cache_dir, key)
    if vectors is None:
        log.warning("face vectors of this run are not in the cache (%s): members are ordered by "
                    "clusterer probability and there are no merge suggestions", cache_dir)
    return vectors or {}


class ReviewStore:
    """The review state of one output folder; every method is safe to call from many threads."""

    def __init__(self, output_dir: Path, journal: Path | None = None):
        self.output_dir = Path(output_dir).resolve()
        self.journal = Path(journal) if journal else D.default_path(self.output_dir)
        self.lock = threading.RLock()
        self.report = read_report(self.output_dir)
        self.base_id = base_id(self.report)
        cfg = self.report.get("config") or {}
        # The run's recorded cache (thumbnails and face vectors live there), else the user's default.
        self.cache_dir = Path(os.path.expanduser(str(cfg.get("cache_dir") or default_cache_dir())))
        self.mode = (cfg.get("export") or {}).get("mode", "copy")
        self.images = self.report["images"]
        # face key -> (image index, face index); an image's faces from face_clusters (every clustered face)
        self.faces: dict[str, tuple[int, int]] = {}
        self.image_faces: list[list[str]] = []
        for i, img in enumerate(self.images):
            keys = []
            if img.get("sha256"):
                for fc in img.get("face_clusters") or []:
                    k = D.face_key(img["sha256"], fc["face_index"])
                    keys.append(k)
                    self.faces.setdefault(k, (i, fc["face_index"]))
            self.image_faces.append(keys)
        self.vectors = load_embeddings(self.cache_dir, (self.report.get("cache_keys") or {}).get("embeddings"))
        self.probability = {}
        for img in self.images:
            if img.get("sha256") and img.get("face_index") is not None:
                self.probability[D.face_key(img["sha256"], img["face_index"])] = float(img.get("probability") or 0)
        self._open()

    @functools.cached_property
    def input_paths(self) -> frozenset[str]:
        """Resolved paths of the registered input images (the only files outside the folder served)."""
        return frozenset(os.path.realpath(img["path"]) for img in self.images if img.get("path"))

    # ------------------------------------------------------------ journal

    def _open(self) -> None:
        entries = D.read_journal(self.journal, repair=True)
        mine = [i for i, e in enumerate(entries) if e.get("op") == "base" and e.get("base") == self.base_id]
        if mine:
            start = mine[-1]
            self.epoch_base, self.epoch_actions = entries[start], entries[start + 1:]
            for e in self.epoch_actions:
                if e.get("op") == "base":  # another run's base after ours: the JSON is older than the journal
                    raise InputError(f"{self.journal} belongs to a later clustering than {self.output_dir / JSON_NAME}: "
                                     "re-run `idcluster cluster` on this folder")
        else:
            assign = {}
            for img in self.images:
                if img.get("sha256"):
                    for fc in img.get("face_clusters") or []:
                        assign[D.face_key(img["sha256"], fc["face_index"])] = int(fc["cluster"])
            self.epoch_base = D.base_entry(self.base_id, assign, self.report.get("clusters") or [])
            D.append_entry(self.journal, self.epoch_base)
            self.epoch_actions = []
        self.all_entries = entries if mine else [*entries, self.epoch_base]
        self.state = D.replay(self.epoch_base, self.epoch_actions)
        # The JSON is written after the folders, so a JSON that already reflects the whole
        # journal means the last action finished; the folders are checked either way.
        done = (self.report.get("review") or {}).get("entries") == len(self.all_entries)
        self.materialise(write_json=not done)

    def dismissed(self) -> list[tuple[list[str], list[str]]]:
        return D.facts(self.all_entries).dismissed

    # ------------------------------------------------------------ actions

    def act(self, action: dict) -> dict:
        """Validate an action from the page, commit it, apply it; returns the journal entry."""
        with self.lock:
            self._check_unchanged()
            entry = self._entry(action)
            D.append_entry(self.journal, entry)
            self.epoch_actions.append(entry)
            self.all_entries.append(entry)
            self.state = D.replay(self.epoch_base, self.epoch_actions)
            self.materialise()
            return entry

    def _json_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.output_dir / JSON_NAME).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def _check_unchanged(self) -> None:
        """Another process (a new `idcluster cluster`) rewrote the folder: acting on it now would
        mix two clusterings."""
        if self._json_stamp() != self._written:
            raise InputError(f"{self.output_dir / JSON_NAME} changed on disk since this review opened it "
                             "(re-clustered?): restart `idcluster review`")

    def _known_faces(self, faces) -> list[str]:
        if not isinstance(faces, list) or not faces:
            raise InputError("select at least one face")
        bad = [f for f in faces if f not in self.faces]
        if bad:
            raise InputError(f"unknown face {bad[0]!r}")
        return list(dict.fromkeys(faces))

    def _live(self, ident) -> int:
        try:
            ident = int(ident)
        except (TypeError, ValueError):
            raise InputError(f"not an identity: {ident!r}") from None
        if ident not in self.state.live_ids():
            raise InputError(f"no identity {ident}")
        return ident

    def _entry(self, a: dict) -> dict:
        op = a.get("op")
        s = self.state
        if op in ("undo", "redo"):
            stack = s.applied if op == "undo" else s.undone
            if not stack:
                raise InputError(f"nothing to {op}")
            return {"op": op, "target": stack[-1].get("seq")} | self._stamp()
        if op == "rename":
            ident = self._live(a.get("id"))
            name = str(a.get("name") or "").strip()[:200] or None
            return {"op": "rename", "id": ident, "name": name} | self._stamp()
        if op in ("hide", "unhide"):
            return {"op": "hide", "id": self._live(a.get("id")), "hidden": op == "hide"} | self._stamp()
        if op == "merge":
            ids = [self._live(i) for i in a.get("ids") or []]
            if len(set(ids)) < 2:
                raise InputError("merge needs two or more identities")
            to = self._live(a.get("into", ids[0]))
            faces = [k for i in ids if i != to for k in s.members(i)]
            return {"op": "move", "kind": "merge", "faces": faces, "to": to, "from": sorted(set(ids) - {to})} | self._stamp()
        if op == "split":
            faces = self._known_faces(a.get("faces"))
            return {"op": "move", "kind": "split", "faces": faces, "to": s.next_id} | self._stamp()
        if op == "move":
            faces = self._known_faces(a.get("faces"))
            to = D.NOISE if a.get("to") in (None, -1, "noise") else self._live(a.get("to"))
            return {"op": "move", "kind": "move", "faces": faces, "to": to} | self._stamp()
        if op == "reject":  # "not this person": out to noise, never back into this identity
            faces = self._known_faces(a.get("faces"))
            sources = {s.assign[k] for k in faces} - {D.NOISE}
            if len(sources) != 1:
                raise InputError("'not this person' works on faces of one identity")
            src = sources.pop()
            anchors = [k for k in self._ranked(src) if k not in faces][:D.MAX_ANCHORS]
            return {"op": "move", "kind": "reject", "reject": True, "faces": faces, "to": D.NOISE,
                    "from": src, "anchors": anchors} | self._stamp()
        if op == "dismiss":
            a_id, b_id = self._live(a.get("a")), self._live(a.get("b"))
            return {"op": "dismiss", "a": self._ranked(a_id)[:5], "b": self._ranked(b_id)[:5]} | self._stamp()
        raise InputError(f"unknown action {op!r}")

    def _stamp(self) -> dict:
        return {"seq": len(self.all_entries), "base": self.base_id,
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}

    # ------------------------------------------------------------ ranking

    def centre(self, ident: int) -> np.ndarray | None:
        vs = [self.vectors[k] for k in self.state.members(ident) if k in self.vectors]
        if not vs:
            return None
        c = np.mean(vs, axis=0)
        return c / max(float(np.linalg.norm(c)), 1e-12)

    def confidence(self, ident: int) -> dict[str, float]:
        """Cosine similarity of each member to its identity's centre (clusterer probability without vectors)."""
        members = self.state.members(ident)
        c = self.centre(ident) if ident != D.NOISE else None
        if c is None:
            return {k: self.probability.get(k, 0.0) for k in members}
        return {k: float(self.vectors[k] @ c) if k in self.vectors else 0.0 for k in members}

    def _ranked(self, ident: int) -> list[str]:
        conf = self.confidence(ident)
        return sorted(conf, key=lambda k: (-conf[k], k))

    def suggestion_floor(self) -> float:
        """Centres closer than 1.5x the embedder's calibrated distance threshold are worth a look."""
        t = ((self.report.get("config") or {}).get("embedder") or {}).get("distance_threshold") or 0.1
        return 1.0 - 1.5 * float(t)

    def suggestions(self, limit: int = 20, min_similarity: float | None = None) -> list[dict]:
        """Pairs of visible identities with the most similar centres; dismissed pairs and pairs of
        two reviewed identities (the user kept them apart: later runs cannot-link them) left out."""
        min_similarity = self.suggestion_floor() if min_similarity is None else min_similarity
        ids = sorted(i for i in self.state.live_ids() if not self._ident(i).hidden)
        centres = {i: c for i in ids if (c := self.centre(i)) is not None}
        ids = list(centres)
        if len(ids) < 2:
            return []
        C = np.stack([centres[i] for i in ids])
        sims = C @ C.T
        np.fill_diagonal(sims, -np.inf)
        dismissed = self.dismissed()
        out = []
        for flat in np.argsort(-sims, axis=None):
            a, b = divmod(int(flat), len(ids))
            if a >= b:
                continue
            if sims[a, b] < min_similarity or len(out) >= limit:
                break
            if self._ident(ids[a]).reviewed and self._ident(ids[b]).reviewed:
                continue
            A, B = set(self.state.members(ids[a])), set(self.state.members(ids[b]))
            if any((A & set(x) and B & set(y)) or (A & set(y) and B & set(x)) for x, y in dismissed):
                continue
            out.append({"a": ids[a], "b": ids[b], "similarity": round(float(sims[a, b]), 4)})
        return out

    def _ident(self, i: int) -> D.Identity:
        return self.state.identities.get(i) or D.Identity(i)

    # ------------------------------------------------------------ materialise

    def folder_names(self) -> dict[int, str]:
        live = self.state.live_ids()
        return identity_folders(live, {i: self._ident(i).name for i in live})

    def image_folders(self, names: dict[int, str]) -> list[list[str]]:
        """Folders of every image: its chosen face's identity first, then its other faces'; else noise/."""
        out = []
        for img, keys in zip(self.images, self.image_faces):
            chosen = D.face_key(img["sha256"], img["face_index"]) if img.get("face_index") is not None and img.get("sha256") else None
            labels = [self.state.assign.get(chosen, D.NOISE)] if chosen in self.state.assign else []
            labels += sorted({self.state.assign[k] for k in keys} - set(labels))
            folders = [names[l] for l in labels if l != D.NOISE]
            out.append(folders or [NOISE_DIR])
        return out

    def materialise(self, write_json: bool = True) -> None:
        """Make the folders and the JSON match the replayed state (idempotent)."""
        with self.lock:
            names = self.folder_names()
            wanted = self.image_folders(names)
            self._sync_folders(names, wanted)
            if write_json:
                write_report(self.output_dir, self._report(names, wanted), compact=True)
            self._written = self._json_stamp()

    @staticmethod
    def _rename_identity_dirs(root: Path, names: dict[int, str]) -> None:
        """Identity folders follow renames (matched by their number)."""
        for p in root.iterdir():
            n = identity_number(p.name)
            if n is not None and p.is_dir() and not p.is_symlink():
                target = names.get(n)
                if target and target != p.name and not (root / target).exists():
                    os.rename(p, root / target)

    def _sync_face_crops(self, names: dict[int, str]) -> None:
        """faces/<identity>/<stem>[_faceK].png (export.save_faces=true) follow their faces."""
        root = self.output_dir / FACES_DIR
        if not root.is_dir():
            return
        self._rename_identity_dirs(root, names)
        want: dict[str, str] = {}
        for img, keys in zip(self.images, self.image_faces):
            stem = Path(flat_name(img["rel_path"])).stem
            for k in keys:
                idx = int(k.rpartition(":")[2])
                suffix = "" if idx == img.get("face_index") else f"_face{idx}"
                want[f"{stem}{suffix}.png"] = names.get(self.state.assign.get(k, D.NOISE), NOISE_DIR)
        dirs = [d for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
        for d in dirs:
            for f in os.listdir(d):
                target = want.get(f)
                if target and target != d.name:
                    (root / target).mkdir(exist_ok=True)
                    os.rename(d / f, root / target / f)
        for d in dirs:
            if identity_number(d.name) is not None and d.name not in names.values():
                try:
                    d.rmdir()
                except OSError:
                    pass

    def _sync_folders(self, names: dict[int, str], wanted: list[list[str]]) -> None:
        out = self.output_dir
        # 1. identity folders follow renames (matched by number); stale temp files go
        self._rename_identity_dirs(out, names)
        for folder in {*names.values(), NOISE_DIR}:
            (out / folder).mkdir(exist_ok=True)
        present: dict[str, set[str]] = {}
        managed = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()
                   and (identity_number(p.name) is not None or p.name == NOISE_DIR)]
        for d in managed:
            for f in os.listdir(d):
                if f.startswith(TMP_PREFIX):
                    (d / f).unlink(missing_ok=True)
                else:
                    present.setdefault(f, set()).add(d.name)
        link = Linker(self.mode)
        # 2. each image: move a copy it no longer needs, else copy one it has, else link the input
        for img, folders in zip(self.images, wanted):
            fname = flat_name(img["rel_path"])
            have = present.pop(fname, set())
            spare = sorted(have - set(folders))
            for folder in folders:
                if folder in have:
                    continue
                dst = out / folder / fname
                if spare:
                    os.rename(out / spare.pop() / fname, dst)
                    continue
                fd, tmp = tempfile.mkstemp(dir=out / folder, prefix=TMP_PREFIX)
                os.close(fd)
                os.unlink(tmp)
                src = next((out / f / fname for f in sorted(have) if f in folders), None)
                try:
                    if src is not None and not src.is_symlink():
                        shutil.copy2(src, tmp)
                    else:
                        link(Path(img["path"]), Path(tmp))
                    os.rename(tmp, dst)
                except OSError as e:
                    Path(tmp).unlink(missing_ok=True)
                    log.warning("could not place %s in %s: %s", img["rel_path"], folder, e.strerror or e)
            for folder in spare:
                (out / folder / fname).unlink(missing_ok=True)  # our own copy/link, never an input
        self._sync_face_crops(names)
        # 3. identities emptied by merges or moves disappear
        keep = set(names.values())
        for d in managed:
            if d.exists() and identity_number(d.name) is not None and d.name not in keep:
                try:
                    d.rmdir()
                except OSError:
                    log.warning("%s still holds files this review did not write: left in place", d)

    def _report(self, names: dict[int, str], wanted: list[list[str]]) -> dict:
        rep = dict(self.report)
        members: dict[str, list[str]] = {}
        images = []
        for img, keys, folders in zip(self.images, self.image_faces, wanted):
            img = dict(img)
            for f in folders:
                members.setdefault(f, []).append(img["rel_path"])
            fcs = []
            for fc in img.get("face_clusters") or []:
                c = self.state.assign.get(D.face_key(img["sha256"], fc["face_index"]), D.NOISE)
                fcs.append({"face_index": fc["face_index"], "cluster": c, "identity": names.get(c, NOISE_DIR)})
            img["face_clusters"] = fcs
            chosen = next((fc for fc in fcs if fc["face_index"] == img.get("face_index")), None)
            if chosen is not None:
                img["cluster"], img["identity"] = chosen["cluster"], chosen["identity"]
                if chosen["cluster"] == D.NOISE and img.get("reason") in (None, R.CLUSTER_NOISE, REVIEW_NOISE):
                    ran = int(self.epoch_base["assign"].get(D.face_key(img["sha256"], img["face_index"]), D.NOISE))
                    img["reason"], img["detail"] = ((REVIEW_NOISE, "moved to noise in review") if ran != D.NOISE
                                                    else (R.CLUSTER_NOISE, "not close enough to any cluster"))
                elif chosen["cluster"] != D.NOISE and img.get("reason") in (R.CLUSTER_NOISE, REVIEW_NOISE):
                    img["reason"] = img["detail"] = None
            img["output"] = f"{folders[0]}/{flat_name(img['rel_path'])}"
            images.append(img)
        clusters = []
        for i, folder in sorted(names.items()):
            d = self._ident(i)
            c = {"identity": folder, "cluster": i, "size": len(members.get(folder, [])), "images": members.get(folder, [])}
            if d.name:
                c["name"] = d.name
            if d.hidden:
                c["hidden"] = True
            if d.reviewed:
                c["reviewed"] = True
            clusters.append(c)
        noise_imgs = members.get(NOISE_DIR, [])
        reasons = Counter(img["reason"] for img in images if img["identity"] == NOISE_DIR and img.get("reason"))
        rep.update(clusters=clusters, images=images,
                   noise={"size": len(noise_imgs), "reasons": dict(reasons.most_common()), "images": noise_imgs})
        stats = dict(rep.get("statistics") or {})
        stats.update(identities=len(clusters), clustered=sum(img["cluster"] >= 0 for img in images),
                     noise=sum(img["cluster"] < 0 for img in images), noise_reasons=dict(reasons.most_common()))
        rep["statistics"] = stats
        rep["review"] = {"decisions": str(self.journal), "entries": len(self.all_entries), "base": self.base_id}
        return rep
