"""Lab tests (docker): the runbook's own service steps turn every `service` check green, and each of our
mutants of the runbook turns a named `service` check red. Every run must leave no lab resource behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
SERVICE_ONLY = REPO / "tests" / "profiles" / "service-only.toml"


def _run(runbook: Path, report_dir: Path, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(runbook), "--profile",
                           str(SERVICE_ONLY), "--suites", "service", "--report-dir", str(report_dir), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    report_path = report_dir / "conformance.json"
    assert report_path.exists(), f"no report written (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return proc.returncode, json.loads(report_path.read_text())


def _outcomes(report: dict) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def test_runbook_service_steps_are_green(runbook_path: Path, tmp_path: Path) -> None:
    code, report = _run(runbook_path, tmp_path / "out")
    outcomes = _outcomes(report)
    assert outcomes, "no service checks ran"
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert code == 0 and report["verdict"] == "pass"
    assert (tmp_path / "out" / "junit.xml").exists() and (tmp_path / "out" / "transcript.json").exists()
    assert report["spacetimedb"]["implementation"] == "standin"
    assert not leftovers(report["run_id"])


# (name, text replaced in the runbook, replacement, check that must go red)
MUTANTS = [
    ("user-root", "User=spacetimedb", "User=root", "service.runs-as-dedicated-user"),
    ("listen-all", "--listen-addr='127.0.0.1:3000'", "--listen-addr='0.0.0.0:3000'",
     "service.listens-on-loopback-only"),
    ("restart-no", "Restart=always", "Restart=no", "service.restart-always"),
    ("not-enabled", "sudo systemctl enable spacetimedb\n", "", "service.unit-enabled"),
]


@pytest.mark.parametrize(("name", "old", "new", "red_check"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_service_mutant_turns_named_check_red(runbook_path: Path, tmp_path: Path, name: str, old: str, new: str,
                                              red_check: str) -> None:
    text = runbook_path.read_text()
    assert old in text, f"mutant {name}: the runbook no longer contains {old!r}"
    mutant = tmp_path / f"mutant-{name}.md"
    mutant.write_text(text.replace(old, new, 1))
    code, report = _run(mutant, tmp_path / "out")
    outcomes = _outcomes(report)
    assert outcomes.get(red_check) == "failed", f"{red_check} did not go red for mutant {name}: {outcomes}"
    assert code == 1 and report["verdict"] == "fail"
    failed = next(c for c in report["checks"] if c["id"] == red_check)
    assert failed["evidence"], "a failed check must carry evidence"
    assert not leftovers(report["run_id"])


def test_broken_service_carries_the_runbooks_troubleshooting_output(runbook_path: Path, tmp_path: Path) -> None:
    mutant = tmp_path / "mutant-exec-missing.md"
    mutant.write_text(runbook_path.read_text().replace("ExecStart=/stdb/spacetime ", "ExecStart=/stdb/spacetimex ", 1))
    code, report = _run(mutant, tmp_path / "out")
    active = next(c for c in report["checks"] if c["id"] == "service.unit-active")
    assert active["outcome"] == "failed"
    journal = [e for e in active["evidence"] if e["label"].startswith("troubleshooting (runbook's own)")
               and "journalctl -u spacetimedb" in e["command"]]
    assert journal, [e["label"] for e in active["evidence"]]
    assert "203/EXEC" in journal[0]["output"], journal[0]["output"]  # systemd could not exec the binary
    assert any("suggestion" in e["label"] and "chmod" in e["command"] for e in active["evidence"])
    assert not leftovers(report["run_id"])
