"""The nginx location model and the "who answered" oracle, on the shared runbook's own site (parsed from the
plan's file-write step, not hard-coded) and on small hand-made sites."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.model import StepKind
from harness.planner import build_plan
from harness.routes_model import (
    FAMILIES,
    MUST_BE_CLOSED,
    MUST_BE_OPEN,
    closed_but_needed,
    normalize,
    observed,
    parse_locations,
    pattern_names,
    predict,
    select,
)
from tests.conftest import shared_runbook


@pytest.fixture(scope="module")
def site() -> str:
    plan = build_plan(shared_runbook())
    steps = [s for s in plan.steps if s.kind is StepKind.FILE_WRITE and s.path and "/nginx/" in s.path]
    assert steps, "the shared runbook has no nginx site file write"
    return steps[0].content


def test_runbook_site_active_locations(site: str) -> None:
    locs = parse_locations(site)
    shapes = [(loc.modifier, loc.pattern, loc.proxied, loc.remote_denied) for loc in locs]
    # commented blocks (location / proxied, call, sql) are not active
    assert ("~", "^/v1/database/[^/]+/subscribe$", True, False) in shapes
    assert ("", "/v1/identity", True, False) in shapes
    assert ("", "/", False, True) in shapes
    assert not any("sql" in p or "call" in p for _, p, _, _ in shapes)


def test_runbook_site_family_predictions(site: str) -> None:
    locs = parse_locations(site)
    fate = {f.name: predict(locs, f.path()) for f in FAMILIES}
    assert {n for n, v in fate.items() if v == "backend"} >= MUST_BE_OPEN
    assert all(fate[n] == "denied" for n in MUST_BE_CLOSED)
    # the identity prefix opens the whole /v1/identity/... family, which the runbook's text does not mention
    assert fate["identity.public-key"] == "backend" and fate["identity.websocket-token"] == "backend"


def test_a_site_that_opens_only_the_exact_identity_route_breaks_returning_sdk_clients(site: str) -> None:
    """Issue 17: the official SDK's returning clients call POST /v1/identity/websocket-token before connecting;
    a site with `location = /v1/identity` leaves it closed, and the routes suite must say what breaks."""
    exact = site.replace("location /v1/identity {", "location = /v1/identity {")
    assert exact != site
    locs = parse_locations(exact)
    opened = {f.name for f in FAMILIES if predict(locs, f.path()) == "backend"}
    missing = closed_but_needed(opened)
    assert len(missing) == 1 and missing[0].startswith("identity.websocket-token")
    assert "Failed to verify token" in missing[0]
    assert closed_but_needed({f.name for f in FAMILIES if predict(parse_locations(site), f.path()) == "backend"}) \
        == []


def test_loopback_is_not_proxied_by_the_deny_location(site: str) -> None:
    locs = parse_locations(site)
    # `location / { allow 127.0.0.1; deny all; }` has no proxy_pass: nginx answers loopback itself
    assert predict(locs, "/v1/database/x/sql", remote=False) == "nginx"


@pytest.mark.parametrize("raw,expected", [
    ("/v1/identity", "/v1/identity"),
    ("//v1//identity", "/v1/identity"),
    ("/v1/x/../identity", "/v1/identity"),
    ("/v1/database/a%2Fb/subscribe", "/v1/database/a/b/subscribe"),
    ("/v1/identity?x=1", "/v1/identity"),
    ("/v1/./identity/", "/v1/identity/"),
    ("/..", None),
    ("v1/identity", None),
])
def test_normalize(raw: str, expected: str | None) -> None:
    assert normalize(raw) == expected


def test_selection_order() -> None:
    locs = parse_locations("""
        location / { deny all; }
        location ^~ /static { proxy_pass http://a; }
        location ~ \\.png$ { proxy_pass http://b; }
        location = /exact { deny all; }
        location /v1/identity { proxy_pass http://c; }
    """)
    assert select(locs, "/exact").pattern == "/exact"
    assert select(locs, "/static/x.png").pattern == "/static"  # ^~ stops regex search
    assert select(locs, "/other/x.png").pattern == "\\.png$"  # regex beats a plain prefix
    assert select(locs, "/v1/identityx").pattern == "/v1/identity"  # prefixes are not path-segment bound
    assert predict(locs, "/nothing") == "denied"


def test_regex_subscribe_case_and_suffix() -> None:
    locs = parse_locations("location ~ ^/v1/database/[^/]+/subscribe$ { proxy_pass http://x; }\n"
                           "location / { deny all; }")
    assert predict(locs, "/v1/database/db/subscribe") == "backend"
    assert predict(locs, "/v1/database/db/SUBSCRIBE") == "denied"  # ~ is case-sensitive
    assert predict(locs, "/v1/database/db/subscribe/") == "denied"
    assert predict(locs, "/v1/database/db/subscribe?token=x") == "backend"


def test_observed_oracle() -> None:
    nginx_403 = "<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden</h1></center>" \
                "<hr><center>nginx/1.24.0 (Ubuntu)</center></body></html>"
    assert observed({"status": 403, "headers": {}, "body": nginx_403}) == "denied"
    assert observed({"status": 403, "headers": {"access-control-allow-origin": "*"}, "body": ""}) == "backend"
    assert observed({"status": 426, "headers": {},
                     "body": "This service requires use of the websocket protocol"}) == "backend"
    assert observed({"status": 0, "error": "ConnectionRefusedError"}) == "error"
    assert observed({"status": 404, "headers": {}, "body": nginx_403.replace("403 Forbidden", "404 Not Found")}) \
        == "nginx"


@settings(max_examples=200, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(["v1", "database", "identity", "x", ".", "..", "", "sql", "%2F"]), max_size=8))
def test_normalized_paths_are_canonical(segments: list[str]) -> None:
    raw = "/" + "/".join(segments)
    uri = normalize(raw)
    if uri is not None:
        assert uri.startswith("/") and "//" not in uri
        assert "/../" not in uri + "/" and "/./" not in uri + "/"
        assert normalize(uri) == uri or "%" in raw


def test_names_chosen_against_the_sites_patterns(site: str) -> None:
    names = pattern_names(parse_locations(site))
    # the words the shared runbook's locations look for, at both ends of names no real database has
    assert {"subscribe-stdbc", "stdbc-subscribe", "identity-stdbc"} <= set(names)
    assert all("stdbc" in n and "/" not in n for n in names)
    # an unanchored pattern is fooled by one of them: the sql route of a database named so is proxied
    loose = parse_locations("location ~ /subscribe {\n    proxy_pass http://localhost:3000;\n}\n"
                            "location / {\n    deny all;\n}\n")
    leaking = [n for n in pattern_names(loose) if predict(loose, f"/v1/database/{n}/sql") == "backend"]
    assert leaking == ["subscribe-stdbc"]
    # the runbook's anchored pattern is not
    anchored = parse_locations(site)
    assert all(predict(anchored, f"/v1/database/{n}/sql") != "backend" for n in names)
