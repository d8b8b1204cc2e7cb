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


def test_the_secrets_a_staging_host_can_print_are_redacted() -> None:
    """What issue 27's review found passing through: basic auth, TOML/env/YAML secrets, passwords, shadow
    hashes, a bare AWS secret key, and a private key cut short by truncation."""
    shadow = "root:$6$Kq2.9x$3tX0v1abcdEFGhijkLMNopqrstUVwxyz0123456789./ABCDEfghij:19000:0:99999:7:::"
    cases = {
        "Authorization: Basic dXNlcjpodW50ZXIy": "dXNlcjpodW50ZXIy",
        'token = "abc123def456"': "abc123def456",
        'api_key: "k-9f8e7d6c5b4a"': "k-9f8e7d6c5b4a",
        "export DB_PASSWORD=hunter2hunter2": "hunter2hunter2",
        '{"password": "correct horse"}': "correct horse",
        shadow: "3tX0v1abcdEFGhijkLMNopqrstUVwxyz0123456789",
        f"the key is {SECRET} here": SECRET,
        PEM.split("\n-----END")[0][:60]: "MIGHAgEAMBMG",
    }
    for text, secret in cases.items():
        out = redact_text(text)
        assert secret not in out and MARK in out, (text, out)
    assert redact_text(shadow).startswith("root:" + MARK + ":19000")
    assert redact({"password": "x1", "Secret": "y2"}) == {"password": MARK, "Secret": MARK}


def test_hashes_and_names_that_look_long_are_kept() -> None:
    kept = ["commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "sha256 " + "ab" * 32,
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s host key", "tokens_issued: 3 of 4",
            "token-file /var/tmp/stdbc-drill/token.json"]
    for text in kept:
        assert redact_text(text) == text, text
