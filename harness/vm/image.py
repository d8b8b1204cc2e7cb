"""Build (once) and cache the VM base image: kernel, initrd and an ext4 root disk as qcow2.

Recipe: debootstrap a minbase Ubuntu 24.04 into ROOT, point apt at cloud-image-like deb822 sources
(the archive URI is read back from ROOT/etc/apt/sources.list), install the packages of a fresh cloud
server plus `linux-image-virtual` with apt inside the chroot, configure it, make an ext4 image with
`mkfs.ext4 -d ROOT` and convert it to qcow2 so per-run overlays are cheap.

Cache: ${XDG_CACHE_HOME:-~/.cache}/stdb-conformance/vm/<key>/ where key hashes the recipe. Built in a
temporary sibling directory and renamed into place under an exclusive lock file.
Chroot work runs inside a private mount namespace (`unshare --mount`), so no mount outlives it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.errors import LabError
from harness.paths import keyring_path
from harness.vm import recipe as r
from harness.vm.util import Progress, Stopwatch, cache_root, run, stderr_progress

MANIFEST = "manifest.json"
BUILD_TIMEOUT = {"debootstrap": 1200.0, "packages": 1800.0, "configure": 300.0, "mkfs": 600.0, "qcow2": 600.0}


@dataclass(frozen=True)
class VmImage:
    kernel: Path
    initrd: Path
    root_disk: Path  # qcow2, never written to: runs boot from an overlay
    key: str
    built: bool  # True when this call built it, False when it came from the cache
    seconds: float  # time spent in ensure_vm_image (build or lookup)
    kernel_version: str = ""
    directory: Path | None = None


def ensure_vm_image(progress: Progress = stderr_progress, *, cache_dir: Path | None = None) -> VmImage:
    """Return the cached image for the current recipe, building it first when absent."""
    watch = Stopwatch()
    key = r.cache_key()
    parent = cache_dir or cache_root()
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / key
    found = _load(final, key, built=False, watch=watch)
    if found:
        return found
    _check_tools()
    with open(parent / f"{key}.lock", "w") as lock:
        if _locked(lock):
            progress(f"VM image {key}: another process is building it, waiting for its lock")
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _load(final, key, built=False, watch=watch)  # another process built it meanwhile
        if found:
            return found
        for stale in parent.glob(f".build-{key}-*"):  # we hold the lock: any build dir is abandoned
            shutil.rmtree(stale, ignore_errors=True)
        work = parent / f".build-{key}-{os.getpid()}"
        work.mkdir()
        try:
            progress(f"building VM image {key} (Ubuntu {r.SUITE} + linux-image-virtual; a few minutes, once)")
            _build(work, key, progress)
            if (work / "rootfs").exists():
                shutil.rmtree(work / "rootfs")
            os.rename(work, final)
        except BaseException:
            if (work / "build.log").is_file():
                shutil.copyfile(work / "build.log", parent / f"build-{key}.failed.log")
            shutil.rmtree(work, ignore_errors=True)
            raise
    image = _load(final, key, built=True, watch=watch)
    if image is None:
        raise LabError(f"VM image {key} was built but its manifest is unreadable", hint=f"remove {final}")
    progress(f"VM image {key} built in {image.seconds:.0f}s ({image.kernel_version})")
    return image


def _locked(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _load(directory: Path, key: str, *, built: bool, watch: Stopwatch) -> VmImage | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    paths = [directory / manifest[n] for n in ("kernel", "initrd", "root_disk")]
    if not all(p.is_file() for p in paths):
        return None
    return VmImage(kernel=paths[0], initrd=paths[1], root_disk=paths[2], key=key, built=built,
                   seconds=watch.seconds, kernel_version=manifest.get("kernel_version", ""), directory=directory)


def _check_tools() -> None:
    for tool in ("debootstrap", "unshare", "chroot", "mkfs.ext4", "qemu-img"):
        if not shutil.which(tool):
            run([tool, "--version"], timeout=10, what=f"VM image build needs {tool}")
    if os.geteuid() != 0:
        raise LabError("building the VM image needs root (debootstrap, chroot)", hint="run as root")
    keyring_path()  # one line naming the variable to set when the keyring cannot be found


def _build(work: Path, key: str, progress: Progress) -> None:
    root = work / "rootfs"
    log = work / "build.log"
    timings: dict[str, float] = {}

    def step(name: str, argv: list[str]) -> None:
        watch = Stopwatch()
        progress(f"  {name} ...")
        _logged(argv, log, timeout=BUILD_TIMEOUT[name], what=f"VM image {name}", progress=progress)
        timings[name] = round(watch.seconds, 1)
        progress(f"  {name} done in {watch.seconds:.0f}s")

    step("debootstrap", ["unshare", "--mount", "--fork", "--", "debootstrap", "--variant=minbase",
                         f"--keyring={keyring_path()}", f"--include={','.join(r.DEBOOTSTRAP_INCLUDE)}",
                         r.SUITE, str(root), "", r.DEBOOTSTRAP_SCRIPT])
    mirror = r.mirror_from_sources_list((root / "etc/apt/sources.list").read_text())
    _write_files(root, mirror)
    step("packages", _chroot(root, "apt-get update && apt-get install -y --no-install-recommends "
                             "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "
                             + " ".join(r.PACKAGES)))
    kernel_version = _kernel_version(root)
    step("configure", _chroot(root, r.configure_script() + _driver_check(kernel_version)))
    shutil.copyfile(root / f"boot/vmlinuz-{kernel_version}", work / "vmlinuz")
    shutil.copyfile(root / f"boot/initrd.img-{kernel_version}", work / "initrd.img")
    raw = work / "root.raw"
    step("mkfs", ["mkfs.ext4", "-q", "-F", "-L", r.ROOT_LABEL, "-d", str(root), str(raw), r.ROOT_DISK_SIZE])
    step("qcow2", ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "root.qcow2")])
    raw.unlink()
    manifest = {"key": key, "recipe": r.recipe(), "mirror": mirror,
                "kernel_version": kernel_version, "kernel": "vmlinuz", "initrd": "initrd.img",
                "root_disk": "root.qcow2", "timings": timings, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _write_files(root: Path, mirror: str) -> None:
    files = {
        "etc/apt/sources.list": r.SOURCES_LIST_NOTE,
        "etc/apt/sources.list.d/ubuntu.sources": r.sources_deb822(mirror),
        "etc/initramfs-tools/modules": r.INITRAMFS_MODULES,
        "etc/systemd/network/20-dhcp.network": r.DHCP_NETWORK,
        "etc/sudoers.d/90-cloud-init-users": r.SUDOERS,
        "etc/fstab": r.FSTAB,
        "etc/systemd/system/stdbc-ssh-hostkeys.service": r.HOSTKEYS_UNIT,
        # no daemon may start inside the build chroot
        "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "usr/sbin/policy-rc.d").chmod(0o755)


def _chroot(root: Path, script: str) -> list[str]:
    mounts = (f"mount -t proc proc {root}/proc && mount -t sysfs sysfs {root}/sys && "
              f"mount --rbind /dev {root}/dev && ")
    inner = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
             "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "HOME=/root", "bash", "-euo", "pipefail",
             "-c", script]
    return ["unshare", "--mount", "--fork", "--", "bash", "-c", mounts + 'exec "$@"', "chroot-run", *inner]


def _kernel_version(root: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabError("VM image: linux-image-virtual installed no kernel in /boot")
    return kernels[-1]


def _driver_check(kernel_version: str) -> str:
    """Fail the build unless every required driver is built in or inside the initrd."""
    drivers = " ".join(r.REQUIRED_DRIVERS)
    return f"""
rm -f /usr/sbin/policy-rc.d
listing=$(lsinitramfs /boot/initrd.img-{kernel_version})
for d in {drivers}; do
  f="${{d//_/[-_]}}"  # module nvme_core lives in nvme-core.ko
  if grep -Eq "/$f\\.ko" /lib/modules/{kernel_version}/modules.builtin; then continue; fi
  if grep -Eq "/$f\\.ko(\\.zst|\\.xz)?$" <<<"$listing"; then continue; fi
  echo "driver $d is neither built in nor in the initrd" >&2; exit 1
done
"""


def _logged(argv: list[str], log: Path, *, timeout: float, what: str, progress: Progress) -> None:
    """Run a long build step with output to `log`, a heartbeat every minute, and a time bound."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        watch = Stopwatch()
        try:
            while True:
                try:
                    proc.wait(timeout=60)
                    break
                except subprocess.TimeoutExpired:
                    if watch.seconds > timeout:
                        raise LabError(f"{what}: timed out after {timeout:.0f}s (log: {log})") from None
                    progress(f"    ... {what} still running ({watch.seconds:.0f}s)")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
