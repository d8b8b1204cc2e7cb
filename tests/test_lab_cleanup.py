"""Lab tests (docker): Ctrl-C and a crash leave nothing behind once `clean` (or the next run) has run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parent.parent
SERVICE_ONLY = REPO / "tests" / "profiles" / "service-only.toml"


def _start(runbook: Path, report_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", "--runbook", str(runbook), "--profile",
                             str(SERVICE_ONLY), "--suites", "service", "--report-dir", str(report_dir)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_target(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """Read the run's progress until its target container exists; return the run id."""
    deadline = time.monotonic() + timeout
    run_id = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("run ") and not run_id:
            run_id = line.split()[1].rstrip(":")
        if run_id and "target prepared" in line:
            return run_id
    proc.kill()
    pytest.fail(f"the run did not bring its lab up within {timeout:.0f}s (run id {run_id or '?'})")


def test_ctrl_c_removes_the_lab_and_still_reports(runbook_path: Path, tmp_path: Path) -> None:
    proc = _start(runbook_path, tmp_path / "out")
    run_id = _wait_for_target(proc)
    assert leftovers(run_id), "the lab should exist while the run is alive"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    report = json.loads((tmp_path / "out" / "conformance.json").read_text())
    assert report["interrupted"] is True and report["verdict"] != "pass"
    assert not leftovers(run_id)


def test_crash_leftovers_are_removed_by_clean(runbook_path: Path, tmp_path: Path) -> None:
    proc = _start(runbook_path, tmp_path / "out")
    run_id = _wait_for_target(proc)
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup code runs
    proc.communicate(timeout=60)
    left = leftovers(run_id)
    assert any("container" in item or "docker" in item for item in left), left
    out = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not leftovers(run_id), f"clean left: {leftovers(run_id)}"
