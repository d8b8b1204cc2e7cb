"""Run-labelled host resources of a VM, recorded in a JSON marker as they are created, and the sweeper
that removes those of dead runs (owning kit pid gone, or the host rebooted since)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.vm.net import delete_link
from harness.vm.ssh import SshEndpoint
from harness.vm.util import host_boot_id

MARKER = "stdbc-vm.json"


def process_start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks): tells a pid from a later reuse of it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start_time: str = "") -> bool:
    if pid <= 0:
        return False
    current = process_start_time(pid)
    return bool(current) and (not start_time or current == start_time)


@dataclass
class VmRecord:
    """What one VM created on the host; rewritten to `workdir/MARKER` before each creation."""

    run_id: str
    name: str
    workdir: str
    kit_pid: int = field(default_factory=os.getpid)
    kit_start: str = field(default_factory=lambda: process_start_time(os.getpid()))
    host_boot_id: str = field(default_factory=host_boot_id)
    taps: list[str] = field(default_factory=list)
    qemu_pids: list[int] = field(default_factory=list)
    kept: bool = False  # `lab up`: the VM outlives its owner process until `lab down` (or a host reboot)

    def save(self) -> None:
        path = Path(self.workdir) / MARKER
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, workdir: Path) -> VmRecord | None:
        try:
            data = json.loads((workdir / MARKER).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def owner_alive(self) -> bool:
        if self.host_boot_id != host_boot_id():
            return False
        return self.kept or process_alive(self.kit_pid, self.kit_start)


def kill_qemu(pid: int, workdir: str, *, timeout: float = 15.0) -> bool:
    """SIGTERM then SIGKILL a qemu process, only if its command line names `workdir` (never a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if workdir not in cmdline:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                return True
            time.sleep(0.1)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def release(record: VmRecord) -> list[str]:
    """Remove everything `record` lists (qemu processes, taps, then the work dir). Idempotent."""
    removed: list[str] = []
    control = Path(record.workdir) / "ssh.ctl"
    if control.exists():  # the kit's ssh master connection to this VM (harness/vm/ssh.py)
        SshEndpoint(host="127.0.0.1", port=0, user="ubuntu", key=Path(record.workdir) / "id_ed25519",
                    control_path=control).stop_master()
        removed.append(f"ssh master {control}")
    for pid in record.qemu_pids:
        if kill_qemu(pid, record.workdir):
            removed.append(f"qemu pid {pid}")
    for tap in record.taps:
        if delete_link(tap):
            removed.append(f"tap {tap}")
    if Path(record.workdir).exists():
        shutil.rmtree(record.workdir, ignore_errors=True)
        removed.append(f"dir {record.workdir}")
    return removed


def cleanup_dead_vm_resources(tmp_root: Path | None = None, *, all_runs: bool = False) -> list[str]:
    """Remove tap devices, qemu processes and work dirs of VM runs whose owning kit process is dead
    (of every VM run with `all_runs`)."""
    root = tmp_root or Path(tempfile.gettempdir())
    removed: list[str] = []
    for workdir in sorted(root.glob("stdbc-*-vm-*")):
        record = VmRecord.load(workdir)
        if record is None:
            if workdir.is_dir() and time.time() - workdir.stat().st_mtime > 3600:  # marker never written
                shutil.rmtree(workdir, ignore_errors=True)
                removed.append(f"dir {workdir}")
            continue
        if all_runs or not record.owner_alive():
            removed += release(record)
    return removed
