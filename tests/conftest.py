"""Shared fixtures for the kit's own tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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
