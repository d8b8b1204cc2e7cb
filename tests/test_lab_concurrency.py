"""Lab test (docker): two runs at the same time on one machine. Both pass, with their own run ids, docker
networks and subnets; `stdb-conformance clean` run while both are alive removes nothing of theirs (their owner
processes live); and afterwards nothing of either run is left."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import REPO, leftovers, start_run

pytestmark = pytest.mark.lab
NETWORK = re.compile(r"^lab network (stdbc-[0-9a-f]{8}) \((10\.\d+\.\d+\.0/24)\)$")


def test_two_runs_at_once_do_not_collide(runbook_path: Path, tmp_path: Path) -> None:
    runs = [start_run(runbook_path, tmp_path / f"out{i}") for i in (1, 2)]
    try:
        networks = []
        for run in runs:
            networks.append(NETWORK.match(run.lines[run.wait_for("lab network ", timeout=600)]))
        for run in runs:
            run.wait_for("target prepared", timeout=300)
        clean = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=REPO, capture_output=True, text=True,
                               timeout=300)
        assert clean.returncode == 0, clean.stderr
        for run in runs:
            assert run.run_id not in clean.stderr, f"clean touched the live run {run.run_id}:\n{clean.stderr}"
        codes = [run.finish(900) for run in runs]
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.send(signal.SIGINT)
                run.finish(300)
    assert all(networks), [run.output[-1500:] for run in runs]
    ids = [run.run_id for run in runs]
    assert ids[0] != ids[1], ids
    names, subnets = [m.group(1) for m in networks if m], [m.group(2) for m in networks if m]
    assert names == [f"stdbc-{i}" for i in ids] and subnets[0] != subnets[1], (names, subnets)
    for i, (run, code) in enumerate(zip(runs, codes, strict=True), start=1):
        report = json.loads((tmp_path / f"out{i}" / "conformance.json").read_text())
        assert code == 0 and report["verdict"] == "pass", (code, report["verdict"], report.get("lab_error"),
                                                           run.output[-2000:])
        assert report["run_id"] == run.run_id
    for run in runs:
        assert not leftovers(run.run_id, run.watch), leftovers(run.run_id, run.watch)
