"""Lab tests (vm backend, TCG here: minutes each): the restore drill end to end.

tests/runbooks/restore-drill.md installs onto a data volume and carries the shared runbook's restore flow
and RPO/RTO examples. The baseline run seeds 10,200 rows, snapshots the volume while a writer appends
acknowledged rows, restores onto a recovery VM prepared by the runbook and must pass the fidelity oracle,
with the figures in the report. Our mutants (STDBC_DRILL_MUTANT, test-only) must turn the named checks
red: a restore that loses a table, a snapshot of the wrong volume. No lab resource may be left behind
(containers, network, both VMs' taps and qemu processes, temp dirs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import VM_LAB, leftovers

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "tests" / "runbooks" / "restore-drill.md"

pytestmark = VM_LAB


def _run(report_dir: Path, mutant: str = "") -> tuple[int, dict]:
    env = {**os.environ, "STDBC_DRILL_MUTANT": mutant}
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backend", "vm", "--runbook", str(RUNBOOK),
                           "--suites", "backup_restore", "--report-dir", str(report_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=2400, env=env)
    report_path = report_dir / "conformance.json"
    (report_dir / "run.log").parent.mkdir(parents=True, exist_ok=True)
    (report_dir / "run.log").write_text(proc.stdout + proc.stderr)
    assert report_path.exists(), f"no report written (exit {proc.returncode}): {proc.stderr[-3000:]}"
    return proc.returncode, json.loads(report_path.read_text())


def _outcomes(report: dict) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def test_restore_drill_passes_the_oracle(tmp_path: Path) -> None:
    code, report = _run(tmp_path / "out")
    outcomes = _outcomes(report)
    assert len(outcomes) == 14, outcomes
    assert all(v == "passed" for v in outcomes.values()), outcomes
    assert code == 0 and report["verdict"] == "pass", (code, report["verdict"], report.get("lab_error"))
    drill = report["environment"]["scenario_backup_restore"]["restore"]
    assert drill["verdict"] == "pass" and drill["mutant"] == ""
    assert sum(t["expected_rows"] for t in drill["tables"]) >= 10_000
    assert all(t["restored_rows"] == t["expected_rows"] and t["restored_sha256"] == t["expected_sha256"]
               for t in drill["tables"]), drill["tables"]
    seq = drill["seq"]
    assert seq["restored_max_seq"] >= seq["last_acked_before_snapshot"] > 0, seq
    assert seq["restored_seq_rows"] == seq["restored_max_seq"], seq  # gap-free prefix from 1
    assert 0 < drill["rto_seconds"] < 1800 and drill["loss_window_seconds"] is not None
    assert len(drill["live_copies"]) == 2 and all(c["outcome"] for c in drill["live_copies"])
    text = (tmp_path / "out" / "conformance.md").read_text()
    assert "## Restore drill" in text and str(seq["last_acked_before_snapshot"]) in text
    assert not leftovers(report["run_id"])


@pytest.mark.parametrize(("mutant", "red_checks", "still_green"), [
    ("drop-table", ["backup_restore.baseline-rows-identical"],
     ["backup_restore.schema-identical", "backup_restore.acked-writes-present",
      "backup_restore.restore-steps-succeed"]),
    ("wrong-volume", ["backup_restore.service-ready-after-restore", "backup_restore.schema-identical",
                      "backup_restore.baseline-rows-identical", "backup_restore.acked-writes-present"],
     ["backup_restore.recovery-host-prepared", "backup_restore.snapshot-while-writing"]),
])
def test_restore_mutant_turns_named_checks_red(tmp_path: Path, mutant: str, red_checks: list[str],
                                               still_green: list[str]) -> None:
    code, report = _run(tmp_path / "out", mutant)
    outcomes = _outcomes(report)
    for red in red_checks:
        assert outcomes.get(red) == "failed", f"{red} did not go red for mutant {mutant}: {outcomes}"
        failed = next(c for c in report["checks"] if c["id"] == red)
        assert failed["evidence"], "a failed check must carry evidence"
    for green in still_green:
        assert outcomes.get(green) == "passed", f"{green} should not depend on mutant {mutant}: {outcomes}"
    assert code == 1 and report["verdict"] == "fail"
    assert report["environment"]["scenario_backup_restore"]["restore"]["mutant"] == mutant
    assert not leftovers(report["run_id"])
