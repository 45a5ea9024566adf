"""The review state of one output folder: its journal epoch, the replayed state, and applying actions.

Order of an action: validate (review.actions) -> append to the journal (fsync: the
commit point) -> replay -> move/copy files inside the output folder -> write the
JSON atomically (recording the journal length it reflects) (review.materialise).
Opening a store always reconciles the folders and the JSON with the journal, so a
crash or kill -9 anywhere in that sequence leaves a consistent state on restart.
Files are only ever renamed, copied or removed inside the output folder: inputs are
never touched.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import threading
from pathlib import Path

import numpy as np

from ..cache.store import cache_key, default_cache_dir
from ..errors import InputError
from ..evidence import decisions as D
from ..export.report import JSON_NAME, read_report, write_report
from . import materialise as M
from .actions import entry_for
from .ranking import Ranking


def base_id(report: dict) -> str:
    """Which clustering run a review works on (the review rewrites the JSON, never these fields)."""
    return cache_key(report.get("created"), report.get("cache_keys"))


def recorded_cache_dir(report: dict) -> Path:
    """The run's recorded cache (thumbnails and face vectors live there), else the user's default."""
    return Path(os.path.expanduser(str((report.get("config") or {}).get("cache_dir") or default_cache_dir())))


class ReviewStore:
    """The review state of one output folder; every method is safe to call from many threads.

    journal: the decisions file (default <output_dir>/review_decisions.jsonl); cache_dir: where the
    run's face vectors and the thumbnails are (default: the cache the run recorded); reconcile=False:
    the folders and the JSON are checked against the journal only when reconcile() runs (the server
    runs it in the background once its URL is out: the first view needs only the replayed state).

    Locks: `lock` is held by whoever writes (an action, reconciling); `view_lock` by whoever reads the
    state or ranks faces, and by a writer only while it swaps the state, so reads never wait for files."""

    def __init__(self, output_dir: Path, journal: Path | None = None, cache_dir: Path | None = None,
                 reconcile: bool = True):
        self.output_dir = Path(output_dir).resolve()
        self.journal = Path(journal) if journal else D.default_path(self.output_dir)
        self.lock = threading.RLock()
        self.view_lock = threading.RLock()
        self._written = self._json_stamp()  # before reading: a rewrite after that is seen as a change
        self._reconciled = False
        self.report = read_report(self.output_dir)
        self.base_id = base_id(self.report)
        self.cache_dir = Path(cache_dir) if cache_dir else recorded_cache_dir(self.report)
        self.mode = ((self.report.get("config") or {}).get("export") or {}).get("mode", "copy")
        self.images = self.report["images"]
        # face key -> (image index, face index); an image's faces from face_clusters (every clustered face)
        self.faces: dict[str, tuple[int, int]] = {}
        for i, img in enumerate(self.images):
            for fc, k in zip(img.get("face_clusters") or [], M.face_keys(img)):
                self.faces.setdefault(k, (i, fc["face_index"]))
        self.ranking = Ranking(self.report, self.cache_dir)
        self._open()
        if reconcile:
            self.reconcile()

    @functools.cached_property
    def input_paths(self) -> frozenset[str]:
        """Resolved paths of the registered input images (the only files outside the folder served)."""
        return frozenset(os.path.realpath(img["path"]) for img in self.images if img.get("path"))

    # ------------------------------------------------------------ journal

    def _open(self) -> None:
        entries = D.read_journal(self.journal, repair=True)
        assign, placed = self._placements()
        mine = [i for i, e in enumerate(entries) if e.get("op") == "base" and e.get("base") == self.base_id]
        if mine:
            start = mine[-1]
            self.epoch_base, self.epoch_actions = entries[start], entries[start + 1:]
            for e in self.epoch_actions:
                if e.get("op") == "base":  # another run's base after ours: the JSON is older than the journal
                    raise InputError(f"{self.journal} belongs to a later clustering than {self.output_dir / JSON_NAME}: "
                                     "re-run `idcluster cluster` on this folder")
            known = D.replay(self.epoch_base, [e for e in self.epoch_actions if e["op"] == "extend"])
            new = {k: c for k, c in assign.items() if k not in known.ran}
            new_placed = {h: c for h, c in placed.items() if h not in known.placed}
            if new or new_placed:  # `idcluster add` placed these since this review began: part of its base
                extend = D.extend_entry(self.base_id, new, new_placed) | self._stamp(len(entries))
                D.append_entry(self.journal, extend)
                entries.append(extend)
                self.epoch_actions.append(extend)
            self.all_entries = entries
        else:
            self.epoch_base = D.base_entry(self.base_id, assign, self.report["clusters"], placed)
            D.append_entry(self.journal, self.epoch_base)
            self.epoch_actions = []
            self.all_entries = [*entries, self.epoch_base]
        self.state = D.replay(self.epoch_base, self.epoch_actions)

    def reconcile(self) -> None:
        """Make the folders and the JSON match the journal (idempotent; a no-op once an action has).

        The JSON is written after the folders, so a JSON that already reflects the whole journal
        means the last action finished; the folders are checked either way."""
        with self.lock:
            if not self._reconciled:
                done = (self.report.get("review") or {}).get("entries") == len(self.all_entries)
                self.materialise(write_json=not done)

    def _placements(self) -> tuple[dict[str, int], dict[str, int]]:
        """Where the JSON has every clustered face (face key -> identity), and the images placed
        without a clustered face (sha256 -> identity: the JSON forgets it once reviewed to noise)."""
        assign, placed = {}, {}
        for img in self.images:
            fcs = img.get("face_clusters") or []
            assign.update({k: int(fc["cluster"]) for fc, k in zip(fcs, M.face_keys(img))})
            if img.get("sha256") and img["cluster"] >= 0 and img.get("face_index") not in {fc["face_index"] for fc in fcs}:
                placed[img["sha256"]] = int(img["cluster"])
        return assign, placed

    def dismissed(self) -> list[tuple[list[str], list[str]]]:
        return D.facts(self.all_entries).dismissed

    # ------------------------------------------------------------ actions

    def act(self, action: dict) -> dict:
        """Validate an action from the page, commit it, apply it; returns the journal entry."""
        with self.lock:
            self._check_unchanged()
            with self.view_lock:
                entry = self._entry(action)
            D.append_entry(self.journal, entry)
            state = D.replay(self.epoch_base, [*self.epoch_actions, entry])
            with self.view_lock:
                self.epoch_actions.append(entry)
                self.all_entries.append(entry)
                self.state = state
            self.materialise()
            return entry

    def _entry(self, action: dict) -> dict:
        return entry_for(action, self.state, self.faces, self._ranked) | self._stamp(len(self.all_entries))

    def _stamp(self, seq: int) -> dict:
        return {"seq": seq, "base": self.base_id, "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}

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

    # ------------------------------------------------------------ ranking (review.ranking)

    def _ident(self, i: int) -> D.Identity:
        return self.state.identities.get(i) or D.Identity(i)

    def centre(self, ident: int) -> np.ndarray | None:
        return self.ranking.centre(self.state, ident)

    def member_distances(self, ident: int) -> dict[str, float | None]:
        return self.ranking.member_distances(self.state, ident)

    def _ranked(self, ident: int) -> list[str]:
        return self.ranking.ranked(self.state, ident)

    def suggestions(self, limit: int = 20, max_ratio: float | None = None) -> list[dict]:
        kw = {} if max_ratio is None else {"max_ratio": max_ratio}
        return self.ranking.suggestions(self.state, self.dismissed(), limit, **kw)

    # ------------------------------------------------------------ materialise (review.materialise)

    def folder_names(self) -> dict[int, str]:
        return M.folder_names(self.state)

    def materialise(self, write_json: bool = True) -> None:
        """Make the folders and the JSON match the replayed state (idempotent)."""
        with self.lock:
            names = self.folder_names()
            report = M.reviewed_report(self.report, self.state, names)
            M.sync_folders(self.output_dir, report["images"], names, self.mode)
            M.sync_face_crops(self.output_dir, report["images"], names)
            if write_json:
                report["review"] = {"decisions": str(self.journal), "entries": len(self.all_entries), "base": self.base_id}
                write_report(self.output_dir, report, compact=True)
            self._written = self._json_stamp()
            self._reconciled = True
