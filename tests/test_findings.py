"""Each finding kind appears with the defect and stays silent without it (pairs of small runbooks/evidence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.findings import detect
from harness.planner import build_plan
from harness.results import CheckResult, Evidence, Outcome

SITE = """# Site

## Proxy

    sudo nano /etc/nginx/sites-available/app

Add the following configuration:

    server {{
        listen 80;
        location ~ ^/v1/database/[^/]+/subscribe$ {{
            proxy_pass http://localhost:3000;
        }}
        # location ~ {pattern} {{
        #     proxy_pass http://localhost:3000;
        # }}
    }}

## Firewall

    sudo ufw allow 'Nginx Full'
    sudo ufw reload

## Install

    curl -sSf https://install.example.invalid | sh -s -- --yes
    mytool --version
"""


def _plan(tmp_path: Path, pattern: str = "^/v1/database/[^/]+/sql$"):  # type: ignore[no-untyped-def]
    path = tmp_path / "runbook.md"
    path.write_text(SITE.format(pattern=pattern))
    return build_plan(path, "default")


def _record(plan, contains: str, *, status: str = "ok", exit_status: int = 0, stderr: str = "") -> dict:  # type: ignore[no-untyped-def]
    step = next(s for s in plan.steps if contains in (s.command or ""))
    return {"index": step.index, "status": status,
            "results": [{"command": step.command, "exit_status": exit_status, "stdout": "", "stderr": stderr}]}


def _ids(findings) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(f.id for f in findings)


def test_route_pattern_matching_nothing(tmp_path: Path) -> None:
    with_defect = detect(_plan(tmp_path, "^/v1/[^/]+/sql$"), [], [], {})
    assert _ids(with_defect) == ["runbook.route-pattern-matches-nothing"]
    assert "^/v1/[^/]+/sql$" in with_defect[0].summary and with_defect[0].runbook_ref["line_start"] == 14
    assert detect(_plan(tmp_path, "^/v1/database/[^/]+/sql$"), [], [], {}) == []
    assert "`^/v1/database/[^/]+/sql$`" in with_defect[0].suggestion


@pytest.mark.parametrize("pattern", ["^/v1/database/[a-z0-9]+/sql$", "^/v1/database/[a-z0-9_]+/subscribe$",
                                     "^/v1/database/[0-9a-f]{64}/logs$", "^/v1/database/[a-z]+/call/[a-z_]+$"])
def test_patterns_that_match_real_routes_are_not_flagged(tmp_path: Path, pattern: str) -> None:
    """Issue 17: the one sample name had a hyphen, so `[a-z0-9]+` patterns were said to match nothing."""
    assert detect(_plan(tmp_path, pattern), [], [], {}) == []


@pytest.mark.parametrize(("pattern", "fix"), [("^/v1/db/[^/]+/subscribe$", "^/v1/database/[^/]+/subscribe$"),
                                              ("^/api/sql$", "^/v1/database/[^/]+/sql$"),
                                              ("^/v1/database/[^/]+/call$", "^/v1/database/[^/]+/call/[^/]+$"),
                                              ("^/identity$", "^/v1/identity$")])
def test_the_fix_offered_fits_the_patterns_family(tmp_path: Path, pattern: str, fix: str) -> None:
    found = detect(_plan(tmp_path, pattern), [], [], {})
    assert _ids(found) == ["runbook.route-pattern-matches-nothing"] and f"`{fix}`" in found[0].suggestion


def test_firewall_rule_on_inactive_firewall(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    transcript = [_record(plan, "ufw allow"), _record(plan, "ufw reload")]
    inactive = detect(plan, transcript, [], {"ufw_status": "Status: inactive", "reachable_from_remote": {22: True}})
    assert _ids(inactive) == ["runbook.step-has-no-effect"] * 2
    active = detect(plan, transcript, [], {"ufw_status": "Status: active\n\nTo Action From\n--"})
    assert active == []


def test_command_not_found(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    missing = _record(plan, "mytool", status="failed", exit_status=127,
                      stderr="bash: line 1: mytool: command not found\n")
    found = detect(plan, [missing], [], {})
    assert _ids(found) == ["runbook.command-not-found"] and "mytool" in found[0].summary
    assert detect(plan, [_record(plan, "mytool")], [], {}) == []
    other_failure = _record(plan, "mytool", status="failed", exit_status=2, stderr="mytool: bad flag\n")
    assert detect(plan, [other_failure], [], {}) == []


def test_pipeline_hiding_a_failed_download(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    hidden = _record(plan, "curl -sSf", stderr="curl: (6) Could not resolve host: install.example.invalid\n")
    assert _ids(detect(plan, [hidden], [], {})) == ["runbook.pipeline-hides-failure"]
    assert detect(plan, [_record(plan, "curl -sSf")], [], {}) == []


@pytest.mark.parametrize(("outcome", "required", "expected"), [
    (Outcome.FAILED, True, ["runbook.claim-contradicted"]),
    (Outcome.PASSED, True, []),
    (Outcome.FAILED, False, []),
    (Outcome.NOT_APPLICABLE, True, []),
])
def test_claim_contradicted(tmp_path: Path, outcome: Outcome, required: bool, expected: list[str]) -> None:
    plan = _plan(tmp_path)
    check = CheckResult(id="service.unit-active", suite="service", outcome=outcome, claim="the service is running",
                        required=required, runbook_ref={"section": ["Install"], "line_start": 26, "line_end": 26},
                        evidence=[Evidence(label="is-active", command="systemctl is-active x", output="failed",
                                           status=3)], message="unit is failed, not active")
    assert _ids(detect(plan, [], [check], {})) == expected
