"""Lab test (docker): Step 5 runs verbatim on the operator machine; every command is reported with its output,
each check's outcome agrees with its command's exit status, and the end-to-end subscribe sees the row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent


def test_operator_steps_and_end_to_end_subscribe(runbook_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(runbook_path), "--profile",
                           "self-hosting-only", "--suites", "operator", "--report-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "conformance.json").read_text())
    checks = {c["id"]: c for c in report["checks"]}
    step_checks = ["operator.server-add", "operator.build", "operator.copy-module", "operator.remote-publish"]
    assert set(step_checks) <= set(checks), (sorted(checks), proc.stderr[-1500:])
    for check_id in step_checks:
        check = checks[check_id]
        commands = [e for e in check["evidence"] if e["label"].startswith("operator: ")]
        if not commands:  # not reached: an earlier step failed, and the check says so
            assert check["outcome"] == "failed" and "earlier operator step failed" in check["message"]
            continue
        evidence = commands[0]
        assert evidence["command"] and evidence["command"] in runbook_path.read_text().replace(
            "example.com", "stdb.lab.test").replace("<host>", "stdb-target").replace("<database-name>", "conformance")
        assert (evidence["status"] == 0) == (check["outcome"] == "passed"), check
        assert check["runbook_ref"], check
    e2e = checks["operator.subscribe-sees-row"]
    assert e2e["outcome"] == "passed", e2e["message"]
    seen = [e for e in e2e["evidence"] if e["label"] == "messages seen by the subscribed client"]
    assert seen and '"event": "seen"' in seen[0]["output"]
    adaptations = {a["id"] for a in report["adaptations"]}
    assert {"lab.operator-machine", "lab.operator-ssh-key"} <= adaptations
    assert not leftovers(report["run_id"])


def test_upgrade_steps_are_reported_verbatim(runbook_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(runbook_path), "--profile",
                    "self-hosting-only", "--suites", "upgrade", "--report-dir", str(out)],
                   cwd=REPO, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "conformance.json").read_text())
    checks = {c["id"]: c for c in report["checks"]}
    assert {"upgrade.stop-service", "upgrade.version-upgrade", "upgrade.service-back"} <= set(checks)
    text = runbook_path.read_text()
    for check_id in ("upgrade.stop-service", "upgrade.version-upgrade", "upgrade.install-specific-version"):
        check = checks[check_id]
        evidence = [e for e in check["evidence"] if e["label"].startswith("upgrade step: ")]
        assert evidence, check
        assert evidence[0]["command"].replace("2.8.2", "<version-number>") in text
        assert (evidence[0]["status"] == 0) == (check["outcome"] == "passed"), check
    assert not leftovers(report["run_id"])
