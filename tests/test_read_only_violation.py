"""A read-only run that changed the host fails, whatever its checks said, and the reports say what changed."""

from __future__ import annotations

from harness.results import CheckResult, Outcome
from harness.run import read_only_violation
from reports.contract import RunReport
from reports.html import render_html
from reports.markdown import render_markdown

CHANGED = {"equal": False, "changes": ["/etc/nginx/sites-available/spacetimedb: sha256 ab -> cd",
                                       "unit spacetimedb.service: MainPID 10 -> 12"]}


def test_only_a_run_that_may_not_change_the_host_is_held_to_its_digest() -> None:
    assert read_only_violation(CHANGED, mutation_allowed=False) == CHANGED["changes"]
    assert read_only_violation(CHANGED, mutation_allowed=True) == []
    assert read_only_violation({"equal": True, "changes": []}, mutation_allowed=False) == []
    assert read_only_violation({"equal": False, "changes": []}, mutation_allowed=False) == \
        ["the state digest changed"]


def test_a_changed_host_is_its_own_verdict_and_exit_code_and_heads_both_reports() -> None:
    report = RunReport(run_id="r1", backend="ssh", runbook_path="r.md", runbook_sha256="0", profile="default",
                       checks=[CheckResult(id="service.unit-active", suite="service", outcome=Outcome.PASSED)])
    assert report.verdict() == "pass"
    report.host_changed = read_only_violation(CHANGED, mutation_allowed=False)
    assert report.verdict() == "host-changed"
    data = report.to_dict()
    assert data["verdict"] == "host-changed" and data["host_changed"] == CHANGED["changes"]
    from harness.errors import EXIT_HOST_CHANGED, VERDICT_EXIT

    assert VERDICT_EXIT[report.verdict()] == EXIT_HOST_CHANGED == 5
    markdown = render_markdown(data)
    assert "the host changed during a read-only run" in markdown and "MainPID 10 -> 12" in markdown
    assert "The host changed during a read-only run" in render_html(data)
