"""Lab test (docker): the same runbook run three times, side by side, gives the same outcome for every check id.

The shared runbook with the `self-hosting-only` profile and the suites service and operator (Step 5's scp/ssh
from the operator machine: once flaky when the target's sshd was not listening yet, an ordering cycle in the
image's ssh units). The routes suite's repeatability is exercised by the selftest's baselines and mutants,
which run it several times per CI run and must agree with the catalogue every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import REPO, leftovers

pytestmark = pytest.mark.lab
RUNS = 3


def test_three_runs_give_the_same_outcomes(runbook_path: Path, tmp_path: Path) -> None:
    # side by side: each run has its own lab (run id, network, containers), and a loaded machine is where the
    # sshd ordering flake showed; one after another they took 3.5 minutes of CI
    procs = []
    for i in range(RUNS):
        log = (tmp_path / f"run{i}.log").open("w")
        procs.append((subprocess.Popen([sys.executable, "-m", "harness", "run", "--runbook", str(runbook_path),
                                        "--profile", "self-hosting-only", "--suites", "service,operator",
                                        "--report-dir", str(tmp_path / f"out{i}")],
                                       cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "STDB_ROUTES_EXAMPLES": "40"}), log))
    try:
        for proc, log in procs:
            proc.wait(timeout=1200)
            log.close()
    finally:
        for proc, _log in procs:
            if proc.poll() is None:
                proc.terminate()  # the kit tears its lab down on SIGTERM
                proc.wait(timeout=120)
    outcomes: list[dict[str, str]] = []
    for i in range(RUNS):
        report = json.loads((tmp_path / f"out{i}" / "conformance.json").read_text())
        assert not report.get("lab_error"), report["lab_error"]
        assert not leftovers(report["run_id"]), leftovers(report["run_id"])
        readiness = report["environment"].get("lab_readiness", {})
        assert readiness.get("target sshd", {}).get("ready") is True, readiness  # waited for, bound recorded
        assert readiness["target sshd"]["timeout_seconds"] > 0
        outcomes.append({c["id"]: c["outcome"] for c in report["checks"]})
        refused = [c["id"] for c in report["checks"] if c["id"].startswith("operator.")
                   and "port 22: Connection refused" in json.dumps(c.get("evidence", []))]
        assert not refused, f"run {i}: the target's sshd refused the operator: {refused}"
    assert outcomes[0], "no checks ran"
    differing = {check: [o.get(check, "(missing)") for o in outcomes]
                 for check in sorted(set().union(*outcomes)) if len({o.get(check) for o in outcomes}) > 1}
    assert not differing, differing
    assert "operator.copy-module" in outcomes[0], sorted(outcomes[0])
