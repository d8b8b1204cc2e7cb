"""The packaging a nightly gate relies on: --version, exit codes in --help, missing extras named in one line,
the pytest plugin registered through its entry point, and the suites found from the package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness import run as run_module
from harness.errors import KitError
from harness.paths import SUITES_DIR
from tests.conftest import shared_runbook

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


SHARED_RUNBOOK = shared_runbook()


def test_version_names_the_kit_and_the_standin_versions() -> None:
    from fixtures.spacetimedb_standin.release import DEFAULT_VERSIONS

    proc = _cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"stdb-conformance {metadata.version('stdb-conformance')} ")
    assert all(v in proc.stdout for v in DEFAULT_VERSIONS)


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_lists_every_exit_code(args: list[str]) -> None:
    proc = _cli(*args)
    assert proc.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "130 "):
        assert f"\n  {code}" in proc.stdout, f"exit code {code.strip()} missing from {' '.join(args)}"


def test_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sslyze" else real(name, *a))
    with pytest.raises(KitError) as err:
        run_module._require_extras(run_module._suite_files(["service", "tls"]))
    line = err.value.one_line()
    assert "suite tls" in line and "'tls' extra" in line and "stdb-conformance[tls]" in line
    run_module._require_extras(run_module._suite_files(["service"]))  # a suite without extras is fine


def test_console_steps_without_the_aws_extra_stop_before_any_lab_work(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever the suites: the apply phase performs the runbook's console steps through boto3 and moto."""
    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a))
    out = tmp_path / "out"
    code = main(["run", "--backend", "docker", "--suites", "service", "--runbook", str(SHARED_RUNBOOK),
                 "--report-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "AWS Console steps" in err[0] and "boto3 is not installed" in err[0] and "stdb-conformance[aws]" in err[0]
    assert not out.exists()  # nothing was created: no lab, no report
    # a plan without console steps needs no aws extra
    plan = run_module.build_plan(REPO / "tests" / "runbooks" / "editors.md", "default")
    run_module._require_console_extra(plan)


def test_suites_ship_in_the_package_and_are_found_from_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert SUITES_DIR.parent.name == "harness" and (SUITES_DIR / "test_service.py").is_file()
    monkeypatch.chdir(tmp_path)  # the current directory has no suites/: they are still found
    names = [p.stem for p in run_module._suite_files([])]
    assert "test_service" in names and "test_routes" in names and len(names) >= 9


def test_unknown_suite_is_one_line_listing_the_known_ones(tmp_path: Path) -> None:
    proc = _cli("run", "--suites", "nosuch", "--runbook", str(REPO / "tests" / "runbooks" / "console.md"),
                cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "unknown suite(s): nosuch" in lines[0] and "service" in lines[0]


def test_pytest_plugin_is_registered_by_entry_point_once() -> None:
    eps = [ep for ep in metadata.entry_points(group="pytest11") if ep.value == "harness.pytest_plugin"]
    assert len(eps) == 1 and eps[0].name == "harness.pytest_plugin"
    text = (REPO / "pyproject.toml").read_text()
    assert "check(id" not in text, "the check marker is registered by the plugin, not again in pyproject"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--markers", "-p", "harness.pytest_plugin"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("@pytest.mark.check(") == 1, proc.stdout
