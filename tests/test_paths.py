"""Where the kit finds the lab's shared files: STDB_SHARED_DIR, then a shared/ folder beside the checkout or the
current directory, then (keyring) the system's; otherwise one line naming the variable to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.errors import LabError


def _shared(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / paths.KEYRING_NAME).write_bytes(b"keyring")
    (folder / "runbook").mkdir()
    (folder / "runbook" / "self-hosting.md").write_text("# runbook\n")
    return folder


def test_env_names_the_shared_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _shared(tmp_path)
    monkeypatch.setenv("STDB_SHARED_DIR", str(folder))
    monkeypatch.delenv("STDB_UBUNTU_KEYRING", raising=False)
    monkeypatch.delenv("STDB_RUNBOOK", raising=False)
    assert paths.keyring_path() == folder / "keys" / paths.KEYRING_NAME
    assert paths.default_runbook() == folder / "runbook" / "self-hosting.md"


def test_shared_beside_the_current_directory_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _shared(tmp_path)
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    monkeypatch.delenv("STDB_SHARED_DIR", raising=False)
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.chdir(work)
    assert paths.shared_dir() == folder


def test_nothing_found_is_one_line_naming_the_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STDB_UBUNTU_KEYRING", raising=False)
    monkeypatch.setenv("STDB_SHARED_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(paths, "SYSTEM_KEYRING", tmp_path / "none.gpg")
    with pytest.raises(LabError) as err:
        paths.keyring_path()
    line = err.value.one_line()
    assert "\n" not in line and "STDB_SHARED_DIR" in line and "STDB_UBUNTU_KEYRING" in line


def test_keyring_variable_pointing_at_nothing_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STDB_UBUNTU_KEYRING", str(tmp_path / "missing.gpg"))
    with pytest.raises(LabError, match="STDB_UBUNTU_KEYRING=.*is not a file"):
        paths.keyring_path()


def test_default_report_dir_is_under_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert paths.default_report_dir() == tmp_path / "reports" / "out"
