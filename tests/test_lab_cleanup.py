"""Lab tests (docker): Ctrl-C and a crash leave nothing behind once `clean` (or the next run) has run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import REPO, LabRun, leftovers, start_run

pytestmark = pytest.mark.lab


def _wait_for_target(run: LabRun, timeout: float = 180) -> str:
    """Read the run's progress until its target container is prepared; return the run id."""
    run.wait_for("target prepared", timeout)
    return run.run_id


def test_ctrl_c_removes_the_lab_and_still_reports(runbook_path: Path, tmp_path: Path) -> None:
    run = start_run(runbook_path, tmp_path / "out")
    run_id = _wait_for_target(run)
    assert leftovers(run_id), "the lab should exist while the run is alive"
    run.send(signal.SIGINT)
    assert run.finish(120) == 130
    report = json.loads((tmp_path / "out" / "conformance.json").read_text())
    assert report["interrupted"] is True and report["verdict"] != "pass"
    assert not leftovers(run_id, run.watch)


def test_crash_leftovers_are_removed_by_clean(runbook_path: Path, tmp_path: Path) -> None:
    run = start_run(runbook_path, tmp_path / "out")
    run_id = _wait_for_target(run)
    os.kill(run.proc.pid, signal.SIGKILL)  # a crash: no cleanup code runs
    run.finish(60)
    left = leftovers(run_id)
    assert any("container" in item or "docker" in item for item in left), left
    out = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not leftovers(run_id, run.watch), f"clean left: {leftovers(run_id, run.watch)}"


def test_crash_with_the_moto_server_running_is_cleaned(tmp_path: Path) -> None:
    """A crash (SIGKILL) while the run's moto server listens (it runs in a session of its own, so it outlives
    the run): `clean` stops it by its recorded pid and start time, and nothing of the run is left."""
    run = start_run(REPO / "tests" / "runbooks" / "restore-drill.md", tmp_path / "out", profile="default",
                    suites="backup_restore")
    run.wait_for("aws (simulated):", timeout=600)
    run.watch.sample()
    moto = [pid for pid, (_start, cmd) in run.watch.seen.items() if "moto" in cmd]
    assert moto and run.watch.listened(), run.watch.seen
    os.kill(run.proc.pid, signal.SIGKILL)
    run.finish(60)
    assert any("moto" in item for item in run.watch.left(grace=0)), "the moto server should outlive the crash"
    out = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "moto_server" in out.stderr, out.stderr
    assert not leftovers(run.run_id, run.watch), leftovers(run.run_id, run.watch)
