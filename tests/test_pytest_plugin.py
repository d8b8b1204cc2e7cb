"""The suite plugin maps pytest outcomes to check outcomes and keeps evidence and runbook refs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SUITE = '''
import pytest
from harness.model import SourceRef

@pytest.mark.check("demo.passes", claim="a passing check")
def test_passes(check):
    check.ref(SourceRef(("Step 2",), 40, 53))
    check.note("observed", "all good", command="echo ok", status=0)

@pytest.mark.check("demo.fails")
def test_fails(check):
    check.note("observed", "bad value")
    assert 1 == 2, "value was 1, expected 2"

@pytest.mark.check("demo.not-applicable", required=True)
def test_na(check):
    check.not_applicable("cannot be proven in a container")

@pytest.mark.check("demo.errors")
def test_errors(check):
    raise RuntimeError("probe crashed")

@pytest.mark.check("demo.plain-skip")
def test_plain_skip(check):
    pytest.skip("no reason given")
'''


def test_outcomes_evidence_and_refs(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_demo=SUITE)
    out = tmp_path / "checks.json"
    pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--checks-out", str(out))
    results = {r["id"]: r for r in json.loads(out.read_text())}
    assert results["demo.passes"]["outcome"] == "passed"
    assert results["demo.passes"]["runbook_ref"] == {"section": ["Step 2"], "line_start": 40, "line_end": 53}
    assert results["demo.passes"]["evidence"][0]["output"] == "all good"
    assert results["demo.passes"]["suite"] == "demo"
    assert results["demo.fails"]["outcome"] == "failed"
    assert "value was 1" in results["demo.fails"]["message"]
    assert results["demo.not-applicable"]["outcome"] == "not-applicable"
    assert results["demo.not-applicable"]["message"] == "cannot be proven in a container"
    assert results["demo.errors"]["outcome"] == "error"
    assert "probe crashed" in results["demo.errors"]["message"]
    # a skip without a not-applicable reason is never silently accepted
    assert results["demo.plain-skip"]["outcome"] == "error"
