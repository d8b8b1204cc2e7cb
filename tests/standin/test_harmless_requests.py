"""Issue 27, requests that stay harmless: against a server whose every route is open (the stand-in, no proxy in
front), every request the routes suite sends on a host it may not change, made harmless, changes nothing."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from standin_clients import call

from fixtures.spacetimedb_standin.testing import StandinServer
from harness.routes_model import FAMILIES, HARMLESS_AUTHORIZATION, harmless

# what the generated-requests check does to a path (harness/suites/test_routes.py `mutate`), one of each
VARIANTS = (lambda p: p, str.upper, str.title, lambda p: p + "/", lambda p: p.replace("/", "//", 2),
            lambda p: p.replace("/v1/", "/v1/x/../", 1), lambda p: p[:1] + p[1:].replace("/", "%2F", 1),
            lambda p: p.replace("v", "%76", 1), lambda p: p + "?a=1&token=x")
METHODS = ("POST", "PUT", "DELETE", "PATCH")


def _state(root: Path) -> str:
    """Every file under the server's root dir by path, size and content (its own logs aside)."""
    lines = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "logs" not in path.parts:
            lines.append(f"{path.relative_to(root)} {path.stat().st_size} "
                         f"{hashlib.sha256(path.read_bytes()).hexdigest()}")
    return "\n".join(lines)


def _databases(server: StandinServer, owner: tuple[str, str]) -> object:
    return call(server.url, "GET", f"/v1/identity/{owner[0]}/databases").json()


def _rows(server: StandinServer, database: str, owner: tuple[str, str]) -> object:
    return [r["rows"] for r in call(server.url, "POST", f"/v1/database/{database}/sql", "SELECT * FROM person",
                                     owner[1]).json()]


def test_harmless_requests_change_nothing_on_a_server_with_every_route_open(
        server: StandinServer, database: str, owner: tuple[str, str]) -> None:
    time.sleep(1.5)  # what earlier tests wrote reaches the disk first (the stand-in flushes every 0.5 s)
    before, listed = _state(server.root), _databases(server, owner)
    rows = _rows(server, database, owner)
    sent = 0
    for family in FAMILIES:
        for name in (database, "stdbc-probe"):
            for variant in VARIANTS:
                for method in {family.method, *METHODS}:
                    path = variant(family.path(db=name, reducer="add"))
                    method_sent, headers = harmless(method, path, {"Content-Type": "application/json"})
                    if method_sent not in ("GET", "HEAD", "OPTIONS"):
                        assert headers["Authorization"] == HARMLESS_AUTHORIZATION
                    reply = call(server.url, method_sent, path, "[]" if "sql" not in path else "DELETE FROM person",
                                 headers=headers)
                    sent += 1
                    if method_sent not in ("GET", "HEAD", "OPTIONS"):
                        assert reply.status in (400, 401, 404, 405), (method, path, reply.status, reply.text[:80])
    assert sent > 500
    assert _state(server.root) == before, "a harmless request changed the server's files"
    assert _databases(server, owner) == listed
    assert _rows(server, database, owner) == rows


def test_without_the_transform_the_same_requests_would_change_the_server(
        server: StandinServer, owner: tuple[str, str]) -> None:
    """The test above can fail: unchanged, a DELETE and a POST /v1/identity do change the open server."""
    published = call(server.url, "PUT", "/v1/database/stdbc-harmless-victim", b"""{"tables": [], "reducers": []}""",
                     owner[1])
    assert published.status == 200, published.text
    before = _state(server.root)
    assert call(server.url, "DELETE", "/v1/database/stdbc-harmless-victim", token=owner[1]).status == 200
    assert call(server.url, "POST", "/v1/identity").status == 200
    assert _state(server.root) != before
