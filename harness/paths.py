"""Where the kit finds its own files and the lab's shared files, installed or in a checkout.

The suites ship inside the package (harness/suites), so they are found from the package itself and never
from the current directory. The lab's shared files (Ubuntu's archive keyring for debootstrap, the reference
runbook) live outside the package: in the folder named by STDB_SHARED_DIR, or in a `shared/` folder beside
the checkout (or beside the current directory or one of its parents). When none is found the caller gets one
line that says which variable to set.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import LabError

PACKAGE_DIR = Path(__file__).resolve().parent
SUITES_DIR = PACKAGE_DIR / "suites"
KEYRING_NAME = "ubuntu-archive-keyring.gpg"
# the archive signing key the image recipes trust (hashed into their cache keys instead of the file's bytes,
# so a warm run needs no keyring file at all)
KEYRING_FINGERPRINT = "F6ECB3762474EDA9D21B7022871920D1991BC93C"
REFERENCE_RUNBOOK = Path("runbook") / "self-hosting.md"
SYSTEM_KEYRING = Path("/usr/share/keyrings") / KEYRING_NAME


def checkout_root() -> Path | None:
    """The source checkout holding this package (an editable install or `python -m harness`), else None."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "harness").is_dir() else None


def shared_candidates() -> list[Path]:
    """Folders that may be the lab's shared folder, in the order they are tried."""
    found: list[Path] = []
    env = os.environ.get("STDB_SHARED_DIR")
    if env:
        return [Path(env).expanduser()]
    root = checkout_root()
    if root is not None:
        found.append(root.parent / "shared")
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        found.append(folder / "shared")
        found.append(folder.parent / "shared")
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def shared_dir() -> Path | None:
    """The first candidate that holds the keyring or the reference runbook."""
    for path in shared_candidates():
        if (path / "keys" / KEYRING_NAME).is_file() or (path / REFERENCE_RUNBOOK).is_file():
            return path
    return None


def keyring_path() -> Path:
    """Ubuntu's archive keyring (debootstrap verifies the noble archive with it)."""
    env = os.environ.get("STDB_UBUNTU_KEYRING")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise LabError(f"STDB_UBUNTU_KEYRING={env} is not a file",
                           hint=f"point it at {KEYRING_NAME} (Ubuntu's public archive keyring)")
        return path
    shared = shared_dir()
    if shared is not None and (shared / "keys" / KEYRING_NAME).is_file():
        return shared / "keys" / KEYRING_NAME
    if SYSTEM_KEYRING.is_file():  # an Ubuntu machine (package ubuntu-keyring) has it already
        return SYSTEM_KEYRING
    raise LabError(f"Ubuntu archive keyring {KEYRING_NAME} not found (needed once, to build the lab image)",
                   hint="set STDB_SHARED_DIR to the folder holding keys/ubuntu-archive-keyring.gpg, "
                        "or STDB_UBUNTU_KEYRING to the file")


def default_runbook() -> Path | None:
    """$STDB_RUNBOOK, else the shared folder's reference runbook, else None."""
    env = os.environ.get("STDB_RUNBOOK")
    if env:
        return Path(env).expanduser()
    shared = shared_dir()
    if shared is not None and (shared / REFERENCE_RUNBOOK).is_file():
        return shared / REFERENCE_RUNBOOK
    return None


def default_report_dir() -> Path:
    """reports/out under the current directory (never inside the installed package)."""
    return Path.cwd() / "reports" / "out"
