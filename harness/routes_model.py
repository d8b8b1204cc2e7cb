"""What the kit knows about routes: SpacetimeDB's HTTP API (from SPACETIMEDB-FACTS.md) as route families, and a
model of nginx's location selection read from a site configuration (the runbook's file write), so a request's
fate (proxied to the backend, denied, or answered by nginx itself) can be predicted and compared with what the
lab observed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

IDENTITY = "c200" + "ab" * 30  # a well-formed 64-hex identity


@dataclass(frozen=True)
class Family:
    name: str
    method: str
    template: str  # {db}, {identity}, {reducer}

    def path(self, db: str = "stdbc-probe", reducer: str = "add_probe") -> str:
        return self.template.format(db=db, identity=IDENTITY, reducer=reducer)


FAMILIES = [
    Family("identity", "POST", "/v1/identity"),
    Family("identity.websocket-token", "POST", "/v1/identity/websocket-token"),
    Family("identity.public-key", "GET", "/v1/identity/public-key"),
    Family("identity.verify", "GET", "/v1/identity/{identity}/verify"),
    Family("identity.databases", "GET", "/v1/identity/{identity}/databases"),
    Family("database.publish", "POST", "/v1/database"),
    Family("database.publish-named", "PUT", "/v1/database/{db}"),
    Family("database.pre-publish", "POST", "/v1/database/{db}/pre_publish"),
    Family("database.identity", "GET", "/v1/database/{db}/identity"),
    Family("database.delete", "DELETE", "/v1/database/{db}"),
    Family("database.call", "POST", "/v1/database/{db}/call/{reducer}"),
    Family("database.sql", "POST", "/v1/database/{db}/sql"),
    Family("database.logs", "GET", "/v1/database/{db}/logs"),
    Family("database.schema", "GET", "/v1/database/{db}/schema?version=9"),
    Family("database.subscribe", "GET", "/v1/database/{db}/subscribe"),
    Family("ping", "GET", "/v1/ping"),
    Family("health", "GET", "/v1/health"),
    Family("metrics", "GET", "/v1/metrics"),
]
# The documented exposure: open to anyone = identity creation and subscribe; everything that publishes,
# queries, calls, reads logs/schema, deletes or reports on the server must be closed to remote clients.
MUST_BE_OPEN = {"identity", "identity.websocket-token", "database.subscribe"}
# why clients need each open family: what the official TypeScript SDK (npm `spacetimedb` 2.x) does with it
CLIENTS_NEED = {
    "identity": "clients create an identity (POST /v1/identity)",
    "identity.websocket-token": "a returning client of the official SDK exchanges its saved token here first "
                                "(POST /v1/identity/websocket-token) and stops with \"Failed to verify token: "
                                "<status>\" when it fails: every returning SDK client breaks",
    "database.subscribe": "every client connects here (the SDK's websocket)",
}


def closed_but_needed(opened: set[str]) -> list[str]:
    """The families clients need that are not open, each with what breaks (for routes.open-families)."""
    return [f"{name} ({CLIENTS_NEED[name]})" for name in sorted(MUST_BE_OPEN - opened)]
MUST_BE_CLOSED = {f.name for f in FAMILIES if f.name.startswith("database.") and f.name != "database.subscribe"} | {
    "ping", "health", "metrics"}

# On a host the kit may not change, a request that could write is sent so that the server refuses it before any
# handler runs, even when the route is wrongly open: credentials it cannot parse (SpacetimeDB answers 400
# "Authorization is invalid" on every route that reads them). Creating an identity reads no credentials, so an
# identity path is asked with GET instead (the backend's 405 still shows the route reaches it).
HARMLESS_AUTHORIZATION = "Bearer stdbc-harmless not-a-token"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def harmless(method: str, path: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The method and headers to send instead, so the request changes nothing wherever it lands."""
    if method.upper() in READ_METHODS:
        return method, headers
    decoded = unquote(unquote(path)).lower()
    if "identity" in decoded and "database" not in decoded and "websocket-token" not in decoded:
        return "GET", headers
    return method, {**headers, "Authorization": HARMLESS_AUTHORIZATION}


NGINX_ERROR_SIGNATURE = re.compile(r"<center>nginx(/[\d.]+)?( \([^)]*\))?</center>")
BACKEND_HEADER = "access-control-allow-origin"  # set by SpacetimeDB's CORS layer on every routed response


@dataclass
class Location:
    modifier: str  # "", "=", "^~", "~", "~*"
    pattern: str
    proxied: bool
    remote_denied: bool
    line: int
    body: str = field(repr=False, default="")

    def matches(self, uri: str) -> bool:
        if self.modifier == "=":
            return uri == self.pattern
        if self.modifier in ("", "^~"):
            return uri.startswith(self.pattern)
        flags = re.IGNORECASE if self.modifier == "~*" else 0
        return re.search(self.pattern, uri, flags) is not None


def _strip_comments(text: str) -> list[str]:
    return [re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines()]


def parse_locations(site: str) -> list[Location]:
    """Active (uncommented) `location` blocks of an nginx site, in order."""
    lines = _strip_comments(site)
    found: list[Location] = []
    index = 0
    while index < len(lines):
        match = re.match(r"\s*location\s+(=|\^~|~\*|~)?\s*(\S+)\s*\{", lines[index])
        if not match:
            index += 1
            continue
        depth, body, start = 0, [], index
        while index < len(lines):
            depth += lines[index].count("{") - lines[index].count("}")
            body.append(lines[index])
            index += 1
            if depth <= 0:
                break
        text = "\n".join(body)
        found.append(Location(modifier=match.group(1) or "", pattern=match.group(2),
                              proxied=re.search(r"\bproxy_pass\s+\S+", text) is not None,
                              remote_denied=re.search(r"\bdeny\s+all\s*;", text) is not None,
                              line=start + 1, body=text))
    return found


def pattern_names(locations: list[Location]) -> list[str]:
    """Database, reducer and path-segment names chosen against the site's own patterns: the literal words its
    locations look for (`subscribe`, `identity`, `sql`, ...), alone and inside longer names. A request to a closed
    family whose database is named `subscribe` must still be denied: a pattern that is not anchored to the
    route's own segment lets it through. Every name carries `stdbc`, so none is a database anyone has."""
    words: list[str] = []
    for loc in locations:
        text = re.sub(r"\\.|\[[^\]]*\]|\{[^}]*\}", " ", loc.pattern)  # escapes, classes, counts
        for word in re.findall(r"[A-Za-z0-9_-]{2,}", text):
            if word.lower() not in ("v1",) and word not in words:
                words.append(word)
    # the word at the start and at the end of a name no real database or reducer has (the kit's prefix): a
    # pattern that looks for `/subscribe` or `subscribe$` anywhere in the path is fooled by one of them
    return [name for word in words for name in (f"{word}-stdbc", f"stdbc-{word}")]


def normalize(raw_path: str) -> str | None:
    """nginx's view of a request path for location matching: no query, %XX decoded, slashes merged,
    `.` and `..` resolved. None when `..` climbs above the root (nginx answers 400)."""
    if not raw_path.startswith("/"):
        return None  # not an origin-form request target: nginx answers 400
    path = unquote(raw_path.split("?", 1)[0])
    parts: list[str] = []
    segments = re.sub(r"/+", "/", path).split("/")[1:]
    for segment in segments:
        if segment in (".", ""):
            continue
        if segment == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(segment)
    trailing = "/" if segments and segments[-1] in ("", ".", "..") and parts else ""
    return "/" + "/".join(parts) + trailing


def select(locations: list[Location], uri: str) -> Location | None:
    """nginx's choice: exact match; else the longest prefix (final if ^~); else the first matching regex;
    else the longest prefix."""
    for loc in locations:
        if loc.modifier == "=" and loc.matches(uri):
            return loc
    prefixes = [loc for loc in locations if loc.modifier in ("", "^~") and loc.matches(uri)]
    longest = max(prefixes, key=lambda loc: len(loc.pattern)) if prefixes else None
    if longest is not None and longest.modifier == "^~":
        return longest
    for loc in locations:
        if loc.modifier in ("~", "~*") and loc.matches(uri):
            return loc
    return longest


def predict(locations: list[Location], raw_path: str, *, remote: bool = True) -> str:
    """'backend' | 'denied' | 'nginx' (answered by nginx itself) | 'invalid' (400)."""
    uri = normalize(raw_path)
    if uri is None:
        return "invalid"
    loc = select(locations, uri)
    if loc is None:
        return "nginx"
    if loc.remote_denied and remote:
        return "denied"
    return "backend" if loc.proxied else "nginx"


def observed(result: dict) -> str:
    """Who answered, from the response alone: 'backend' (SpacetimeDB's headers or its 426 text), 'denied'
    (nginx's own 403 page), 'nginx' (another nginx-made answer), 'error' (no HTTP answer)."""
    status: int | None = result.get("status")
    if result.get("error") and not status:
        return "error"
    headers = result.get("headers", {})
    body = result.get("body", "")
    if BACKEND_HEADER in headers or "requires use of the websocket protocol" in body:
        return "backend"
    if NGINX_ERROR_SIGNATURE.search(body):
        return {403: "denied", 400: "invalid"}.get(status, "nginx") if status is not None else "nginx"
    if status == 403 and not body:  # HEAD: nginx's 403 without its page
        return "denied"
    if status == 400:
        return "invalid"
    return "backend" if status in (404, 405) and not body.strip() else "nginx"
