"""Suite `routes`: what the nginx site exposes, proven from the remote vantage (never the target's loopback).

Who answered is decided from evidence the backend leaves (SpacetimeDB's CORS headers on every routed
response, its 426 text) versus nginx's own error page, never from the status code alone. Expectations
come from the kit's knowledge of the API (harness/routes_model.py) and from the site file the runbook
writes, parsed into nginx's location-selection rules.

The vantage (`remote`: the lab client container, this machine, or an ssh host) reaches the site as the run
state says (`site`: the domain, the address it is pinned to, the trust bundle); every connection argument
comes from harness.vantage, and each check records which vantage it observed from.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fixtures.conformance_db import PROBE_MODULE, probe_database_or_not_applicable
from harness.model import Plan, Step, StepKind
from harness.probe_client import ProbeSession
from harness.pytest_plugin import NOT_APPLICABLE_PREFIX, CheckRecorder
from harness.routes_model import (
    FAMILIES,
    MUST_BE_CLOSED,
    MUST_BE_OPEN,
    Family,
    closed_but_needed,
    harmless,
    observed,
    parse_locations,
    pattern_names,
    predict,
)
from harness.run_state import RunState
from harness.sdk_checks import SdkUnavailable, bindings_for, sdk_command, sdk_events
from harness.sdk_checks import failure as sdk_failure
from harness.tape import current
from harness.targets.base import Target
from harness.vantage import Site, Vantage, agent_command, agent_flags, fallback_trust

HYPOTHESIS_EXAMPLES = int(os.environ.get("STDB_ROUTES_EXAMPLES", "150"))
HYPOTHESIS_SECONDS = 120.0


# what the checks marked `mutates` change on the host (they run only where the kit may change it)
LOOPBACK_POST_CHANGES = "sends POST requests (e.g. POST /v1/database) to the server on the host's loopback"


def _site_step(plan: Plan) -> Step | None:
    steps = [s for s in plan.steps if s.kind is StepKind.FILE_WRITE and s.path and "/nginx/" in s.path]
    return steps[0] if steps else None


@pytest.fixture(scope="session")
def locations(plan: Plan) -> list:
    step = _site_step(plan)
    if step is None:
        pytest.skip(NOT_APPLICABLE_PREFIX + "the runbook writes no nginx site")
    return parse_locations(step.content)


@pytest.fixture(scope="session")
def trusted(run_state: RunState) -> str:
    """A run state without `site` (older run flow): the lab client trusts the ACME CA that issued the
    certificate through its system store (adaptation), as before. With `site`, its ca_file is the trust."""
    return current().value("routes.trusted", lambda: fallback_trust(run_state))


@pytest.fixture(scope="session")
def probe(remote: Vantage, site: Site, trusted: str) -> Iterator[ProbeSession]:
    made = current().new("probe", lambda: ProbeSession(remote, max_requests=HYPOTHESIS_EXAMPLES * 4 + 400,
                                                       agent_args=agent_flags(site, remote)))
    with made as session:
        yield session


def _vantage(check: CheckRecorder, remote: Vantage) -> None:
    check.note("vantage", remote.describe())


# set per module from the run state: on a host the kit may not change, every request is made harmless
_HARMLESS = {"on": False}


@pytest.fixture(autouse=True, scope="module")
def _harmless_requests(run_state: RunState) -> Iterator[None]:
    _HARMLESS["on"] = not run_state.mutation_allowed
    yield
    _HARMLESS["on"] = False


def _request(site: Site, probe: ProbeSession, method: str, path: str, *, scheme: str = "https",
             body: str = "", headers: dict | None = None) -> dict:
    headers = dict(headers or {})
    if _HARMLESS["on"]:
        method, headers = harmless(method, path, headers)
    if method in ("POST", "PUT") and "sql" in path:
        body = body or "SELECT * FROM probe"
    elif method in ("POST", "PUT"):
        body = body or "[]"
        headers.setdefault("Content-Type", "application/json")
    # the TCP address and the trust come from the agent's flags (--connect, --cafile): see `probe`
    return probe.send({"scheme": scheme, "host": site.domain, "port": 443 if scheme == "https" else 80,
                       "server_name": site.domain, "method": method, "path": path, "body": body,
                       "headers": headers, "timeout": 10, "cafile": None})


@contextmanager
def _examples_from_the_seed_alone() -> Iterator[None]:
    """Hypothesis also draws strings from the constants of every local module imported so far, so the same seed
    gives other examples in a process that imported other modules (a run judged again from its tape imports no
    lab code). Without that pool the examples depend on the seed alone."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # a Hypothesis without the module: nothing to pin
        yield
        return
    real = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if real is None or not hasattr(providers, "Constants"):
        yield
        return
    empty = providers.Constants()
    providers._get_local_constants = lambda: empty
    if cache is not None:
        cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = real
        if cache is not None:
            cache.cache.clear()


def _line(family: Family | str, result: dict, who: str) -> str:
    name = family.name if isinstance(family, Family) else family
    cors = "cors" if "access-control-allow-origin" in result.get("headers", {}) else "-"
    return f"{name:28} {result.get('status')!s:>4} {who:8} {cors:5} {result.get('error', '')[:60]}"


@pytest.mark.check("routes.identity-open", mutates="POST /v1/identity creates an identity on the server",
                   claim="POST /v1/identity from remote returns an identity and token from the backend")
def test_identity_open(site, remote, probe, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    result = _request(site, probe, "POST", "/v1/identity")
    check.note("POST https://DOMAIN/v1/identity from the client", _redact_token(result), status=result.get("status"))
    assert observed(result) == "backend", f"the answer did not come from the backend ({result.get('status')})"
    assert result["status"] == 200, f"status {result['status']}"
    data = json.loads(result["body"])
    assert len(data.get("identity", "")) == 64 and data.get("token", "").count(".") == 2, "no identity/token"


def _redact_token(result: dict) -> dict:
    shown = dict(result)
    try:
        data = json.loads(shown.get("body", ""))
        if isinstance(data, dict) and "token" in data:
            data["token"] = data["token"][:12] + "...(redacted)"
            shown["body"] = json.dumps(data)
    except ValueError:
        pass
    return shown


@pytest.mark.check("routes.subscribe-websocket", claim="a websocket to /v1/database/<db>/subscribe with "
                                                       "v1.json.spacetimedb upgrades (101), echoes the protocol "
                                                       "and delivers IdentityToken first")
def test_subscribe_websocket(site, remote, trusted, target, run_state, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    database = probe_database_or_not_applicable(target, run_state, check)
    # a database the operator named has no table the kit knows: subscribe to nothing (IdentityToken still comes)
    query = f"SELECT * FROM {database.table}" if database.table else ""
    res = check.run(remote, agent_command(remote, "ws_subscribe.py", [
        f"wss://{site.domain}/v1/database/{database.name}/subscribe", query, "--until", "IdentityToken",
        "--timeout", "20", *agent_flags(site, remote)]), label="wss subscribe from the vantage")
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    upgrade: dict[str, Any] = next((e for e in events if e.get("event") in ("upgraded", "refused")), {})
    assert upgrade.get("status") == 101, f"no upgrade: {upgrade.get('status_line', res.stderr.strip()[-200:])}"
    assert upgrade.get("protocol") == "v1.json.spacetimedb", f"protocol not echoed: {upgrade.get('protocol')}"
    first: dict[str, Any] = next((e for e in events if e.get("event") == "message"), {})
    assert first.get("kind") == "IdentityToken", f"first message is {first.get('kind')}"


SDK_CALL_CHANGES = "one SDK client calls the probe module's reducer over its websocket: a row is inserted"
SdkSessions = dict[bool, tuple[dict[str, dict[str, Any]], str]]


@pytest.fixture(scope="session")
def sdk_sessions() -> SdkSessions:
    """The SDK client's runs of this session, by whether it called the reducer."""
    return {}


def _sdk_session(check: CheckRecorder, sessions: SdkSessions, remote: Any, site: Site, target: Any,
                 run_state: RunState, *, call_reducer: bool) -> dict[str, dict[str, Any]]:
    """Run the official SDK client from the vantage once per kind (with or without the reducer call) and return
    its steps; later checks reuse the recorded steps (their evidence says so). Raises for the check's outcome:
    not-applicable where this kind of vantage has no SDK, an error where the kit's own SDK is missing."""
    if call_reducer in sessions:
        events, command = sessions[call_reducer]
        check.note("the official SDK client's steps (the session an earlier check ran)", list(events.values()),
                   command=command)
        return events
    database = probe_database_or_not_applicable(target, run_state, check)
    try:
        prefix = remote.sdk_client()
    except NotImplementedError as exc:
        check.not_applicable(str(exc))
    except SdkUnavailable as exc:
        raise RuntimeError(f"the kit's official SDK client cannot run: {exc}") from None
    bindings = bindings_for(PROBE_MODULE, database.table) if database.table else None
    flags = agent_flags(site, remote)
    connect = flags[flags.index("--connect") + 1] if "--connect" in flags else ""
    command = sdk_command(prefix, url=f"https://{site.domain}", database=database.name, bindings=bindings,
                          call_reducer=call_reducer, connect=connect, ca_file=remote.ca_path())
    res = check.run(remote, command, timeout=60, label="the official SDK client from the vantage")
    events = sdk_events(res.stdout)
    if "error" not in events and "timeout" not in events and res.exit_status not in (0, 1, 3):
        events["error"] = {"event": "error", "step": "start", "message": sdk_failure(events, res.exit_status,
                                                                                       res.stderr)}
    sessions[call_reducer] = (events, command)
    return events


def _sdk_check(check: CheckRecorder, sessions: SdkSessions, remote: Any, site: Site, target: Any,
               run_state: RunState, plan: Plan, *, call_reducer: bool) -> dict[str, dict[str, Any]]:
    """What every SDK check starts with: its runbook step, its vantage, the SDK client's steps."""
    check.ref(_site_step(plan))
    _vantage(check, remote)
    return _sdk_session(check, sessions, remote, site, target, run_state, call_reducer=call_reducer)


def _sdk_step(events: dict[str, dict[str, Any]], step: str, stderr: str = "") -> dict[str, Any]:
    if step not in events:
        raise AssertionError(sdk_failure(events, None, stderr))
    return events[step]


@pytest.mark.check("routes.sdk-subscribe", claim="the official TypeScript SDK connects from remote through the "
                                                 "proxy and TLS (v2/v3 BSATN), gets its identity, subscribes and "
                                                 "receives the table's rows")
def test_sdk_subscribe(site, remote, trusted, target, run_state, sdk_sessions, plan: Plan,
                       check: CheckRecorder) -> None:
    events = _sdk_check(check, sdk_sessions, remote, site, target, run_state, plan, call_reducer=False)
    connected = _sdk_step(events, "connected")
    assert len(str(connected.get("identity", ""))) == 64, f"no identity in {connected}"
    applied = _sdk_step(events, "applied")
    if applied.get("rows") is None:
        check.note("a database the operator named: no table the kit knows, so no subscription was made")


@pytest.mark.check("routes.sdk-returning-client", claim="a returning SDK client with a saved token connects: the "
                                                        "SDK exchanges it at POST /v1/identity/websocket-token, "
                                                        "then opens the websocket, and keeps its identity")
def test_sdk_returning_client(site, remote, trusted, target, run_state, sdk_sessions, plan: Plan,
                              check: CheckRecorder) -> None:
    events = _sdk_check(check, sdk_sessions, remote, site, target, run_state, plan, call_reducer=False)
    _sdk_step(events, "connected")
    returning = _sdk_step(events, "returning")
    assert returning.get("same_identity") is True, f"the returning client got another identity: {returning}"


@pytest.mark.check("routes.sdk-reducer-roundtrip", mutates=SDK_CALL_CHANGES,
                   claim="a reducer called by one SDK client over its websocket inserts a row that a second SDK "
                         "client's subscription receives, all from remote")
def test_sdk_reducer_roundtrip(site, remote, trusted, target, run_state, sdk_sessions, plan: Plan,
                               check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    database = probe_database_or_not_applicable(target, run_state, check)
    if not database.table:
        check.not_applicable("a database the operator named: the kit knows none of its reducers")
    events = _sdk_session(check, sdk_sessions, remote, site, target, run_state, call_reducer=True)
    _sdk_step(events, "row-seen")


@pytest.mark.check("routes.subscribe-plain-get-426", claim="a plain GET to /subscribe through the proxy gets the "
                                                           "backend's 426, not an nginx answer")
def test_subscribe_plain_get(site, remote, probe, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    result = _request(site, probe, "GET", "/v1/database/stdbc-probe/subscribe")
    check.note("plain GET https://DOMAIN/v1/database/stdbc-probe/subscribe", result, status=result.get("status"))
    assert result.get("status") == 426 and observed(result) == "backend", (
        f"expected the backend's 426, got {result.get('status')} from {observed(result)}")


EVIDENCE_USED = ("answered by: 'backend' = the response carries SpacetimeDB's CORS header "
                 "(access-control-allow-origin, set by its CORS layer on every /v1 route; stand-in and real server) "
                 "or its 426 websocket text; 'denied' = nginx's own 403 page (<center>nginx...</center>); the status "
                 "code alone is never used")


def _families(site: Site, probe: ProbeSession, scheme: str) -> dict[str, dict]:
    return {f.name: _request(site, probe, f.method, f.path(), scheme=scheme) for f in FAMILIES}


@pytest.mark.check("routes.closed-families-403", claim="publish, sql, call, logs, schema, delete, ping, health, "
                                                      "metrics and the rest of the database API get nginx's 403 "
                                                      "from remote and never reach the backend")
def test_closed_families(site, remote, probe, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    check.note("evidence used", EVIDENCE_USED)
    leaks = []
    for scheme in ("https", "http"):
        results = _families(site, probe, scheme)
        lines = []
        for family in FAMILIES:
            if family.name not in MUST_BE_CLOSED:
                continue
            result, who = results[family.name], observed(results[family.name])
            lines.append(_line(family, result, who))
            ok = who == "denied" if scheme == "https" else who != "backend"
            if not ok:
                leaks.append(f"{scheme} {family.method} {family.path()} -> {result.get('status')} ({who})")
        check.note(f"closed families over {scheme} (family, status, answered by, backend CORS header)",
                   "\n".join(lines))
    assert not leaks, "reachable or not denied from remote: " + "; ".join(leaks)


def _data(family: Family) -> str:
    return "-d 'SELECT 1'" if family.method in ("POST", "PUT") else ""


def _curl_each(target: Target, commands: list[str], seconds_each: float = 5.0) -> list[str]:
    """Each command's output (bytes kept: curl's CRLFs), all sent to the target in one round trip."""
    script = "; ".join(f"printf '{i} '; ({command}) | base64 -w0; echo" for i, command in enumerate(commands))
    res = target.run(script, timeout=20 + len(commands) * (seconds_each + 1))
    found: dict[int, str] = {}
    for line in res.stdout.splitlines():
        index, _, encoded = line.partition(" ")
        if index.isdigit():
            found[int(index)] = base64.b64decode(encoded).decode(errors="replace")
    return [found.get(i, "") for i in range(len(commands))]


def _curl_result(output: str) -> dict:
    """`curl -s -i` output as the probe agent's result shape (status, lowercased headers, body)."""
    head = output.split("\r\n\r\n", 1)
    first = head[0].splitlines()[0].split() if output else []
    return {"status": int(first[1]) if len(first) > 1 and first[1].isdigit() else 0,
            "headers": {k.strip().lower(): v for k, _, v in (line.partition(":") for line in head[0].splitlines()[1:])},
            "body": head[1] if len(head) > 1 else ""}


@pytest.mark.check("routes.denials-come-from-the-proxy", mutates=LOOPBACK_POST_CHANGES,
                   claim="the 403s come from the proxy rule: the same "
                                                                "requests reach a live backend on the target's "
                                                                "127.0.0.1:3000")
def test_denials_from_proxy(target, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    lines, dead = [], []
    closed = [family for family in FAMILIES if family.name in MUST_BE_CLOSED]
    answers = _curl_each(target, [f"curl -s -i --max-time 5 -X {family.method} {_data(family)} "
                                  f"http://127.0.0.1:3000{shlex.quote(family.path())} | head -c 600"
                                  for family in closed])
    for family, answer in zip(closed, answers, strict=True):
        reached = observed(_curl_result(answer)) == "backend"
        lines.append(f"{family.name:28} {answer.splitlines()[0] if answer else '(no answer)'}"
                     f" {'backend' if reached else '-'}")
        if not reached:
            dead.append(family.name)
    check.note("the same requests sent directly to the backend on the target's loopback", "\n".join(lines))
    assert not dead, f"the backend did not answer directly for: {', '.join(dead)}"


@pytest.mark.check("routes.loopback-through-proxy-reaches-backend", mutates=LOOPBACK_POST_CHANGES,
                   claim="from the target itself the closed routes go through nginx to the backend "
                         "(the site's `allow 127.0.0.1` rule: \"Only localhost can use these routes\")")
def test_loopback_through_proxy(site, target, locations, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    rows, failures = [], []
    closed = [family for family in FAMILIES if family.name in MUST_BE_CLOSED]
    answers = _curl_each(target, [f"curl -s -i -k --max-time 5 --resolve {site.domain}:443:127.0.0.1 "
                                  f"-X {family.method} {_data(family)} "
                                  f"https://{site.domain}{shlex.quote(family.path())} | head -c 800"
                                  for family in closed])
    for family, answer in zip(closed, answers, strict=True):
        status_line = answer.splitlines()[0] if answer else "(no answer)"
        result = _curl_result(answer)
        who = observed(result)
        rows.append(f"{family.name:28} {status_line:30} answered by {who}; "
                    f"model: {predict(locations, family.path(), remote=False)}")
        if who != "backend":
            failures.append(f"{family.name} ({status_line}, {who})")
    check.note("closed routes requested through nginx from the target's own loopback", "\n".join(rows),
               command=f"curl -k --resolve {site.domain}:443:127.0.0.1 https://{site.domain}/...")
    assert not failures, ("from 127.0.0.1 these routes do not reach the backend through nginx (the allowing "
                          "location has no proxy_pass?): " + "; ".join(failures))


@pytest.mark.check("routes.open-families", claim="exactly the route families the site's locations proxy are "
                                                 "open from remote (identity and subscribe documented)")
def test_open_families(site, remote, probe, locations, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_site_step(plan))
    _vantage(check, remote)
    check.note("evidence used", EVIDENCE_USED)
    results = _families(site, probe, "https")
    rows, mismatches, opened = [], [], []
    for family in FAMILIES:
        who, expected = observed(results[family.name]), predict(locations, family.path())
        rows.append(_line(family, results[family.name], who) + f" model={expected}")
        if who == "backend":
            opened.append(family.name)
        if (who == "backend") != (expected == "backend"):
            mismatches.append(f"{family.name}: observed {who}, the site says {expected}")
    beyond = sorted(set(opened) - MUST_BE_OPEN)
    check.note("route families from remote over https", "\n".join(rows))
    check.note("open families", json.dumps({"open": opened, "documented_open": sorted(MUST_BE_OPEN),
                                            "open_beyond_documented": beyond}, indent=1))
    missing = closed_but_needed(set(opened))
    assert not mismatches, "the proxy does not behave as its configuration says: " + "; ".join(mismatches)
    assert not missing, f"routes clients need are closed: {'; '.join(missing)}"


@pytest.mark.check("routes.generated-requests", claim="generated paths, methods and encodings reach the backend "
                                                      "only where the site's locations proxy them; all else is "
                                                      "denied (property-based, bounded, seed recorded)")
def test_generated_requests(site, remote, probe, locations, plan: Plan, check: CheckRecorder) -> None:
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    check.ref(_site_step(plan))
    _vantage(check, remote)
    run_seed = current().value("routes.hypothesis-seed", lambda: int(os.environ.get("STDB_HYPOTHESIS_SEED")
                                                                    or int(time.time() * 1000) % (2**31)))
    check.note("hypothesis", f"seed {run_seed} (replay: STDB_HYPOTHESIS_SEED={run_seed}), at most "
                             f"{HYPOTHESIS_EXAMPLES} examples and {HYPOTHESIS_SECONDS:.0f} s")
    started = time.monotonic()
    history: list[dict] = []
    segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)

    def mutate(path: str, kind: str, extra: str, n: int) -> str:
        if kind == "case":
            return path.upper() if n % 2 else path.title()
        if kind == "slash":
            return path + "/"
        if kind == "double":
            return path.replace("/", "//", 1 + n % 3)
        if kind == "dot":
            return path.replace("/v1/", f"/v1/{extra}/../", 1)
        if kind == "encoded":
            return path[:1] + path[1:].replace("/", "%2F", 1 + n % 3) if n % 2 else path.replace("v", "%76", 1)
        if kind == "query":
            return path + f"?{extra}=1&token=x"
        if kind == "long":
            return path + "/" + (extra * 400)[: 200 + 40 * n]
        if kind == "prefix":
            return f"/{extra}" + path
        if kind == "suffix":
            return path + extra
        return path

    chosen = pattern_names(locations)  # names that contain what the site's location patterns look for
    check.note("names chosen against the site's patterns", ", ".join(chosen) or "(the site has no literal patterns)")
    names = st.one_of(segment, st.sampled_from(chosen)) if chosen else segment
    # every closed family once with each chosen name as its database (and reducer): bounded, deterministic
    leaks = []
    for family in (f for f in FAMILIES if f.name in MUST_BE_CLOSED and "{" in f.template):
        for name in chosen:
            path = family.path(db=name, reducer=name)
            result = _request(site, probe, family.method, path)
            who = observed(result)
            history.append({"method": family.method, "path": path[:160], "status": result.get("status"),
                            "observed": who, "expected": predict(locations, path), "family": family.name})
            if who == "backend":
                leaks.append(f"{family.method} {path}")

    families = st.sampled_from(FAMILIES)
    kinds = st.sampled_from(["none", "case", "slash", "double", "dot", "encoded", "query", "long", "prefix",
                             "suffix"])
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])

    @seed(run_seed)
    @settings(max_examples=HYPOTHESIS_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(families, kinds, names, st.integers(0, 9), methods, names, names)
    def prop(family: Family, kind: str, extra: str, n: int, method: str, db: str, reducer: str) -> None:
        if time.monotonic() - started > HYPOTHESIS_SECONDS:
            return
        path = mutate(family.path(db=db, reducer=reducer), kind, extra, n)
        result = _request(site, probe, method, path)
        who, expected = observed(result), predict(locations, path)
        history.append({"method": method, "path": path[:160], "status": result.get("status"), "observed": who,
                        "expected": expected, "family": family.name})
        if family.name in MUST_BE_CLOSED and kind in ("none", "query"):
            # the path is still that family's route for the server: whatever the site's patterns say, a closed
            # family must never reach it
            assert who != "backend", (f"{method} {path[:120]}: the closed route family {family.name} reached the "
                                      f"backend (a location pattern lets this name through)")
        if expected == "backend":
            assert who == "backend", f"{method} {path[:120]}: expected the backend, got {who}"
        elif expected == "denied":
            assert who == "denied", f"{method} {path[:120]}: expected nginx's 403, got {result.get('status')} {who}"
        else:
            assert who != "backend", f"{method} {path[:120]}: reached the backend"

    try:
        assert not leaks, (f"closed route families reached the backend with names the site's location patterns "
                           f"look for: {'; '.join(leaks[:6])}{' ...' if len(leaks) > 6 else ''}")
        with _examples_from_the_seed_alone():
            prop()
    except ExceptionGroup as group:  # several distinct falsifying examples: report them all as the failure
        raise AssertionError("; ".join(str(e).splitlines()[0] for e in group.exceptions)) from None
    finally:
        summary: dict[str, int] = {}
        for item in history:
            key = f"expected {item['expected']} / observed {item['observed']} / {item['status']}"
            summary[key] = summary.get(key, 0) + 1
        check.note("generated requests (counts)", json.dumps(summary, indent=1, sort_keys=True))
        check.note("generated requests (last 15)", "\n".join(
            f"{h['method']:7} {h['status']!s:>4} {h['observed']:8} {h['path']}" for h in history[-15:]))
