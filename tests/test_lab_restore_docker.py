"""Lab test (docker): the restore drill on the docker backend. The snapshot there is filesystem-frozen
(fsfreeze + copy of the loop device's backing file), not crash-consistent: the snapshot check is
not-applicable with that label and every data check judges the frozen copy, restored onto a recovery
container prepared by the runbook (its /dev/nvme1n1 re-pointed at the restored volume while stopped).
The verdict is `incomplete` (exit 4), never `pass`: docker cannot prove the crash-consistency claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "tests" / "runbooks" / "restore-drill.md"


def test_docker_restore_drill_is_judged_and_labelled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(RUNBOOK), "--suites",
                           "backup_restore", "--report-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    (tmp_path / "run.log").write_text(proc.stdout + proc.stderr)
    assert (out / "conformance.json").exists(), proc.stderr[-3000:]
    report = json.loads((out / "conformance.json").read_text())
    outcomes = {c["id"]: c for c in report["checks"]}
    snapshot = outcomes.pop("backup_restore.snapshot-while-writing", None)
    assert snapshot is not None, (report.get("lab_error"), sorted(outcomes), proc.stdout[-2000:])
    assert snapshot["outcome"] == "not-applicable" and "filesystem-consistent" in snapshot["message"], \
        (snapshot["outcome"], snapshot["message"], proc.stdout[-2000:])
    assert len(outcomes) == 13 and all(c["outcome"] == "passed" for c in outcomes.values()), \
        {i: (c["outcome"], c["message"][:200]) for i, c in outcomes.items()}
    assert report["verdict"] == "incomplete" and proc.returncode == 4, (report["verdict"], proc.returncode)
    drill = report["environment"]["scenario_backup_restore"]["restore"]
    assert drill["verdict"] == "pass" and "fsfreeze" in drill["consistency"]
    assert "fsfreeze" in (out / "conformance.md").read_text()
    assert not leftovers(report["run_id"])
