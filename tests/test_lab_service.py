"""Lab tests (docker): the runbook's own service steps turn every `service` check green, and a broken service
carries the runbook's own troubleshooting output. Both judge runs of the session's one docker selftest
(`service-steps` config: your runbook's Steps 1-2): its baseline, and its `service-exec-start-missing` mutant.
The other service mutants are catalogue entries (harness/selftest/catalogue.toml, tests/test_lab_selftest.py).
Every run must leave no lab resource behind."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import selftest_unit
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def _outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def test_runbook_service_steps_are_green(docker_selftest: dict[str, Any]) -> None:
    unit, out = selftest_unit(docker_selftest, "service-steps.baseline")
    report = unit["conformance"]
    outcomes = _outcomes(report)
    assert len(outcomes) >= 8, "no service checks ran"
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert unit["exit"] == 0 and report["verdict"] == "pass"
    assert (out / "junit.xml").exists() and (out / "transcript.json").exists()
    assert report["spacetimedb"]["implementation"] == "standin"
    assert not leftovers(report["run_id"])


def test_broken_service_carries_the_runbooks_troubleshooting_output(docker_selftest: dict[str, Any]) -> None:
    unit, out = selftest_unit(docker_selftest, "service-steps.g01")
    assert [m["id"] if isinstance(m, dict) else m for m in unit["members"]] == ["service-exec-start-missing"]
    assert "ExecStart=/stdb/spacetimex " in (out / "runbook.md").read_text()  # the mutant's edit was judged
    report = unit["conformance"]
    active = next(c for c in report["checks"] if c["id"] == "service.unit-active")
    assert active["outcome"] == "failed"
    journal = [e for e in active["evidence"] if e["label"].startswith("troubleshooting (runbook's own)")
               and "journalctl -u spacetimedb" in e["command"]]
    assert journal, [e["label"] for e in active["evidence"]]
    assert "203/EXEC" in journal[0]["output"], journal[0]["output"]  # systemd could not exec the binary
    assert any("suggestion" in e["label"] and "chmod" in e["command"] for e in active["evidence"])
    assert not leftovers(report["run_id"])
