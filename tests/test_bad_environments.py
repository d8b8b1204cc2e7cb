"""A bad environment is ONE line on stderr (`stdb-conformance: error: <what is wrong> (<how to fix it>)`), the
documented exit code (3: lab error) and never a traceback, before the run prints anything or creates any
lab resource. The fast cases need no docker engine (the environment checks that fail come first, or the engine
is a shim answering "no such image"); the loop-device case asks the real engine and is marked `lab`.

/dev/kvm absent or unusable is not an error: the vm backend falls back to TCG with one warning line (the
accelerator decision is tested on a fake device path; no VM is booted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import EXIT_LAB
from tests.lab_helpers import REPO, SERVICE_ONLY

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")

# a docker client whose engine answers and has no base image (so a run would build it); anything else it is
# asked is recorded and refused: the environment checks must stop the run before any lab work
DOCKER_SHIM = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
case "$1" in
  info) echo 20.10.24; exit 0 ;;
  image) echo "Error: No such image: $3" >&2; exit 1 ;;
  *) echo "docker shim: unexpected: $*" >&2; exit 99 ;;
esac
"""


def _run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--runbook",
                           str(os.environ.get("STDB_RUNBOOK") or REPO.parent / "shared" / "runbook" /
                               "self-hosting.md"),
                           "--profile", str(SERVICE_ONLY), "--suites", "service", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = EXIT_LAB) -> str:
    """The exact shape: a single stderr line `stdb-conformance: error: ...`, nothing on stdout, no traceback, the
    exit code. Returns the line."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stdb-conformance: error: "), lines[0]
    assert proc.stdout == "", proc.stdout
    assert proc.returncode == code, (proc.returncode, lines[0])
    return lines[0]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "STDB_CACHE_DIR")}
    env.setdefault("STDB_RUNBOOK", str(REPO.parent / "shared" / "runbook" / "self-hosting.md"))
    return {**env, **extra}


def _bin_with(tmp_path: Path, **tools: str) -> Path:
    """A directory holding only `tools` (name -> script text), to put on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in tools.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    return bindir


def test_docker_client_missing(tmp_path: Path) -> None:
    empty = _bin_with(tmp_path)
    line = one_line_error(_run(env=_env(tmp_path, PATH=str(empty))))
    assert "docker client is not installed" in line and "bootstrap" in line, line


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker client (not the engine)")
def test_docker_engine_not_running(tmp_path: Path) -> None:
    line = one_line_error(_run(env=_env(tmp_path, DOCKER_HOST="unix:///nonexistent.sock")))
    assert "docker engine is not running" in line and "/nonexistent.sock" in line and "start it" in line, line


def test_qemu_missing_with_the_vm_backend_fails_before_any_docker_work(tmp_path: Path) -> None:
    bindir = _bin_with(tmp_path, docker=DOCKER_SHIM)  # a docker that records any use: it must not be asked
    line = one_line_error(_run("--backend", "vm", env=_env(tmp_path, PATH=str(bindir)), timeout=20))
    assert "qemu-system-x86_64" in line and "apt-get install qemu-system-x86" in line, line
    assert not (bindir / "calls.log").exists(), (bindir / "calls.log").read_text()


def test_cache_dir_is_a_regular_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache-file"
    cache.write_text("not a directory\n")
    line = one_line_error(_run(env=_env(tmp_path, STDB_CACHE_DIR=str(cache))))
    assert f"image cache {cache}/images is not writable" in line and "STDB_CACHE_DIR" in line, line


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, timeout=30)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=False, timeout=30)


@needs_root
def test_cache_dir_on_a_read_only_mount(tmp_path: Path) -> None:
    mount = tmp_path / "ro-cache"
    _mount_tmpfs(mount, "ro,size=1m")
    try:
        line = one_line_error(_run(env=_env(tmp_path, STDB_CACHE_DIR=str(mount))))
    finally:
        _umount(mount)
    assert f"image cache {mount}/images is not writable (Read-only file system)" in line, line


@needs_root
@pytest.mark.parametrize("fill", ["tiny", "full", "no-inodes"])
def test_disk_full_for_an_image_build(tmp_path: Path, fill: str) -> None:
    """The cache on a 4 MiB tmpfs (tiny; filled up with a file until ENOSPC; or without a free inode, so no
    new file can be made there) and an engine without the base image: the run would have to build the image
    there. It stops before the build with one line saying so."""
    mount = tmp_path / "small-cache"
    _mount_tmpfs(mount, "size=4m" + (",nr_inodes=2" if fill == "no-inodes" else ""))
    bindir = _bin_with(tmp_path, docker=DOCKER_SHIM)
    try:
        (mount / "images").mkdir()
        if fill == "full":
            subprocess.run(["dd", "if=/dev/zero", f"of={mount / 'images' / 'filler'}", "bs=64k"],
                           capture_output=True, timeout=60)
            assert os.statvfs(mount).f_bavail == 0
        line = one_line_error(_run(env=_env(tmp_path, STDB_CACHE_DIR=str(mount),
                                            PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")))
    finally:
        _umount(mount)
    assert str(mount / "images") in line and "STDB_CACHE_DIR" in line, line
    expected = {"tiny": "4 MiB free, 1024 MiB needed", "full": "0 MiB free, 1024 MiB needed",
                "no-inodes": "is full (No space left on device)"}[fill]
    assert expected in line, line
    log = bindir / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    assert all(c.startswith(("info", "image inspect")) for c in calls), calls  # no lab work was started


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0, reason="the docker backend's loop device needs root")
def test_no_free_loop_device(tmp_path: Path) -> None:
    bindir = _bin_with(tmp_path, losetup="#!/bin/sh\necho 'losetup: cannot find an unused loop device' >&2\nexit 1\n")
    line = one_line_error(_run(env=_env(tmp_path, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")))
    assert "no free loop device for the data volume: losetup: cannot find an unused loop device" in line, line
    assert "stdb-conformance clean" in line, line


@pytest.mark.parametrize("device", ["absent", "regular-file"])
def test_kvm_absent_or_unusable_falls_back_to_tcg_with_one_warning(device: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.vm import accel

    path = tmp_path / "kvm"
    if device == "regular-file":
        path.write_bytes(b"")  # opens read-write, but answers no KVM ioctl
    monkeypatch.delenv("STDB_VM_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_WARNED", [])

    def no_probe(*_a: object, **_k: object) -> tuple[bool, str]:
        raise AssertionError("no KVM boot probe without a usable KVM device")

    monkeypatch.setattr(accel, "kvm_boot_probe", no_probe)
    lines: list[str] = []
    assert accel.choose_accel(tmp_path / "vmlinuz", progress=lines.append, use_cache=False,
                              device=str(path)) == "tcg"
    assert accel.choose_accel(tmp_path / "vmlinuz", progress=lines.append, use_cache=False,
                              device=str(path)) == "tcg"  # a second VM of the run: no second warning
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("KVM is not usable here") and "falling back to TCG" in lines[0], lines[0]
    assert str(path) in lines[0] or "ioctl" in lines[0], lines[0]
