"""The review web app (Starlette): a JSON API over ReviewStore plus the static page.

Safety: a request whose Host header is not one the server printed is refused
(421: a DNS-rebinding page cannot reach it under its own name); every request
needs the session's random token (the printed URL's ?token=, then an HttpOnly
SameSite=Strict cookie named for this session, so two sessions in one browser
keep their own); requests that change state need it in the X-Review-Token
header, which another site's form or script cannot send (CSRF), and their
bodies are capped and checked against review.schema (400 with the reason).
Only files inside the output folder and the registered input images are
served; anything else, `..`, encoded slashes, absolute paths and symlinks
pointing out of the folder included, is a 404.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..cache.store import StageCache
from ..errors import IdclusterError
from ..evidence import decisions as D
from .actions import NameTaken, describe
from .schema import BadRequest, parse, read_body
from .store import ReviewStore
from .thumbs import face_thumbnail

log = logging.getLogger(__name__)

COOKIE = "idcluster_review"  # + a digest of the session's token: one cookie per session
HEADER = "x-review-token"
SAFE_METHODS = {"GET", "HEAD"}
PAGE_LIMIT = 500


def cookie_name(token: str) -> str:
    """The session's cookie: cookies are shared by every port of a host, so each session names its own."""
    return f"{COOKIE}_{hashlib.sha256(token.encode()).hexdigest()[:12]}"


def static_dir() -> Path:
    return Path(str(resources.files("idcluster.review").joinpath("static")))


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, token: str, hosts: Iterable[str]):
        super().__init__(app)
        self.token = token
        self.cookie = cookie_name(token)
        self.hosts = frozenset(h.lower() for h in hosts)

    def _ok(self, value: str | None) -> bool:
        return bool(value) and secrets.compare_digest(value.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next):
        if request.headers.get("host", "").lower() not in self.hosts:
            return PlainTextResponse("this page answers only at the address `idcluster review` printed", status_code=421)
        header = request.headers.get(HEADER)
        if request.method not in SAFE_METHODS:
            if not self._ok(header):
                return PlainTextResponse("missing or wrong X-Review-Token header", status_code=403)
            return await call_next(request)
        query = request.query_params.get("token")
        if not (self._ok(header) or self._ok(query) or self._ok(request.cookies.get(self.cookie))):
            return PlainTextResponse("open the URL printed by `idcluster review` (it carries the token)", status_code=403)
        response = await call_next(request)
        if self._ok(query):
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def safe_file(store: ReviewStore, rel: str) -> Path | None:
    """The file `rel` names inside the output folder, or None (-> 404)."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    root = os.path.realpath(store.output_dir)
    real = os.path.realpath(os.path.join(root, *parts))
    inside = os.path.commonpath([root, real]) == root
    if not (inside or real in store.input_paths):  # export.mode=symlink points at registered inputs
        return None
    return Path(real) if os.path.isfile(real) else None


def create_app(store: ReviewStore, token: str | None = None, hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> Starlette:
    """hosts: the Host header values to answer (host:port of each URL printed; default: loopback without a port)."""
    token = token or secrets.token_urlsafe(24)
    thumbs = StageCache(store.cache_dir)
    index_html = (static_dir() / "index.html").read_text(encoding="utf-8")

    def identity_json(i: int, names: dict[int, str]) -> dict:
        d = store._ident(i)
        ranked = store._ranked(i)  # representatives: the most central members
        return {"id": i, "name": d.name, "hidden": d.hidden, "reviewed": d.reviewed, "size": len(ranked),
                "folder": names.get(i), "reps": ranked[:4]}

    first_view = threading.Event()

    def overview(request: Request) -> JSONResponse:
        first_view.set()
        with store.view_lock:
            s = store.state
            ids = sorted(s.live_ids(), key=lambda i: (-len(s.members(i)), i))
            names = store.folder_names()
            idents = [identity_json(i, names) for i in ids]
            noise = store._ranked(D.NOISE)
            return JSONResponse({
                "identities": idents,
                "noise": {"id": D.NOISE, "size": len(noise), "reps": noise[:4]},
                "can_undo": bool(s.applied), "can_redo": bool(s.undone),
                "last": describe(s.applied[-1], store.all_entries, names) if s.applied else None,
                "output_dir": str(store.output_dir),
                "threshold": store.ranking.threshold,
            })

    def suggestions(request: Request) -> JSONResponse:
        """Asked for after the first view is on screen: the page does not wait for them."""
        with store.view_lock:
            return JSONResponse({"suggestions": store.suggestions(), "threshold": store.ranking.threshold})

    def members(request: Request) -> JSONResponse:
        try:
            ident = int(request.path_params["ident"])
            offset = max(0, int(request.query_params.get("offset", 0)))
            limit = min(PAGE_LIMIT, max(1, int(request.query_params.get("limit", 200))))
        except ValueError:
            return JSONResponse({"error": "bad number"}, status_code=400)
        order = request.query_params.get("sort", "doubtful")
        with store.view_lock:
            if ident != D.NOISE and ident not in store.state.live_ids():
                return JSONResponse({"error": f"no identity {ident}"}, status_code=404)
            dist = store.member_distances(ident)
            rel = lambda k: store.images[store.faces[k][0]]["rel_path"]  # noqa: E731
            if order == "name" or ident == D.NOISE:
                keys = sorted(dist, key=lambda k: (rel(k), k))
            else:  # doubtful first: farthest from the identity's core (unknown distances last)
                keys = sorted(dist, key=lambda k: (dist[k] is None, -(dist[k] or 0.0), k))
                if order == "typical":
                    keys = [k for k in reversed(keys) if dist[k] is not None] + [k for k in keys if dist[k] is None]
            page = keys[offset:offset + limit]
            items = [member_json(k, dist[k]) for k in page]
            info = identity_json(ident, store.folder_names()) if ident != D.NOISE else {"id": D.NOISE, "name": "noise", "size": len(keys)}
            return JSONResponse({"identity": info, "total": len(keys), "offset": offset, "members": items,
                                 "threshold": store.ranking.threshold})

    def member_json(k: str, distance: float | None) -> dict:
        i, f = store.faces[k]
        img = store.images[i]
        faces = img.get("faces") or []
        return {"face": k, "image": i, "rel_path": img["rel_path"],
                "distance": None if distance is None else round(distance, 3),
                "doubtful": distance is not None and distance > 1.0,
                "box": faces[f]["box"] if f < len(faces) else None}

    def thumb(request: Request) -> Response:
        key = request.path_params["face"]
        hit = store.faces.get(key)
        if hit is None:
            return PlainTextResponse("not found", status_code=404)
        i, k = hit
        img = store.images[i]
        box = (img.get("faces") or [])[k]["box"] if k < len(img.get("faces") or []) else None
        # the input image, or its copy in the output folder where the input has moved away since
        src = img["path"] if os.path.isfile(img["path"]) else safe_file(store, img.get("output") or "")
        data = face_thumbnail(thumbs, str(src), img["sha256"], box) if box and src else None
        if data is None:
            return PlainTextResponse("not found", status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    def image(request: Request) -> Response:
        """The whole instance image of a face: its copy in the output folder, else the registered input."""
        try:
            i = int(request.path_params["index"])
            if i < 0:
                raise IndexError(i)
            img = store.images[i]
        except (ValueError, IndexError):
            return PlainTextResponse("not found", status_code=404)
        path = safe_file(store, img.get("output") or "") or (
            Path(img["path"]) if os.path.realpath(img["path"]) in store.input_paths and os.path.isfile(img["path"]) else None)
        return FileResponse(path) if path else PlainTextResponse("not found", status_code=404)

    def files(request: Request) -> Response:
        path = safe_file(store, request.path_params["path"])
        return FileResponse(path) if path else PlainTextResponse("not found", status_code=404)

    async def action(request: Request) -> JSONResponse:
        try:
            body = parse(await read_body(request))
            entry = await run_in_threadpool(store.act, body)
        except BadRequest as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        except NameTaken as e:  # the page asks: one person? then it merges them
            return JSONResponse({"error": str(e), "conflict": {"id": e.ident, "name": e.name, "other": e.other}},
                                status_code=409)
        except IdclusterError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        with store.view_lock:
            names = store.folder_names()
            message = describe(entry, store.all_entries, names)
        to = entry.get("to")
        return JSONResponse({"ok": True, "entry": {k: entry[k] for k in ("op", "seq") if k in entry},
                             "to": to, "folder": names.get(to) if to is not None else None, "message": message})

    def page(request: Request) -> HTMLResponse:
        return HTMLResponse(index_html.replace("{{TOKEN}}", token))

    routes = [
        Route("/", page),
        Route("/api/state", overview),
        Route("/api/suggestions", suggestions),
        Route("/api/identity/{ident}", members),
        Route("/api/action", action, methods=["POST"]),
        Route("/thumb/{face}", thumb),
        Route("/image/{index}", image),
        Route("/files/{path:path}", files),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=token, hosts=hosts)])
    app.state.token = token
    app.state.first_view = first_view
    return app


def reconcile_after_first_view(store: ReviewStore, app: Starlette, delay: float = 1.5, timeout: float = 5.0) -> None:
    """store.reconcile() once the page has had its first view (its state, then `delay` seconds for the
    thumbnails; at the latest after `timeout`): checking 10,000 files competes with the first view for
    the interpreter. A problem is a warning: the page still works, the next action reconciles again."""
    if app.state.first_view.wait(timeout):
        time.sleep(delay)
    try:
        store.reconcile()
    except (OSError, IdclusterError) as e:
        log.warning("could not bring %s in line with its review journal: %s", store.output_dir, e)

