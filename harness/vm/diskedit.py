"""Read and write files inside an ext4 disk image (raw or qcow2) without mounting it or booting it.

qcow2 images are exposed as a raw file through `qemu-storage-daemon --export type=fuse` and edited
with `debugfs -w` (e2fsprogs). Used to put per-run files (ssh key, hostname, networkd config) into a
fresh overlay before its first boot, and to inspect disk snapshots. The image must not be in use.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import LabError
from harness.vm.util import run, wait_for_path_mounted


@dataclass(frozen=True)
class FileSpec:
    path: str  # absolute path in the guest file system
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def image_format(path: Path) -> str:
    with open(path, "rb") as handle:
        return "qcow2" if handle.read(4) == b"QFI\xfb" else "raw"


@contextlib.contextmanager
def raw_view(image: Path, *, writable: bool, timeout: float = 30.0) -> Iterator[Path]:
    """Yield a path whose bytes are the image's guest-visible content (FUSE export for qcow2)."""
    if image_format(image) == "raw":
        yield image
        return
    with tempfile.TemporaryDirectory(prefix="stdbc-diskedit-") as tmp:
        mountpoint = Path(tmp) / "disk.raw"
        mountpoint.touch()
        argv = ["qemu-storage-daemon",
                "--blockdev", f"driver=file,node-name=file0,filename={image}",
                "--blockdev", f"driver=qcow2,node-name=disk0,file=file0,read-only={'off' if writable else 'on'}",
                "--export", f"type=fuse,id=exp0,node-name=disk0,mountpoint={mountpoint},"
                            f"writable={'on' if writable else 'off'}"]
        try:
            daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise LabError("qemu-storage-daemon is not installed", hint="apt-get install qemu-system-common") from exc
        try:
            wait_for_path_mounted(mountpoint, daemon, timeout=timeout)
            yield mountpoint
            if writable:  # push the kernel's cached pages of the FUSE file to qemu before it stops
                fd = os.open(mountpoint, os.O_RDWR)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                run(["umount", str(mountpoint)], timeout=timeout, what="unmount the disk export")
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=10)


def write_files(image: Path, files: list[FileSpec], *, timeout: float = 60.0) -> None:
    """Create or replace `files` in the ext4 file system of `image` (parents are created root:root 0755)."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="stdbc-diskedit-src-") as tmp, raw_view(image, writable=True) as raw:
        commands: list[str] = []
        made: set[str] = set()
        for i, spec in enumerate(files):
            target = PurePosixPath(spec.path)
            if not target.is_absolute() or any(c in spec.path for c in " \"'\n"):
                raise ValueError(f"unsupported guest path {spec.path!r}")
            for parent in reversed(target.parents[:-1]):
                # debugfs `mkdir` of an existing name corrupts the file system: create only missing ones
                if str(parent) not in made and not _exists(raw, str(parent)):
                    commands.append(f"mkdir {parent}")
                made.add(str(parent))
            source = Path(tmp) / f"f{i}"
            source.write_bytes(spec.content)
            commands += [f"cd {target.parent}", f"rm {target.name}", f"write {source} {target.name}",
                         f"sif {target.name} mode 0{0o100000 | spec.mode:o}", f"sif {target.name} uid {spec.uid}",
                         f"sif {target.name} gid {spec.gid}", "cd /"]
        script = Path(tmp) / "commands"
        script.write_text("\n".join(commands) + "\n")
        run(["debugfs", "-w", "-f", str(script), str(raw)], timeout=timeout, what="write files into the VM disk")
    for spec in files:
        if read_file(image, spec.path) != spec.content:
            raise LabError(f"writing {spec.path} into {image.name} did not stick")


def _exists(raw: Path, path: str) -> bool:
    proc = run(["debugfs", "-R", f"stat {path}", str(raw)], timeout=60, what=f"look up {path}", check=False)
    return proc.returncode == 0 and b"not found" not in proc.stderr and b"Inode:" in proc.stdout


def read_file(image: Path, path: str, *, timeout: float = 60.0) -> bytes | None:
    """The content of `path` in the image's ext4 file system, or None when it does not exist."""
    with tempfile.TemporaryDirectory(prefix="stdbc-diskedit-out-") as tmp, raw_view(image, writable=False) as raw:
        out = Path(tmp) / "out"
        run(["debugfs", "-R", f"dump {path} {out}", str(raw)], timeout=timeout, what=f"read {path} from VM disk")
        return out.read_bytes() if out.exists() else None


def fsck(image: Path, *, repair: bool, timeout: float = 300.0) -> tuple[int, str]:
    """e2fsck the image's file system (forced); returns (exit status, output). 0/1 mean clean/fixed."""
    with raw_view(image, writable=repair) as raw:
        argv = ["e2fsck", "-f", "-y" if repair else "-n", str(raw)]
        proc = run(argv, timeout=timeout, what="e2fsck", check=False)
        return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
