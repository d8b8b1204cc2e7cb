"""Lab test (docker): a lab that breaks under a mutant's run is `invalid`, never `detected`.

tests/selftest/broken-lab.toml holds the forced-fail mutant and one "mutant" whose run stops the lab's artifact
mirror after bring-up (STDBC_LAB_FAULT): the runbook's install then fails and every service check goes red,
including the one it names. PIT would count that as a kill; the kit's score (Stryker's) counts it apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, shared_runbook
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def test_a_broken_lab_is_invalid_never_detected(tmp_path: Path) -> None:
    out = tmp_path / "selftest"
    proc = subprocess.run([sys.executable, "-m", "harness", "selftest", "--backend", "docker", "--catalogue",
                           str(REPO_ROOT / "tests" / "selftest" / "broken-lab.toml"), "--runbook",
                           str(shared_runbook()), "--report-dir", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    data = json.loads((out / "selftest.json").read_text())
    status = {m["id"]: m for m in data["mutants"]}
    broken = status["mirror-stopped"]
    assert broken["status"] == "invalid", broken
    assert broken["observed"]["service.unit-active"] == "failed"  # red, as PIT would have counted it
    assert "broken lab" in broken["why"], broken["why"]
    assert status["forced-fail"]["status"] == "detected" and data["sentinel"]["detected"]
    assert data["score"] == {"detected": 1, "missed": 0, "invalid": 1, "not_run": 0, "scored": 1, "total": 2,
                             "percent": 100.0}
    assert proc.returncode == 1 and not data["ok"], proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "detected 1, missed 0, invalid 1, not run 0" in proc.stdout
    report = json.loads((out / "units" / broken["unit"] / "run" / "conformance.json").read_text())
    assert any(a["id"] == "lab.fault-injected" for a in report["adaptations"]), report["adaptations"]
    for unit in data["units"]:
        run = json.loads((Path(unit["report"]) / "conformance.json").read_text())
        assert not leftovers(run["run_id"]), unit["id"]
