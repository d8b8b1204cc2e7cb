"""Shared fixtures for the kit's own tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Tests started where SIGINT is ignored (a background job of a non-interactive shell, nohup) would pass that on
# to every kit process they start, and the interrupt tests could not interrupt them: restore the default here
# (in every xdist worker too), so children start with SIGINT's default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_runbook() -> Path:
    env = os.environ.get("STDB_RUNBOOK")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "runbook" / "self-hosting.md"
    if not path.is_file():
        raise FileNotFoundError(f"shared runbook not found at {path}: set STDB_RUNBOOK")
    return path


@pytest.fixture(scope="session")
def runbook_path() -> Path:
    return shared_runbook()


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Lab tests need docker. Without it they skip, unless STDB_REQUIRE_LAB=1 (CI) makes that an error."""
    lab_items = [i for i in items if i.get_closest_marker("lab")]
    if not lab_items or docker_available():
        return
    if os.environ.get("STDB_REQUIRE_LAB") == "1":
        raise pytest.UsageError("STDB_REQUIRE_LAB=1 but no docker engine answers: run scripts/bootstrap.sh")
    skip = pytest.mark.skip(reason="no docker engine (run scripts/bootstrap.sh); lab tests skipped")
    for item in lab_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def docker_selftest(runbook_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ONE `selftest --backend docker` per test session (every docker mutant and every config's baseline).

    The lab tests of single promises (service, routes/tls, operator, upgrade, the docker drill) judge the
    baseline and mutant reports this run keeps, instead of paying for lab runs of their own."""
    import json
    import subprocess
    import sys

    reuse = os.environ.get("STDB_SELFTEST_REUSE")  # a developer judging a finished selftest again (never in CI)
    if reuse and not os.environ.get("CI"):
        out = Path(reuse)
        return {"exit": 0 if json.loads((out / "selftest.json").read_text())["score"]["percent"] == 100 else 1,
                "stdout": "", "stderr": "", "dir": out, "data": json.loads((out / "selftest.json").read_text()),
                "reused": True}
    out = tmp_path_factory.mktemp("selftest") / "selftest"
    proc = subprocess.run([sys.executable, "-m", "harness", "selftest", "--backend", "docker", "--jobs", "3",
                           "--runbook", str(runbook_path), "--report-dir", str(out)],
                          cwd=out.parent, capture_output=True, text=True, timeout=3 * 3600)
    (out.parent / "selftest.log").write_text(proc.stdout + proc.stderr)
    assert (out / "selftest.json").exists(), proc.stderr[-3000:]
    return {"exit": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "dir": out,
            "data": json.loads((out / "selftest.json").read_text())}


def selftest_unit(selftest: dict[str, Any], unit_id: str) -> tuple[dict[str, Any], Path]:
    """One lab run of the selftest: its unit record and the report directory it wrote."""
    import json

    unit = next((u for u in selftest["data"]["units"] if u["id"] == unit_id), None)
    assert unit is not None, f"the selftest ran no unit {unit_id}: {[u['id'] for u in selftest['data']['units']]}"
    report_dir = Path(unit["report"])
    return {**unit, "conformance": json.loads((report_dir / "conformance.json").read_text())}, report_dir
