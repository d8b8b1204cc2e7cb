"""What a run needs from this machine, checked before it prints anything or creates any lab resource.

Each problem is one LabError (one line on stderr, exit 3) naming what is wrong and how to fix it:
qemu for the vm backend (checked first: no docker work happens for a vm run that cannot boot), a
writable image cache, the docker client and engine, free space for an image build when the base image
must be built, a free loop device for the docker backend's data volume, Pebble for the ACME CA.
A check passing here does not reserve anything: a later failure (another process took the last loop
device) is still a lab error in the run's report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.cache import IMAGE_BUILD_MIB, cache_error
from harness.errors import LabError


def check_environment(*, qemu: bool = False, loop_device: bool = False, acme: bool = True) -> None:
    """`qemu`: a backend that boots VMs; `loop_device`: a backend whose data volume is a loop device."""
    if qemu:
        _require_tools({"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "ssh": "openssh-client"},
                       why="the vm backend", alternative="or run with --backend docker")
    from harness.lab.docker import require_engine
    from harness.lab.image import cache_dir, image_present, image_tag, recipe_key

    cache = cache_dir()
    _writable(cache)
    require_engine()
    if not image_present(image_tag(recipe_key())):
        _free_space(cache, IMAGE_BUILD_MIB)
    if loop_device:
        _loop_device_free()
    if acme:
        _require_tools({"pebble": "pebble", "pebble-challtestsrv": "pebble"}, why="the lab's ACME CA",
                       alternative="or run: bash scripts/bootstrap.sh")


def _require_tools(tools: dict[str, str], *, why: str, alternative: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(dict.fromkeys(tools[t] for t in missing))
        raise LabError(f"{', '.join(missing)} not found on PATH: {why} needs {'them' if len(missing) > 1 else 'it'}",
                       hint=f"apt-get install {packages}, {alternative}")


def _writable(cache: Path) -> None:
    """The image cache holds the build lock and the cached root file system: it must take a new file."""
    try:
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".stdbc-write-test-"):
            pass
    except OSError as exc:
        raise cache_error(cache, exc) from None


def _free_space(cache: Path, need_mib: int) -> None:
    try:
        stat = os.statvfs(cache)
    except OSError as exc:
        raise cache_error(cache, exc) from None
    free_mib = stat.f_bavail * stat.f_frsize // 2**20
    if free_mib < need_mib:
        raise LabError(f"not enough space to build the base image in {cache}: {free_mib} MiB free, "
                       f"{need_mib} MiB needed",
                       hint="free space there or point STDB_CACHE_DIR at a larger file system")


def _loop_device_free() -> None:
    if os.geteuid() != 0:
        raise LabError("the docker backend attaches a loop device as the data volume and needs root",
                       hint="run as root (or with sudo)")
    try:
        proc = subprocess.run(["losetup", "--find"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise LabError("losetup not found on PATH", hint="apt-get install mount") from None
    except subprocess.TimeoutExpired:
        raise LabError("losetup --find did not answer within 30s", hint="check the loop driver (modprobe loop)") \
            from None
    if proc.returncode != 0 or not proc.stdout.strip():
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise LabError(f"no free loop device for the data volume: {detail}",
                       hint="detach unused ones (losetup -a lists them; stdb-conformance clean removes the kit's "
                            "leftovers) or allow more (modprobe loop max_loop=64)")
