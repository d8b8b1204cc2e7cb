"""Where the kit keeps what it builds once and reuses, keyed by content: the base image's tarball, the official
SDK client, checkpoints of lab hosts. ${STDB_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/stdb-conformance}/<part>/."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from harness.errors import LabError

IMAGE_BUILD_MIB = 1024  # debootstrap root file system (~400 MiB unpacked with apt's cache) + its tarball


def cache_root() -> Path:
    return Path(os.environ.get("STDB_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stdb-conformance")


def cache_part(name: str) -> Path:
    """The cache's folder `name`, made when missing (a cache that cannot be written is one line)."""
    path = cache_root() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_error(path, exc) from None
    return path


def cache_error(cache: Path, exc: OSError) -> LabError:
    if exc.errno == errno.ENOSPC:
        return LabError(f"the image cache {cache} is full ({exc.strerror})",
                        hint="free space there or point STDB_CACHE_DIR at a file system with "
                             f"{IMAGE_BUILD_MIB} MiB free")
    return LabError(f"the image cache {cache} is not writable ({exc.strerror})",
                    hint="point STDB_CACHE_DIR at a writable directory (default ~/.cache/stdb-conformance)")
