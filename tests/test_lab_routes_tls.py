"""Lab tests (docker): routes and TLS on the runbook as written, and our mutants of it, each turning a named
check red that is green (or at least not red) on the unmodified runbook."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "STDB_ROUTES_EXAMPLES": "40"}


def _run(runbook: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(runbook), "--profile",
                           "self-hosting-only", "--suites", "routes,tls", "--report-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=ENV)
    path = out / "conformance.json"
    assert path.exists(), proc.stderr[-2000:]
    report = json.loads(path.read_text())
    assert not leftovers(report["run_id"])
    return report


def _outcomes(report: dict) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


@pytest.fixture(scope="module")
def baseline(runbook_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(runbook_path, tmp_path_factory.mktemp("baseline"))


def test_unmodified_runbook_routes_and_tls_are_decided_with_evidence(baseline: dict) -> None:
    outcomes = _outcomes(baseline)
    assert sum(i.startswith("routes.") for i in outcomes) >= 8 and sum(i.startswith("tls.") for i in outcomes) >= 7
    for check in baseline["checks"]:
        assert check["outcome"] in ("passed", "failed", "not-applicable"), check
        assert check["evidence"], f"{check['id']} has no evidence"
    generated = next(c for c in baseline["checks"] if c["id"] == "routes.generated-requests")
    assert any(re.search(r"seed \d+", e["output"]) for e in generated["evidence"]), "no hypothesis seed recorded"
    assert outcomes["routes.identity-open"] == "passed" and outcomes["routes.closed-families-403"] == "passed"
    assert outcomes["tls.certificate-valid-for-domain"] == "passed"


def _sub(text: str, pattern: str, replacement: str) -> str:
    new, n = re.subn(pattern, replacement, text, count=1, flags=re.DOTALL)
    assert n == 1, f"mutant pattern {pattern!r} no longer matches the runbook"
    return new


MUTANTS = {
    "location-root-proxied": (lambda t: _sub(t, r"allow 127\.0\.0\.1;\n(\s*)deny all;",
                                             r"proxy_pass http://localhost:3000;"), "routes.closed-families-403"),
    "sql-open-with-real-regex": (lambda t: _sub(t, r"\n(\s*)location /v1/identity \{",
                                                r"\n\1location ~ ^/v1/database/[^/]+/sql$ {\n\1    proxy_pass "
                                                r"http://localhost:3000;\n\1}\n\1location /v1/identity {"),
                                 "routes.closed-families-403"),
    "identity-block-removed": (lambda t: _sub(t, r"\n\s*location /v1/identity \{.*?\n\s*\}\n", "\n"),
                               "routes.identity-open"),
    "certificate-for-another-name": (lambda t: _sub(t, r"sudo certbot --nginx -d example\.com",
                                                    "sudo certbot --nginx -d other.example.com"),
                                     "tls.certificate-valid-for-domain"),
    "tlsv1-enabled": (lambda t: _sub(t, r"(\n(\s*)sudo certbot --nginx -d example\.com\n)",
                                     r"\1\n\2sudo sed -i 's/^ssl_protocols .*/ssl_protocols TLSv1 TLSv1.1 TLSv1.2 "
                                     r"TLSv1.3;/' /etc/letsencrypt/options-ssl-nginx.conf\n\n\2sudo systemctl reload "
                                     r"nginx\n"), "tls.protocols-1.2-1.3-only"),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_turns_named_check_red(name: str, baseline: dict, runbook_path: Path, tmp_path: Path) -> None:
    mutate, red = MUTANTS[name]
    mutant = tmp_path / f"{name}.md"
    mutant.write_text(mutate(runbook_path.read_text()))
    assert _outcomes(baseline).get(red) == "passed", f"{red} is not green on the unmodified runbook"
    report = _run(mutant, tmp_path / "out")
    assert _outcomes(report).get(red) == "failed", f"{name}: {red} is {_outcomes(report).get(red)}"
