"""The lab's base image: Ubuntu 24.04 made with debootstrap, looking like a fresh cloud server.

systemd as PID 1, an `ubuntu` user with passwordless sudo, openssh-server, python3, curl,
ca-certificates, nano, ufw (installed, inactive), plus what the runbook's own commands call (fdisk,
mkfs.ext4, blkid, mount). Apt sources are the image's own (debootstrap's default mirror, with the
updates and security suites and the universe component, as on a cloud image).

Cached by content: the key hashes the recipe (suite, packages, configure script, keyring). The image
is tagged with the key in the docker engine, and its root file system tarball is kept in the user's
cache directory, so a warm run neither rebuilds nor re-imports.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_error, cache_part
from harness.errors import LabError
from harness.lab.docker import docker, require_engine
from harness.paths import KEYRING_FINGERPRINT, keyring_path

Progress = Callable[[str], None]

SUITE = "noble"
DEBOOTSTRAP_SCRIPT = "/usr/share/debootstrap/scripts/gutsy"  # Debian's debootstrap has no noble script
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "sudo", "openssh-server", "python3", "curl", "ca-certificates", "nano",
    "ufw", "iproute2", "fdisk", "e2fsprogs", "util-linux", "mount", "procps", "less", "iputils-ping", "kmod",
    "openssl", "netcat-openbsd", "cron", "logrotate", "apt-utils",
]
# ssh-hostkeys.service is ordered before ssh.service only (as harness/vm/recipe.py does): ordered before
# ssh.socket too it made an ordering cycle (socket -> sockets.target -> basic.target -> the unit) that systemd
# broke at random boots by dropping ssh.socket's start job: no sshd on port 22 ("Connection refused").
CONFIGURE = r"""
set -eu
useradd --create-home --shell /bin/bash --groups sudo,adm ubuntu
printf 'ubuntu ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
cat > /etc/apt/sources.list <<SOURCES
deb $uri noble main restricted universe multiverse
deb $uri noble-updates main restricted universe multiverse
deb $uri noble-security main restricted universe multiverse
SOURCES
sed -i 's/^ENABLED=.*/ENABLED=no/' /etc/ufw/ufw.conf
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
systemctl mask getty@tty1.service console-getty.service systemd-logind.service >/dev/null 2>&1 || true
systemctl enable ssh.socket >/dev/null 2>&1 || systemctl enable ssh.service >/dev/null 2>&1 || true
rm -f /etc/ssh/ssh_host_*
printf '[Unit]\nDescription=Regenerate SSH host keys\nBefore=ssh.service\n[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n[Install]\nWantedBy=multi-user.target\n' > /etc/systemd/system/ssh-hostkeys.service
systemctl enable ssh-hostkeys.service >/dev/null 2>&1
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log /tmp/*
"""


@dataclass
class ImageInfo:
    tag: str
    key: str
    built: bool
    seconds: float = 0.0


def cache_dir() -> Path:
    return cache_part("images")


def recipe_key() -> str:
    recipe = {"suite": SUITE, "script": DEBOOTSTRAP_SCRIPT, "packages": PACKAGES, "configure": CONFIGURE,
              "keyring": KEYRING_FINGERPRINT, "variant": "minbase"}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def image_tag(key: str) -> str:
    return f"stdb-conformance/ubuntu-noble:{key[:16]}"


def _image_present(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


def image_present(tag: str) -> bool:
    """Whether the docker engine already has the base image `tag` (a run then neither builds nor imports)."""
    return _image_present(tag)


def ensure_base_image(progress: Progress = print) -> ImageInfo:
    """The tag of the base image, building it when neither the engine nor the cache has it."""
    require_engine()
    started = time.monotonic()
    key = recipe_key()
    tag = image_tag(key)
    if _image_present(tag):
        progress(f"image {tag}: cached in the docker engine")
        return ImageInfo(tag, key, built=False, seconds=time.monotonic() - started)
    cache = cache_dir()
    try:
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _image_present(tag):
                return ImageInfo(tag, key, built=False, seconds=time.monotonic() - started)
            tarball = cache / f"docker-{key[:16]}.tar"
            built = False
            if not tarball.exists():
                _build_rootfs_tarball(tarball, progress)
                built = True
            else:
                progress(f"image {tag}: importing cached root file system {tarball}")
            _import(tarball, tag)
    except OSError as exc:  # the cache filled up or went read-only during the build: one line, not a traceback
        raise cache_error(cache, exc) from None
    return ImageInfo(tag, key, built=built, seconds=time.monotonic() - started)


def _import(tarball: Path, tag: str) -> None:
    with open(tarball, "rb") as source:
        proc = subprocess.run(["docker", "import", "-c", 'CMD ["/lib/systemd/systemd"]', "-c", "ENV container=docker",
                               "-", tag], stdin=source, capture_output=True,
                              timeout=600)
    if proc.returncode != 0:
        raise LabError(f"docker import of the base image failed: {proc.stderr.decode(errors='replace').strip()}")


def _build_rootfs_tarball(tarball: Path, progress: Progress) -> None:
    for tool in ("debootstrap", "chroot", "tar"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed", hint="run: bash scripts/bootstrap.sh (installs debootstrap)")
    if not Path(DEBOOTSTRAP_SCRIPT).exists():
        raise LabError(f"debootstrap script {DEBOOTSTRAP_SCRIPT} is missing", hint="reinstall debootstrap")
    if os.geteuid() != 0:
        raise LabError("building the base image needs root (debootstrap)", hint="run as root or with sudo")
    work = Path(tempfile.mkdtemp(prefix="stdbc-image-", dir=tarball.parent))
    root = work / "rootfs"
    log = work / "debootstrap.log"
    try:
        progress(f"image: debootstrap {SUITE} (minbase + {len(PACKAGES)} packages), a few minutes on first run")
        argv = ["debootstrap", "--variant=minbase", f"--keyring={keyring_path()}", "--components=main,universe",
                f"--include={','.join(PACKAGES)}", SUITE, str(root), "", DEBOOTSTRAP_SCRIPT]
        _logged(argv, log, timeout=1800, what="debootstrap")
        progress("image: configuring (ubuntu user, sudo, apt sources, ufw inactive, ssh)")
        _logged(["chroot", str(root), "/bin/bash", "-c", CONFIGURE], log, timeout=300, what="configure")
        partial = tarball.with_suffix(".partial")
        _logged(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."], log,
                timeout=600, what="tar")
        partial.rename(tarball)
        for old in tarball.parent.glob("docker-*.tar"):
            if old != tarball:
                old.unlink(missing_ok=True)
    finally:
        _unmount_below(root)
        shutil.rmtree(work, ignore_errors=True)


def _logged(argv: list[str], log: Path, *, timeout: float, what: str) -> None:
    with open(log, "ab") as out:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"image build: {what} timed out after {timeout:.0f}s (log: {log})") from exc
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        tail = text.strip().splitlines()[-1:] or ["(no output)"]
        full = "No space left on device" in text
        raise LabError(f"image build: {what} failed (exit {proc.returncode}): {tail[0]}",
                       hint=f"the file system of {log.parent} is full: free space or point STDB_CACHE_DIR at a "
                            "larger one" if full else None)


def _unmount_below(root: Path) -> None:
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(str(root) + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)


def drop_cached_images() -> list[str]:
    """Remove the cached image (engine tag and tarball): the next run is cold. For the benchmark."""
    removed = []
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "stdb-conformance/ubuntu-noble",
                 check=False, timeout=30).stdout.decode().split()
    for tag in out:
        if docker("rmi", "-f", tag, check=False, timeout=120).returncode == 0:
            removed.append(tag)
    for tarball in cache_dir().glob("docker-*.tar"):
        tarball.unlink(missing_ok=True)
        removed.append(str(tarball))
    return removed
