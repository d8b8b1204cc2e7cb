"""Lab test (docker): on the docker backend the `mounts` suite decides what a container can show (the fstab
entry, the mount now, the owner) and reports every reboot check not-applicable with the reason, never
passed; this runbook has no restore procedure, so every backup_restore check is not-applicable too.
The verdict is then `incomplete` (exit 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "harness" / "selftest" / "runbooks" / "volume-before-install.md"
STATIC = {"mounts.fstab-entry-by-uuid", "mounts.fstab-entry-as-documented", "mounts.fstab-nofail",
          "mounts.stdb-is-data-volume", "mounts.owned-by-service-user"}


def test_docker_never_claims_reboot_or_restore_checks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", str(RUNBOOK), "--suites",
                           "mounts,backup_restore", "--report-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    report = json.loads((out / "conformance.json").read_text())
    outcomes = {c["id"]: c for c in report["checks"]}
    assert STATIC <= set(outcomes), sorted(outcomes)
    assert {i: outcomes[i]["outcome"] for i in STATIC} == dict.fromkeys(STATIC, "passed")
    drill = {i: c for i, c in outcomes.items() if i.startswith("backup_restore.")}
    assert len(drill) == 14, sorted(drill)
    for check_id, check in drill.items():
        assert check["outcome"] == "not-applicable", (check_id, check["outcome"])
        assert "no restore procedure" in check["message"], check["message"]
    reboot = {i: c for i, c in outcomes.items() if i not in STATIC and i not in drill}
    assert len(reboot) >= 5, sorted(reboot)
    for check_id, check in reboot.items():
        assert check["outcome"] == "not-applicable", (check_id, check["outcome"])
        assert "docker backend cannot prove" in check["message"], check["message"]
    assert report["verdict"] == "incomplete" and proc.returncode == 4, (report["verdict"], proc.returncode)
    assert "not applicable" in (out / "conformance.md").read_text()
    assert not leftovers(report["run_id"])
