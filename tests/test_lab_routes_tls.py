"""Lab tests (docker): routes and TLS are decided with evidence. They judge the baseline of the session's one
docker selftest (`self-hosting` config: the Self-hosting part of the shared runbook with its known defects
fixed, harness/selftest/runbooks/self-hosting-reference.md), so they cost no lab run of their own. The routes
and TLS mutants, each turning a named check red, are catalogue entries (tests/test_lab_selftest.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import selftest_unit
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def test_routes_and_tls_are_decided_with_evidence(docker_selftest: dict[str, Any]) -> None:
    unit, _ = selftest_unit(docker_selftest, "self-hosting.baseline")
    baseline = unit["conformance"]
    outcomes = {c["id"]: c["outcome"] for c in baseline["checks"]}
    assert sum(i.startswith("routes.") for i in outcomes) >= 8 and sum(i.startswith("tls.") for i in outcomes) >= 7
    for check in baseline["checks"]:
        assert check["outcome"] in ("passed", "failed", "not-applicable"), check
        assert check["evidence"], f"{check['id']} has no evidence"
    generated = next(c for c in baseline["checks"] if c["id"] == "routes.generated-requests")
    assert any(re.search(r"seed \d+", e["output"]) for e in generated["evidence"]), "no hypothesis seed recorded"
    assert outcomes["routes.identity-open"] == "passed" and outcomes["routes.closed-families-403"] == "passed"
    # the official SDK from the remote client: connect, subscribe, returning client, reducer round trip
    sdk = {i: o for i, o in outcomes.items() if i.startswith("routes.sdk-")}
    assert sdk == dict.fromkeys(("routes.sdk-subscribe", "routes.sdk-returning-client",
                                 "routes.sdk-reducer-roundtrip"), "passed"), sdk
    assert outcomes["tls.certificate-valid-for-domain"] == "passed"
    assert not leftovers(baseline["run_id"])
