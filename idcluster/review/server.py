"""The review web app (Starlette): a JSON API over ReviewStore plus the static page.

Safety: every request needs the session's random token (the printed URL's
?token=, then an HttpOnly SameSite=Strict cookie); requests that change state
need it in the X-Review-Token header, which another site's form or script
cannot send (CSRF). Only files inside the output folder and the registered
input images are served; anything else, `..`, encoded slashes, absolute paths
and symlinks pointing out of the folder included, is a 404.
"""

from __future__ import annotations

import os
import secrets
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
from .store import ReviewStore
from .thumbs import face_thumbnail

COOKIE = "idcluster_review"
HEADER = "x-review-token"
SAFE_METHODS = {"GET", "HEAD"}
PAGE_LIMIT = 500


def static_dir() -> Path:
    return Path(str(resources.files("idcluster.review").joinpath("static")))


class TokenMiddleware(BaseHTTPMiddleware):
    def __init__(self, app, token: str):
        super().__init__(app)
        self.token = token

    def _ok(self, value: str | None) -> bool:
        return bool(value) and secrets.compare_digest(value.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next):
        header = request.headers.get(HEADER)
        if request.method not in SAFE_METHODS:
            if not self._ok(header):
                return PlainTextResponse("missing or wrong X-Review-Token header", status_code=403)
            return await call_next(request)
        query = request.query_params.get("token")
        if not (self._ok(header) or self._ok(query) or self._ok(request.cookies.get(COOKIE))):
            return PlainTextResponse("open the URL printed by `idcluster review` (it carries the token)", status_code=403)
        response = await call_next(request)
        if self._ok(query):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
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


def create_app(store: ReviewStore, token: str | None = None) -> Starlette:
    token = token or secrets.token_urlsafe(24)
    thumbs = StageCache(store.cache_dir)
    index_html = (static_dir() / "index.html").read_text(encoding="utf-8")

    def identity_json(i: int, names: dict[int, str]) -> dict:
        d = store._ident(i)
        ranked = store._ranked(i)  # representatives: the most central members
        return {"id": i, "name": d.name, "hidden": d.hidden, "reviewed": d.reviewed, "size": len(ranked),
                "folder": names.get(i), "reps": ranked[:4]}

    def overview(request: Request) -> JSONResponse:
        with store.lock:
            s = store.state
            ids = sorted(s.live_ids(), key=lambda i: (-len(s.members(i)), i))
            names = store.folder_names()
            idents = [identity_json(i, names) for i in ids]
            noise = store._ranked(D.NOISE)
            return JSONResponse({
                "identities": idents,
                "noise": {"id": D.NOISE, "size": len(noise), "reps": noise[:4]},
                "suggestions": store.suggestions(),
                "can_undo": bool(s.applied), "can_redo": bool(s.undone),
                "last": _describe(s.applied[-1]) if s.applied else None,
                "output_dir": str(store.output_dir),
            })

    def members(request: Request) -> JSONResponse:
        try:
            ident = int(request.path_params["ident"])
            offset = max(0, int(request.query_params.get("offset", 0)))
            limit = min(PAGE_LIMIT, max(1, int(request.query_params.get("limit", 200))))
        except ValueError:
            return JSONResponse({"error": "bad number"}, status_code=400)
        order = request.query_params.get("sort", "confidence")
        with store.lock:
            if ident != D.NOISE and ident not in store.state.live_ids():
                return JSONResponse({"error": f"no identity {ident}"}, status_code=404)
            conf = store.confidence(ident)
            keys = sorted(conf, key=lambda k: (conf[k], k))  # doubtful first
            if order == "name":
                keys.sort(key=lambda k: store.images[store.faces[k][0]]["rel_path"])
            elif order == "-confidence":
                keys.reverse()
            page = keys[offset:offset + limit]
            items = [{"face": k, "image": store.faces[k][0], "rel_path": store.images[store.faces[k][0]]["rel_path"],
                      "confidence": round(conf[k], 4)} for k in page]
            info = identity_json(ident, store.folder_names()) if ident != D.NOISE else {"id": D.NOISE, "name": "noise", "size": len(keys)}
            return JSONResponse({"identity": info, "total": len(keys), "offset": offset, "members": items})

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
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        try:
            entry = await run_in_threadpool(store.act, body)
        except IdclusterError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return JSONResponse({"ok": True, "entry": {k: entry[k] for k in ("op", "seq") if k in entry},
                             "to": entry.get("to")})

    def page(request: Request) -> HTMLResponse:
        return HTMLResponse(index_html.replace("{{TOKEN}}", token))

    routes = [
        Route("/", page),
        Route("/api/state", overview),
        Route("/api/identity/{ident}", members),
        Route("/api/action", action, methods=["POST"]),
        Route("/thumb/{face}", thumb),
        Route("/image/{index}", image),
        Route("/files/{path:path}", files),
        Mount("/static", app=StaticFiles(directory=static_dir()), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenMiddleware, token=token)])
    app.state.token = token
    return app


def _describe(entry: dict) -> str:
    op = entry["op"]
    if op == "move":
        kind = entry.get("kind", "move")
        return f"{kind} {len(entry['faces'])} face(s)"
    return op
