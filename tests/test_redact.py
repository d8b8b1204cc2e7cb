"""Secrets planted in a report's evidence never appear in any of the four report files."""

from __future__ import annotations

from pathlib import Path

from harness.redact import MARK, redact, redact_text
from harness.results import CheckResult, Evidence, Finding, Outcome, Severity
from reports.contract import RunReport, write_reports

JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJoZXhfaWRlbnRpdHkiOiJjMjAwIn0.c2lnbmF0dXJlLXBhcnQ"
AKID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"


def planted() -> list[str]:
    return [
        f'{{"identity": "c200", "token": "{JWT}"}}',
        f"Authorization: Bearer {JWT}",
        f"aws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}",
        PEM,
        f"wss://stdb.lab.test/v1/database/x/subscribe?token={JWT}&compression=None",
        f'spacetimedb_token = "{JWT}"',
    ]


def test_no_secret_survives_in_any_report_file(tmp_path: Path) -> None:
    evidence = [Evidence(label=f"planted {i}", command=f"curl -H 'Authorization: Bearer {JWT}'", output=text,
                         status=1) for i, text in enumerate(planted())]
    check = CheckResult(id="routes.identity-open", suite="routes", outcome=Outcome.FAILED, claim="c",
                        runbook_ref={"section": ["S"], "line_start": 1, "line_end": 1}, evidence=evidence,
                        message=f"token {JWT}")
    finding = Finding(id="runbook.x", severity=Severity.ERROR, summary=f"key {AKID}", evidence=evidence)
    report = RunReport(run_id="r", backend="docker", runbook_path="rb.md", runbook_sha256="0" * 64, profile="p",
                       checks=[check], findings=[finding], environment={"token": JWT})
    paths = write_reports(report, tmp_path)
    assert set(paths) == {"json", "junit", "markdown", "html"}
    for path in paths.values():
        text = path.read_text()
        for secret in (JWT, AKID, SECRET, "MIGHAgEAMBMGByqGSM49"):
            assert secret not in text, f"{secret[:12]}... leaked into {path.name}"
        assert MARK in text


def test_redaction_keeps_ordinary_text() -> None:
    text = "identity c200abab, status 200, line 26: sudo systemctl start spacetimedb"
    assert redact_text(text) == text
    assert redact({"token": "", "n": 3, "list": ["plain"]}) == {"token": "", "n": 3, "list": ["plain"]}
