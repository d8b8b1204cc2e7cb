"""report.html renders in headless Chromium; its first screen shows the verdict, the matrix and the findings.

The report is built from a plan of the shared runbook plus check results made for this test (a rendering
test: what is judged is the page, not the host). Skipped without Chromium unless STDB_REQUIRE_BROWSER=1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.findings import route_patterns_matching_nothing
from harness.planner import build_plan
from harness.results import CheckResult, Evidence, Outcome
from reports.contract import RunReport, write_reports

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _report(runbook: Path) -> RunReport:
    from harness.run import _sections

    plan = build_plan(runbook, "default")
    unit = plan.find(path="/etc/systemd/system/spacetimedb.service")[0]
    checks = [
        CheckResult(id="service.unit-active", suite="service", outcome=Outcome.PASSED, claim="the service runs",
                    runbook_ref=unit.ref.to_dict()),
        CheckResult(id="service.restart-always", suite="service", outcome=Outcome.FAILED, claim="Restart=always",
                    runbook_ref=unit.ref.to_dict(), message="systemd did not bring the service back",
                    evidence=[Evidence(label="journal", command="journalctl -u spacetimedb", output="203/EXEC",
                                       status=0)]),
    ]
    return RunReport(run_id="render", backend="docker", runbook_path=str(runbook), runbook_sha256="a" * 64,
                     profile="default", checks=checks, findings=route_patterns_matching_nothing(plan),
                     sections=_sections(plan), timings={"lab_up": 4.1, "apply": 25.7, "suite:service": 4.3},
                     environment={"os": "Ubuntu 24.04 LTS", "kernel": "6.8", "nginx": "nginx/1.24.0",
                                  "certbot": "certbot 2.9.0"},
                     spacetimedb={"implementation": "standin", "version": "2.8.3"})


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("STDB_REQUIRE_BROWSER") == "1":
        pytest.fail("STDB_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def test_first_screen_shows_verdict_matrix_and_findings(runbook_path: Path, tmp_path: Path) -> None:
    browser = _browser_or_skip()
    paths = write_reports(_report(runbook_path), tmp_path / "out")
    html = paths["html"]
    assert "<script" not in html.read_text() and "http://" not in html.read_text().split("<main>")[0]
    profile = tmp_path / "profile"
    shot = tmp_path / "first-screen.png"
    common = [browser, *FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]
    subprocess.run([*common, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000, "no (or an empty) screenshot"
    dom = subprocess.run([*common, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "FAIL" in text.split("Findings")[0], "the verdict is not the first thing on the page"
    first = text[: text.find("Evidence for failed checks")]
    assert "Traceability" in first and "Step 2: Create a Systemd Service" in first
    assert "runbook.route-pattern-matches-nothing" in first
    keep = os.environ.get("STDB_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
