"""Requests sent by hand (issue 18 item 7) and two sessions in one browser (item 6): every malformed
body is a 400 with its reason (never a 500, never applied), bodies are capped, only the Host the
server printed is answered, and each session has its own cookie."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from idcluster.evidence import decisions as D
from idcluster.review import schema
from idcluster.review.server import cookie_name, create_app
from idcluster.review.store import ReviewStore

from tests.review.test_review import assert_consistent, clustered, out  # noqa: F401 (fixtures)

H = {"X-Review-Token": "secret-token", "Content-Type": "application/json"}


@pytest.fixture
def client(out):  # noqa: F811
    store = ReviewStore(out)
    with TestClient(create_app(store, token="secret-token"), base_url="http://127.0.0.1") as c:
        c.store = store
        yield c


def ids_and_face(client) -> tuple[list[int], str]:
    ids = sorted(client.store.state.live_ids())
    return ids, client.store.state.members(ids[0])[0]


def malformed(ids: list[int], face: str) -> dict[str, bytes]:
    a, b, c = ids[:3]
    return {
        "ids not a list": b'{"op":"merge","ids":5}',
        "face key a list": b'{"op":"split","faces":[[1]]}',
        "face key an object": b'{"op":"split","faces":[{}]}',
        "id 1e400": b'{"op":"hide","id":1e400}',
        "id Infinity": b'{"op":"hide","id":Infinity}',
        "id NaN": b'{"op":"hide","id":NaN}',
        "100,000-deep array": b"[" * 100_000 + b"]" * 100_000,
        "100,000-deep object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "float ids": b'{"op":"merge","ids":[%d.9,%d.2]}' % (a, b),
        "boolean ids": b'{"op":"merge","ids":[true,false]}',
        "into not among ids": b'{"op":"merge","ids":[%d,%d],"into":%d}' % (a, b, c),
        "name an object": b'{"op":"rename","id":%d,"name":{"first":"Ann"}}' % a,
        "name a list": b'{"op":"rename","id":%d,"name":["Ann"]}' % a,
        "name too long": json.dumps({"op": "rename", "id": a, "name": "x" * 201}).encode(),
        "huge id": b'{"op":"hide","id":123456789012345678901234567890}',
        "negative id": b'{"op":"hide","id":-5}',
        "noise as a merge id": b'{"op":"merge","ids":[-1,%d]}' % a,
        "unknown field": b'{"op":"hide","id":%d,"force":true}' % a,
        "missing field": b'{"op":"rename","id":%d}' % a,
        "unknown op": b'{"op":"explode"}',
        "op not a string": b'{"op":["merge"]}',
        "body an array": b'[{"op":"undo"}]',
        "body a string": b'"undo"',
        "not JSON": b"op=merge",
        "not UTF-8": b'{"op":"rename","id":%d,"name":"\xff\xfe"}' % a,
        "a giant integer": b'{"op":"hide","id":' + b"9" * 5000 + b"}",
        "dismiss one identity": b'{"op":"dismiss","a":%d,"b":%d}' % (a, a),
        "move to a string": json.dumps({"op": "move", "faces": [face], "to": "noise"}).encode(),
        "duplicate ids only": b'{"op":"merge","ids":[%d,%d]}' % (a, a),
    }


def test_every_malformed_body_is_a_400_with_its_reason(client, out):  # noqa: F811
    ids, face = ids_and_face(client)
    journal = (out / D.JOURNAL_NAME).read_bytes()
    for case, body in malformed(ids, face).items():
        r = client.post("/api/action", content=body, headers=H)
        assert r.status_code == 400, (case, r.status_code, r.text)
        reason = r.json()["error"]
        assert reason and "Traceback" not in reason, case
    assert (out / D.JOURNAL_NAME).read_bytes() == journal  # none of them was applied
    assert_consistent(out)


def test_the_reasons_say_what_is_wrong(client):
    ids, face = ids_and_face(client)
    bad = malformed(ids, face)
    expect = {"ids not a list": "ids must be a list", "face key a list": "faces[0] must be a face key",
              "id 1e400": "id must be an identity number, got inf", "id Infinity": "Infinity is not a JSON number",
              "100,000-deep array": "nested too deeply", "float ids": "ids[0] must be an identity number",
              "boolean ids": "got true", "into not among ids": "into", "name an object": "name must be a string",
              "unknown field": "unknown field 'force'", "unknown op": "op must be one of"}
    for case, words in expect.items():
        assert words in client.post("/api/action", content=bad[case], headers=H).json()["error"], case


def test_valid_actions_still_apply(client, out):  # noqa: F811
    ids, face = ids_and_face(client)
    for body in ({"op": "merge", "ids": ids[:2], "into": ids[1]}, {"op": "split", "faces": [face]},
                 {"op": "move", "faces": [face], "to": -1}, {"op": "rename", "id": ids[1], "name": None},
                 {"op": "rename", "id": ids[1], "name": "Ann"}, {"op": "dismiss", "a": ids[1], "b": ids[2]},
                 {"op": "hide", "id": ids[2]}, {"op": "unhide", "id": ids[2]}, {"op": "undo"}, {"op": "redo"}):
        r = client.post("/api/action", json=body, headers=H)
        assert r.status_code == 200, (body, r.text)
    assert_consistent(out)


def test_body_size_is_capped(client, out):  # noqa: F811
    journal = (out / D.JOURNAL_NAME).read_bytes()
    big = b'{"op":"split","faces":[' + b'"' + b"a" * (schema.MAX_BODY) + b'"]}'
    r = client.post("/api/action", content=big, headers=H)
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks():  # no Content-Length (chunked): counted as it streams in
        for _ in range(2 * schema.MAX_BODY // 65536):
            yield b" " * 65536

    r = client.post("/api/action", content=chunks(), headers=H)
    assert r.status_code == 413  # (that the server stops reading: the real-server test below)
    assert (out / D.JOURNAL_NAME).read_bytes() == journal


def test_only_the_printed_host_is_answered(out):  # noqa: F811
    store = ReviewStore(out)
    app = create_app(store, token="t", hosts=["127.0.0.1:8765"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/state", headers={"X-Review-Token": "t"}).status_code == 200
        for host in ("evil.example", "evil.example:8765", "127.0.0.1", "127.0.0.1:9999", "localhost:8765", ""):
            r = c.get("/api/state", headers={"X-Review-Token": "t", "Host": host})
            assert r.status_code == 421, host
            r = c.post("/api/action", json={"op": "undo"}, headers={"X-Review-Token": "t", "Host": host})
            assert r.status_code == 421, host


def test_addresses_printed_are_the_hosts_answered():
    from idcluster.cli.review import _addresses

    assert _addresses("127.0.0.1", 8765) == ["127.0.0.1:8765"]
    assert _addresses("::1", 8765) == ["[::1]:8765"]
    assert _addresses("0.0.0.0", 8765) == [f"{socket.gethostname()}:8765", "127.0.0.1:8765"]
    assert _addresses("127.0.0.1", 80) == ["127.0.0.1"]


def test_two_sessions_in_one_browser_keep_their_cookies(clustered, tmp_path):  # noqa: F811
    """Cookies are shared by every port of a host: each session's cookie has its own name, so opening
    a second session does not log the first one out (its thumbnails were 403)."""
    import shutil

    stores = []
    for name in ("a", "b"):
        shutil.copytree(clustered[0] / "out", tmp_path / name)
        stores.append(ReviewStore(tmp_path / name))
    app_a, app_b = create_app(stores[0], token="token-a"), create_app(stores[1], token="token-b")
    assert cookie_name("token-a") != cookie_name("token-b")
    with TestClient(app_a, base_url="http://127.0.0.1") as a, TestClient(app_b, base_url="http://127.0.0.1") as b:
        a.get("/?token=token-a")
        b.get("/?token=token-b")
        jar = {**dict(a.cookies), **dict(b.cookies)}  # what the browser holds for 127.0.0.1 after both
        assert len(jar) == 2
        face = stores[0].state.members(sorted(stores[0].state.live_ids())[0])[0]
        for c in (a, b):
            c.cookies.clear()
            c.cookies.update(jar)
            assert c.get("/api/state").status_code == 200
            assert c.get(f"/thumb/{face}").status_code == 200


# ---------------------------------------------------------------- against the real server process


@pytest.fixture
def served(clustered, tmp_path):  # noqa: F811
    """`idcluster review OUT --no-browser` as a real process: (host, port, token)."""
    import shutil

    out = tmp_path / "served"
    shutil.copytree(clustered[0] / "out", out)
    exe = Path(sys.executable).with_name("idcluster")
    proc = subprocess.Popen([str(exe), "review", str(out), "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = next((line.split()[1] for line in proc.stdout if line.startswith("open http")), None)
    if url is None:
        proc.kill()
        pytest.fail(f"review did not start: {proc.stdout.read()}")
    parts = urllib.parse.urlsplit(url)
    yield parts.hostname, parts.port, urllib.parse.parse_qs(parts.query)["token"][0]
    proc.terminate()
    proc.wait(timeout=20)


def raw(host: str, port: int, request: bytes, send_more: int = 0, timeout: float = 20) -> bytes:
    """Send a raw HTTP request (and `send_more` bytes of body after it); the server's answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        if send_more:
            s.sendall(b" " * send_more)
        data = b""
        t0 = time.monotonic()
        while b"\r\n\r\n" not in data and time.monotonic() - t0 < timeout:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_real_server_refuses_a_200_mb_body_without_reading_it(served):
    host, port, token = served
    head = (f"POST /api/action HTTP/1.1\r\nHost: {host}:{port}\r\nX-Review-Token: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {200 * 2**20}\r\n\r\n").encode()
    t0 = time.monotonic()
    answer = raw(host, port, head, send_more=65536)  # 64 KB of the promised 200 MB, then wait for the answer
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - t0 < 10


def test_real_server_answers_only_the_printed_host(served):
    host, port, token = served
    ok = raw(host, port, f"GET /api/state HTTP/1.1\r\nHost: {host}:{port}\r\nX-Review-Token: {token}\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200")
    for other in (f"localhost:{port}", f"rebind.attacker.example:{port}", "127.0.0.1"):
        answer = raw(host, port, f"GET /api/state HTTP/1.1\r\nHost: {other}\r\nX-Review-Token: {token}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 421"), other


def test_cache_dir_points_the_review_at_a_moved_cache(clustered, tmp_path):  # noqa: F811
    """The run's cache moved: the review warns and orders faces by probability; `cache_dir=` where it
    went brings back the distances on the clusterer's scale (a real `idcluster review` process)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(clustered[0] / "out", out)
    report = json.loads((out / "identity_clustering.json").read_text())
    moved = tmp_path / "moved_cache"
    shutil.copytree(report["config"]["cache_dir"], moved)
    report["config"]["cache_dir"] = str(tmp_path / "gone")  # where the run put it: no longer there
    (out / "identity_clustering.json").write_text(json.dumps(report))
    ident = sorted(ReviewStore(out, reconcile=False).state.live_ids())[0]
    want = {k: round(v, 3) for k, v in ReviewStore(out, cache_dir=moved, reconcile=False).member_distances(ident).items()}
    exe = Path(sys.executable).with_name("idcluster")
    seen = {}
    for case, extra in (("missing", []), ("pointed", [f"cache_dir={moved}"])):
        proc = subprocess.Popen([str(exe), "review", str(out), "--no-browser", *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("open http"):
                    break
            url = urllib.parse.urlsplit(lines[-1].split()[1])
            token = urllib.parse.parse_qs(url.query)["token"][0]
            members = json.loads(get(url, token, f"/api/identity/{ident}"))["members"]
            seen[case] = "".join(lines), {m["face"]: m["distance"] for m in members}
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    log, got = seen["missing"]
    assert "face vectors of this run are not in the cache" in log and got != want
    log, got = seen["pointed"]
    assert "not in the cache" not in log and got == want and len(want) >= 3


def get(url, token: str, path: str) -> bytes:
    """The body of GET path from the review server at url."""
    with socket.create_connection((url.hostname, url.port), timeout=20) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nX-Review-Token: {token}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body
