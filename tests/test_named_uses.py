"""Every documented way to run the kit, run as written (README "On a fresh machine" and "Pointing it at your
runbook"): `tox -e conformance`, `tox -e tests`, `bash scripts/conformance.sh`, `python -m harness`, and the
`stdb-conformance` of a non-editable `pip install .` run from a directory outside the checkout.

The lab runs use the docker backend and the `service` suite only, to bound their time; what they prove is that
each entry point finds its suites, its runbook and the lab's shared files, and writes a report whose service
checks are decided (passed or failed with evidence, never an error or "unknown suite").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab_helpers import leftovers

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SERVICE_CHECKS_MIN = 8


def _decided_service_report(out: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    path = out / "conformance.json"
    assert path.exists(), f"no report (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(path.read_text())
    service = {c["id"]: c for c in report["checks"] if c["suite"] == "service"}
    assert len(service) >= SERVICE_CHECKS_MIN, sorted(service)
    assert {c["suite"] for c in report["checks"]} == {"service"}, "only the selected suite runs"
    for check_id, check in service.items():
        assert check["outcome"] in ("passed", "failed", "not-applicable"), (check_id, check["outcome"],
                                                                            check["message"])
        assert check["evidence"] or check["outcome"] == "not-applicable", f"{check_id} has no evidence"
    assert proc.returncode in (0, 1, 4), (proc.returncode, proc.stderr[-2000:])
    assert (out / "runbook.md").read_bytes() == Path(report["runbook"]["path"]).read_bytes()
    assert not leftovers(report["run_id"])
    return report


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "VIRTUAL_ENV"}
    env.update(extra)
    return env


@pytest.mark.lab
def test_tox_tests_env_runs_the_kits_own_tests(tmp_path: Path) -> None:
    tox = shutil.which("tox", path=str(Path(sys.executable).parent)) or shutil.which("tox")
    if tox is None:
        pytest.skip("tox is not installed (pip install tox)")
    proc = subprocess.run([tox, "-e", "tests", "--", "tests/test_parser.py", "tests/test_planner.py"], cwd=REPO,
                          capture_output=True, text=True, timeout=1500, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.lab
@pytest.mark.skipif(shutil.which("tox", path=str(Path(sys.executable).parent)) is None
                    and shutil.which("tox") is None, reason="tox is not installed (pip install tox)")
def test_tox_conformance_then_its_installed_kit_runs_outside_the_checkout(tmp_path: Path) -> None:
    """`tox -e conformance` as written; then the kit tox installed (a built wheel, not a link to the checkout:
    what a non-editable `pip install .` gives) run from a folder outside the checkout. One install for both:
    installing the kit with every extra is most of either's time."""
    tox = shutil.which("tox", path=str(Path(sys.executable).parent)) or "tox"
    out = tmp_path / "out"
    work = tmp_path / "tox"  # outside the checkout, so that its venv is too
    proc = subprocess.run([tox, "--workdir", str(work), "-e", "conformance", "--", "--backend", "docker", "--suites",
                           "service", "--report-dir", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=1500, env=_env())
    report = _decided_service_report(out, proc)
    assert report["backend"] == "docker"
    assert "unknown suite" not in proc.stderr

    venv = work / "conformance"
    exe = venv / "bin" / "stdb-conformance"
    assert exe.exists(), sorted(p.name for p in (venv / "bin").iterdir()) if (venv / "bin").exists() else work
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the package is installed, not linked: its suites come from site-packages, not from the checkout
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import harness.paths as p; print(p.SUITES_DIR)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout, where.stdout + where.stderr
    # every agent the lab runs ships with the package (the official SDK's client is a .mjs file)
    agents = subprocess.run([str(venv / "bin" / "python"), "-c", "import harness.sdk_bundle as b; "
                             "print(b.AGENT.is_file(), (b.AGENT.parent / 'ws_subscribe.py').is_file())"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert agents.stdout.split() == ["True", "True"], agents.stdout + agents.stderr
    version = subprocess.run([str(exe), "--version"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "stdb-conformance 0." in version.stdout and "stand-in" in version.stdout
    # no runbook and no shared folder in reach: one line that says what to pass
    bare = _env()
    for name in ("STDB_RUNBOOK", "STDB_SHARED_DIR", "STDB_UBUNTU_KEYRING"):
        bare.pop(name, None)
    missing = subprocess.run([str(exe), "run", "--backend", "docker", "--suites", "service"], cwd=elsewhere,
                             capture_output=True, text=True, timeout=120, env=bare)
    assert missing.returncode == 2, (missing.returncode, missing.stderr)
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stdb-conformance: error: no runbook given"), missing.stderr
    assert "--runbook" in lines[0] and "STDB_RUNBOOK" in lines[0]
    # a real run, runbook passed by path, shared files named by STDB_SHARED_DIR
    out = elsewhere / "out"
    proc = subprocess.run([str(exe), "run", "--backend", "docker", "--suites", "service", "--runbook",
                           str(SHARED / "runbook" / "self-hosting.md"), "--report-dir", str(out)],
                          cwd=elsewhere, capture_output=True, text=True, timeout=1500,
                          env={**bare, "STDB_SHARED_DIR": str(SHARED)})
    _decided_service_report(out, proc)
    # the default report dir is under the current directory, never inside site-packages
    assert not list((venv / "lib").glob("python*/site-packages/reports/out"))


@pytest.mark.lab
def test_conformance_script_runs_as_documented(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "conformance.sh"), "--backend", "docker", "--suites",
                           "service", "--report-dir", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1500, env=_env())
    _decided_service_report(out, proc)
