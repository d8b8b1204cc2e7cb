"""Lab test (docker): Step 5 runs verbatim on the operator machine; every command is reported with its output,
each check's outcome agrees with its command's exit status, and the end-to-end subscribe sees the row; Step 6's
commands are reported verbatim. Both judge the baseline of the session's one docker selftest (`self-hosting`
config, whose suites include operator and upgrade), against the runbook copy that run read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import selftest_unit
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def test_operator_steps_and_end_to_end_subscribe(docker_selftest: dict[str, Any]) -> None:
    unit, out = selftest_unit(docker_selftest, "self-hosting.baseline")
    report = unit["conformance"]
    runbook_text = (out / "runbook.md").read_text()
    checks = {c["id"]: c for c in report["checks"]}
    step_checks = ["operator.server-add", "operator.build", "operator.copy-module", "operator.remote-publish"]
    assert set(step_checks) <= set(checks), sorted(checks)
    for check_id in step_checks:
        check = checks[check_id]
        commands = [e for e in check["evidence"] if e["label"].startswith("operator: ")]
        if not commands:  # not reached: an earlier step failed, and the check says so
            assert check["outcome"] == "failed" and "earlier operator step failed" in check["message"]
            continue
        evidence = commands[0]
        assert evidence["command"] and evidence["command"] in runbook_text.replace(
            "example.com", "stdb.lab.test").replace("<host>", "stdb-target").replace("<database-name>", "conformance")
        assert (evidence["status"] == 0) == (check["outcome"] == "passed"), check
        assert check["runbook_ref"], check
    e2e = checks["operator.subscribe-sees-row"]
    assert e2e["outcome"] == "passed", e2e["message"]
    seen = [e for e in e2e["evidence"] if e["label"] == "messages seen by the subscribed client"]
    assert seen and '"event": "seen"' in seen[0]["output"]
    adaptations = {a["id"] for a in report["adaptations"]}
    assert {"lab.operator-machine", "lab.operator-ssh-key", "lab.sdk-client"} <= adaptations
    sdk = checks["operator.sdk-sees-row"]
    assert sdk["outcome"] == "passed", sdk["message"]
    assert any('"event": "row-seen"' in e["output"] or '"event":"row-seen"' in e["output"] for e in sdk["evidence"])
    assert not leftovers(report["run_id"])


def test_upgrade_steps_are_reported_verbatim(docker_selftest: dict[str, Any]) -> None:
    unit, out = selftest_unit(docker_selftest, "self-hosting.baseline")
    report = unit["conformance"]
    checks = {c["id"]: c for c in report["checks"]}
    assert {"upgrade.stop-service", "upgrade.version-upgrade", "upgrade.service-back"} <= set(checks)
    text = (out / "runbook.md").read_text()
    for check_id in ("upgrade.stop-service", "upgrade.version-upgrade", "upgrade.install-specific-version"):
        check = checks[check_id]
        evidence = [e for e in check["evidence"] if e["label"].startswith("upgrade step: ")]
        assert evidence, check
        assert evidence[0]["command"].replace("2.8.2", "<version-number>") in text
        assert (evidence[0]["status"] == 0) == (check["outcome"] == "passed"), check
    assert not leftovers(report["run_id"])


def test_the_upgrade_rehearsal_moves_the_version_keeps_the_data_and_goes_back(
        docker_selftest: dict[str, Any]) -> None:
    """Issue 16 on docker, from the same baseline (the reference runbook, whose Step 6 works): the version moves to
    the release the mirror published, every row is kept, the downtime is measured from the vantage, and the
    specific-version step takes the host back with its data."""
    unit, out = selftest_unit(docker_selftest, "self-hosting.baseline")
    report = unit["conformance"]
    outcomes = {c["id"]: c["outcome"] for c in report["checks"] if c["suite"] == "upgrade"}
    assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    rehearsal = report["environment"]["scenario_upgrade"]
    assert rehearsal["version_before"] and rehearsal["version_after"] == rehearsal["released"]
    assert rehearsal["version_before"] != rehearsal["version_after"]
    assert rehearsal["version_rolled_back"] == rehearsal["version_before"]
    assert len(set(rehearsal["main_pid"])) == 3  # a new main process after the update and after the way back
    tables = rehearsal["data"]["tables"]
    assert rehearsal["data"]["identical"] and sum(t["rows_after"] for t in tables.values()) >= 10_000
    down = rehearsal["downtime"]
    assert down["samples"] > 2 and down["failed"] > 0 and down["up_at_end"] and down["longest_seconds"] > 0
    assert rehearsal["rollback"]["outcome"] == "worked" and rehearsal["left"]["as_found"]
    assert "## Upgrade rehearsal" in (out / "conformance.md").read_text()
