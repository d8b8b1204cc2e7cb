"""`stdb-conformance diff A B` on two report directories (no lab): what changed, and its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main


def _report(directory: Path, outcomes: dict[str, str], *, causes: list[dict] | None = None,
            findings: list[dict] | None = None, timings: dict[str, float] | None = None) -> Path:
    directory.mkdir(parents=True)
    (directory / "conformance.json").write_text(json.dumps({
        "run_id": directory.name, "verdict": "fail" if "failed" in outcomes.values() else "pass",
        "counts": {}, "checks": [{"id": c, "outcome": o} for c, o in outcomes.items()],
        "findings": findings or [], "root_causes": causes or [], "timings": timings or {}}))
    return directory


MOUNT = {"line_start": 336, "command": "sudo mount -a", "kind": "broke", "section": ["Backups", "Step 1"]}


def test_a_fix_shows_its_failures_gone_and_no_new_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _report(tmp_path / "a", {"service.unit-active": "failed", "service.sql-from-target": "failed",
                                 "tls.chain": "passed", "firewall.active": "failed"},
                causes=[MOUNT], findings=[{"id": "runbook.claim-contradicted", "summary": "x",
                                           "runbook_ref": {"line_start": 38}}],
                timings={"apply": 30.0, "suite:service": 9.0})
    b = _report(tmp_path / "b", {"service.unit-active": "passed", "service.sql-from-target": "passed",
                                 "tls.chain": "passed", "firewall.active": "failed"},
                timings={"apply": 25.0, "suite:service": 9.2})
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "service.unit-active: failed -> passed" in out and "fixed 2, new failures 0" in out
    assert "root causes gone: 1" in out and "`sudo mount -a` (broke; Step 1)" in out
    assert "findings gone: 1" in out and "apply: 30.0 -> 25.0 (-5.0)" in out
    assert "findings new: 0" in out
    assert "suite:service" not in out  # a change under a second is not listed
    assert out.strip().endswith("B has no new failure")


def test_a_new_failure_is_exit_1_and_json_says_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _report(tmp_path / "a", {"tls.chain": "passed", "mounts.x": "not-applicable"})
    b = _report(tmp_path / "b", {"tls.chain": "error", "routes.new": "failed"})
    assert main(["diff", str(a), str(b), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["new_failures"] == ["routes.new", "tls.chain"] and not data["ok"]
    assert {"check": "mounts.x", "a": "not-applicable", "b": "absent"} in data["changed"]


def test_a_directory_that_is_not_a_report_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = _report(tmp_path / "b", {})
    assert main(["diff", str(tmp_path / "nothing"), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stdb-conformance: error: A ") and "no conformance.json" in err and "\n" not in err
