"""Small shared helpers for the VM backend: progress lines, bounded subprocesses, cache paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import LabError

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(f"[vm] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stdb-conformance" / "vm"


def host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def run(argv: Sequence[str], *, timeout: float, what: str, input: bytes | None = None,
        check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a host command with a time bound; a failure becomes a one-line LabError naming `what`."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, env=env)
    except FileNotFoundError as exc:
        raise LabError(f"{what}: {argv[0]} is not installed", hint=_install_hint(argv[0])) from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what}: timed out after {timeout:.0f}s ({' '.join(argv[:3])} ...)") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc


def _install_hint(tool: str) -> str:
    packages = {"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils", "qemu-storage-daemon":
                "qemu-system-common", "debootstrap": "debootstrap", "ssh": "openssh-client",
                "ssh-keygen": "openssh-client", "debugfs": "e2fsprogs", "mkfs.ext4": "e2fsprogs"}
    return f"apt-get install {packages.get(tool, tool)}"


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def is_mounted(path: Path) -> bool:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(line.split()[1] == str(path) for line in lines if len(line.split()) > 1)


def wait_for_path_mounted(path: Path, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Wait (bounded) until `process` has mounted something at `path`; fail early when it exits."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
            args = process.args
            program = os.fsdecode(args if isinstance(args, str | bytes | os.PathLike) else args[0])
            raise LabError(f"{program} exited (status {process.returncode}) before mounting {path}: {err}")
        if time.monotonic() >= deadline:
            raise LabError(f"{path} was not mounted within {timeout:.0f}s")
        time.sleep(0.05)
