"""Verdict rules and the report contract (conformance.json keys, junit.xml shape)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.results import CheckResult, Evidence, Finding, Outcome, Severity, verdict
from reports.contract import RunReport, write_reports


def _check(outcome: Outcome, required: bool = True, cid: str = "service.x") -> CheckResult:
    return CheckResult(id=cid, suite=cid.split(".")[0], outcome=outcome, required=required,
                       evidence=[Evidence(label="cmd", command="true", output="out", status=0)])


@pytest.mark.parametrize(("outcomes", "expected"), [
    ([Outcome.PASSED, Outcome.PASSED], "pass"),
    ([Outcome.PASSED, Outcome.FAILED], "fail"),
    ([Outcome.PASSED, Outcome.NOT_APPLICABLE], "incomplete"),
    ([Outcome.PASSED, Outcome.ERROR], "incomplete"),
    ([Outcome.FAILED, Outcome.NOT_APPLICABLE], "fail"),
    ([], "incomplete"),
])
def test_verdict_from_outcomes(outcomes: list[Outcome], expected: str) -> None:
    assert verdict([_check(o) for o in outcomes], []) == expected


def test_a_failed_check_that_is_not_required_informs_without_failing_the_verdict() -> None:
    """Issue 17: firewall.active is documented as not required, yet its failure failed every run."""
    checks = [_check(Outcome.PASSED), _check(Outcome.FAILED, required=False, cid="firewall.active")]
    assert verdict(checks, []) == "pass"
    assert verdict([*checks, _check(Outcome.FAILED)], []) == "fail"
    warning = Finding(id="runbook.no-effect", severity=Severity.WARNING, summary="w")
    assert verdict(checks, [warning], fail_on="warning") == "fail"  # through its finding, at the chosen threshold


def test_optional_not_applicable_does_not_make_incomplete() -> None:
    checks = [_check(Outcome.PASSED), _check(Outcome.NOT_APPLICABLE, required=False)]
    assert verdict(checks, []) == "pass"


def test_findings_fail_by_severity_threshold() -> None:
    checks = [_check(Outcome.PASSED)]
    warning = Finding(id="runbook.w", severity=Severity.WARNING, summary="w")
    error = Finding(id="runbook.e", severity=Severity.ERROR, summary="e")
    assert verdict(checks, [warning]) == "pass"
    assert verdict(checks, [warning], fail_on="warning") == "fail"
    assert verdict(checks, [error]) == "fail"
    assert verdict(checks, [error], fail_on="never") == "pass"


def _report(**kw) -> RunReport:  # type: ignore[no-untyped-def]
    base = dict(run_id="abcd1234", backend="docker", runbook_path="/x/runbook.md", runbook_sha256="00" * 32,
                profile="default", spacetimedb={"implementation": "standin", "version": "2.8.3"},
                timings={"apply": 12.5, "suite:service": 3.25})
    base.update(kw)
    return RunReport(**base)


def test_conformance_json_has_the_contract_keys(tmp_path: Path) -> None:
    report = _report(checks=[_check(Outcome.PASSED), _check(Outcome.FAILED, cid="tls.y")],
                     findings=[Finding(id="runbook.step-fails-as-written", severity=Severity.ERROR,
                                       summary="boom", runbook_ref={"section": ["Step 1"], "line_start": 3,
                                                                    "line_end": 3})])
    paths = write_reports(report, tmp_path)
    data = json.loads(paths["json"].read_text())
    for key in ("verdict", "backend", "spacetimedb", "runbook", "profile", "checks", "findings", "timings"):
        assert key in data, key
    assert data["verdict"] == "fail"
    assert data["runbook"] == {"path": "/x/runbook.md", "sha256": "00" * 32}
    for check in data["checks"]:
        assert {"id", "suite", "outcome", "runbook_ref", "evidence"} <= set(check)
        assert check["outcome"] in {"passed", "failed", "not-applicable", "error"}
    finding = data["findings"][0]
    assert {"id", "severity", "runbook_ref", "summary", "evidence"} <= set(finding)
    assert data["timings"]["suite:service"] == 3.25


def test_junit_marks_failures_and_not_applicable(tmp_path: Path) -> None:
    report = _report(checks=[_check(Outcome.PASSED), _check(Outcome.FAILED, cid="service.f"),
                             _check(Outcome.NOT_APPLICABLE, cid="mounts.n"), _check(Outcome.ERROR, cid="tls.e")])
    root = ET.parse(write_reports(report, tmp_path)["junit"]).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["service.f"].find("failure") is not None
    assert cases["mounts.n"].find("skipped") is not None
    assert cases["tls.e"].find("error") is not None
    assert cases["service.x"].find("failure") is None


def test_interrupted_or_lab_error_is_never_pass(tmp_path: Path) -> None:
    assert _report(checks=[_check(Outcome.PASSED)], interrupted=True).verdict() == "incomplete"
    assert _report(checks=[_check(Outcome.PASSED)], lab_error="docker down").verdict() == "incomplete"
    assert _report(checks=[_check(Outcome.FAILED)], lab_error="x").verdict() == "fail"
