"""One qemu VM for a run: NVMe root (per-run qcow2 overlay) + optional NVMe data disk, ssh over slirp.

Layout seen by the guest (like an EC2 Nitro instance): root disk /dev/nvme0n1 (PCI slot 4, serial
`stdbc-root`), data disk /dev/nvme1n1 (slot 5, serial `stdbc-data`) when it is hot-plugged after boot; with
both present at boot the NVMe names follow the probe order and may swap (as on EC2), so the kit finds
disks by serial. The kernel is booted directly (`-kernel/-initrd`, `root=LABEL=cloudimg-rootfs`).
Control goes through QMP; guest reboots are real (`systemctl reboot` in the guest; QMP `system_reset`
would be a power-cycle). Every host resource carries the run id and is recorded in a marker before it
is created; `down()` removes them all (idempotent, also on errors).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from harness.errors import LabError
from harness.vm import diskedit
from harness.vm.accel import choose_accel
from harness.vm.image import VmImage
from harness.vm.net import (
    LAB_NETWORK_FILE,
    SLIRP_MAC,
    LabNic,
    create_tap,
    free_local_port,
    lab_mac,
    lab_network_file,
    tap_name,
)
from harness.vm.qmp import Qmp, QmpError
from harness.vm.resources import VmRecord, cleanup_dead_vm_resources, release
from harness.vm.ssh import SshEndpoint, generate_key, ssh_run, wait_for_ssh
from harness.vm.util import Progress, Stopwatch, run, stderr_progress

GUEST_USER = "ubuntu"
GUEST_UID = 1000
# fixed PCI slots: the data disk's slot must stay free for hot-plug (an auto-placed NIC would take it)
RNG_SLOT, SLIRP_SLOT, ROOT_SLOT, DATA_SLOT, LAB_NIC_SLOT = 2, 3, 4, 5, 6
DATA_ID, DATA_NODE, DATA_SERIAL = "nvme-data", "data0", "stdbc-data"
ROOT_SERIAL = "stdbc-root"
# root by file-system label: NVMe controller numbers follow the (asynchronous) probe order, so with two
# disks present at boot the root disk is not always nvme0n1 (seen under TCG: the data disk came up as nvme0)
KERNEL_APPEND = "root=LABEL=cloudimg-rootfs rw console=ttyS0 net.ifnames=1"

ADAPTATIONS = [
    ("vm-ssh-key", "a per-run ssh key is placed in ubuntu's authorized_keys before first boot",
     "cloud providers inject the launch key through cloud-init; the kit writes it into the disk directly"),
    ("vm-direct-kernel-boot", "qemu boots the image's own kernel and initrd directly (no bootloader)",
     "root=LABEL=cloudimg-rootfs; fstab, udev, systemd and reboots are the guest's own"),
    ("vm-ssh-hostkeys", "fresh ssh host keys are made per VM on the host and placed in its disk before first boot",
     "cloud-init generates them on a cloud image; the image itself carries none (a first-boot unit is the fallback)"),
]


def data_disk_format(path: Path) -> str:
    return diskedit.image_format(path)


def create_disk(path: Path, size: str = "2G", fmt: str = "qcow2") -> Path:
    """An empty disk image (sparse): the stand-in for a freshly created EBS volume."""
    run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], timeout=60, what=f"create disk {path.name}")
    return path


class VirtualMachine:
    """A qemu VM labelled with `run_id`; use as a context manager (up on enter, down on exit)."""

    def __init__(self, run_id: str, image: VmImage, *, name: str = "target", hostname: str | None = None,
                 memory_mib: int = 2048, cpus: int = 2, lab_nic: LabNic | None = None,
                 data_disk: Path | None = None, accel: str | None = None, serial_log: Path | None = None,
                 boot_timeout: float = 300.0, progress: Progress = stderr_progress,
                 extra_files: list[diskedit.FileSpec] | None = None) -> None:
        self.run_id = run_id
        self.image = image
        self.name = name
        self.label = f"stdbc-{run_id}-{name}"
        self.hostname = hostname
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.lab_nic = lab_nic
        self.data_disk: Path | None = data_disk
        self.extra_files = list(extra_files or [])
        self.accel = accel
        self.serial_log_copy = serial_log
        self.boot_timeout = boot_timeout
        self.progress = progress
        self.workdir: Path | None = None
        self.record: VmRecord | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: Qmp | None = None
        self.ssh_port = 0
        self.tap: str | None = None
        self.mac = lab_mac(run_id, name)
        self.last_boot_seconds = 0.0
        self._snapshots = 0
        self._down = False
        self.data_device = "/dev/nvme1n1"  # where the data disk is this boot (see verify_disk_layout)
        self.panics: list[str] = []  # guest kernel panics seen during boots (each followed by one retry)

    # ---- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> VirtualMachine:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    def up(self) -> VirtualMachine:
        """Create the overlay, per-run files and network, boot, and wait for ssh. On any failure
        (Ctrl-C included) everything created so far is removed before the error propagates."""
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> VirtualMachine:
        swept = cleanup_dead_vm_resources()
        if swept:
            self.progress(f"removed leftovers of dead VM runs: {', '.join(swept)}")
        self.workdir = Path(tempfile.mkdtemp(prefix=f"stdbc-{self.run_id}-vm-{self.name}-"))
        self.record = VmRecord(run_id=self.run_id, name=self.name, workdir=str(self.workdir))
        self.record.save()
        if self.accel is None:
            self.accel = choose_accel(self.image.kernel, progress=self.progress)
        overlay = self.overlay
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.root_disk), "-F", "qcow2",
             str(overlay)], timeout=60, what="create the VM's root overlay")
        public_key = generate_key(self.key_path, self.label)
        diskedit.write_files(overlay, self._guest_files(public_key) + self._host_keys())
        if self.lab_nic is not None:
            self.tap = tap_name(self.run_id, self._tap_index())
            self.record.taps.append(self.tap)
            self.record.save()
            create_tap(self.tap, self.lab_nic.bridge)
        self.boot()
        return self

    def down(self) -> None:
        """Stop qemu and remove every host resource of this VM. Safe to call twice or after a failed up()."""
        if self._down:
            return
        self._down = True
        if self.workdir is not None:
            self.endpoint.stop_master()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.workdir is not None and self.serial_log_copy is not None and self.serial_path.exists():
            self.serial_log_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.serial_path, self.serial_log_copy)
        if self.record is not None:
            release(self.record)

    def boot(self, timeout: float | None = None) -> str:
        """Start qemu (cold boot) and wait until ssh answers; returns the guest boot id. A guest kernel panic
        during boot (seen intermittently under TCG on a loaded host) gets one more cold boot, reported."""
        try:
            return self._boot_once(timeout)
        except GuestPanic as exc:
            self.progress(f"VM {self.label}: guest kernel panicked during boot ({exc.one_line()}); "
                          "powering off and booting again (once)")
            self.panics.append(exc.one_line())
            self._stop_qemu()
            return self._boot_once(timeout)

    def _stop_qemu(self) -> None:
        self.endpoint.stop_master()
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _panic_since(self, offset: int) -> str:
        try:
            with open(self.serial_path, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return ""
        return next((line.strip() for line in text.splitlines() if "Kernel panic" in line), "")

    def _boot_once(self, timeout: float | None) -> str:
        if self.running:
            raise LabError(f"VM {self.label} is already running")
        offset = self.serial_path.stat().st_size if self.serial_path.exists() else 0
        watch = Stopwatch()
        self.ssh_port = self.ssh_port or free_local_port()  # kept across cold boots (stable ssh address)
        qemu_log = open(self.workdir_path / "qemu.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL, stdout=qemu_log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError as exc:
            raise LabError("qemu-system-x86_64 is not installed", hint="apt-get install qemu-system-x86") from exc
        finally:
            qemu_log.close()
        assert self.record is not None
        self.record.qemu_pids.append(self.proc.pid)
        self.record.save()
        self.qmp = Qmp(self.qmp_path).connect(wait=30)
        try:
            boot_id = self._wait_ssh(timeout or self.boot_timeout, "boot",
                                     alive=lambda: self.running and not self._panic_since(offset))
        except LabError as exc:
            panic = self._panic_since(offset)
            if panic:
                raise GuestPanic(f"VM {self.label}: {panic}") from exc
            raise
        self.last_boot_seconds = watch.seconds
        self.progress(f"VM {self.label}: ssh up {watch.seconds:.0f}s after qemu start ({self.accel})")
        self.endpoint.start_master()
        self.verify_disk_layout()
        return boot_id

    def shutdown(self, timeout: float = 180.0) -> None:
        """Clean guest poweroff (systemctl poweroff), waiting for qemu to exit; bounded, then forced."""
        if not self.running:
            return
        ssh_run(self.endpoint, "sudo systemctl poweroff", timeout=30)
        self.endpoint.stop_master()
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.progress(f"VM {self.label}: guest did not power off in {timeout:.0f}s, stopping qemu")
            self.proc.kill()
            self.proc.wait(timeout=15)
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None

    def reboot(self, timeout: float = 300.0) -> str:
        """Guest reboot (`sudo systemctl reboot`); waits for ssh with a NEW boot id. Returns it."""
        before = self.boot_id()
        watch = Stopwatch()
        ssh_run(self.endpoint, "sudo systemctl reboot", timeout=30)
        self.endpoint.stop_master()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            boot_id = self._wait_ssh(max(1.0, deadline - time.monotonic()), "reboot")
            if boot_id != before:
                self.last_boot_seconds = watch.seconds
                self.progress(f"VM {self.label}: rebooted in {watch.seconds:.0f}s")
                self.endpoint.start_master()
                self.verify_disk_layout()
                return boot_id
            time.sleep(2)
        raise LabError(f"VM {self.label} did not come back with a new boot id within {timeout:.0f}s")

    # ---- data disk -------------------------------------------------------------------------------
    def attach_data_disk(self, path: Path, *, hotplug: bool = True, timeout: float = 120.0) -> str:
        """Attach `path` as /dev/nvme1n1. Hot-plugs (QMP device_add) on a running VM, else boots with it.
        Returns "hotplug", "cold" (shutdown + boot) or "next-boot" (VM not running)."""
        if self.data_disk is not None:
            raise LabError(f"VM {self.label} already has a data disk ({self.data_disk})")
        self.data_disk = Path(path)
        if not self.running:
            return "next-boot"
        if hotplug:
            try:
                self._qmp().execute("blockdev-add", self._data_blockdev())
                self._qmp().execute("device_add", {"driver": "nvme", "id": DATA_ID, "drive": DATA_NODE,
                                                   "serial": DATA_SERIAL, "bus": "pci.0", "addr": hex(DATA_SLOT)})
                self._guest_wait("test -b /dev/nvme1n1", timeout=timeout, what="/dev/nvme1n1 after hot-plug")
                return "hotplug"
            except LabError as exc:
                self.progress(f"VM {self.label}: NVMe hot-plug failed ({exc}); using a shutdown/boot cycle")
                self._unplug_quietly()
        self.shutdown()
        self.boot()
        return "cold"

    def detach_data_disk(self, *, hotplug: bool = True, timeout: float = 60.0) -> str:
        """Detach the data disk (like detaching an EBS volume). Returns "hotplug", "cold" or "next-boot"."""
        if self.data_disk is None:
            return "next-boot"
        if not self.running:
            self.data_disk = None
            return "next-boot"
        if hotplug:
            try:
                self._qmp().execute("device_del", {"id": DATA_ID})
                self._qmp().wait_event("DEVICE_DELETED", timeout=timeout, match={"device": DATA_ID})
                self._qmp().execute("blockdev-del", {"node-name": DATA_NODE})
                self.data_disk = None
                return "hotplug"
            except LabError as exc:
                self.progress(f"VM {self.label}: NVMe hot-unplug failed ({exc}); using a shutdown/boot cycle")
        self.shutdown()
        self.data_disk = None
        self.boot()
        return "cold"

    def snapshot_data_disk(self, dest: Path, *, fmt: str = "qcow2", timeout: float = 600.0) -> Path:
        """Point-in-time copy of the data disk while the guest runs (no freeze: crash-consistent, like an
        EBS snapshot). Returns `dest`, a standalone image (no backing file)."""
        return self.start_data_disk_snapshot(dest, fmt=fmt).wait(timeout)

    def start_data_disk_snapshot(self, dest: Path, *, fmt: str = "qcow2", speed: int = 0) -> SnapshotJob:
        """Start QMP blockdev-backup sync=full of the data disk into `dest` and return at once.

        The copy holds the disk exactly as it was when the job started: guest writes during the job are
        copied-before-write (qemu's copy-before-write filter). `speed` limits bytes/s (0 = unlimited)."""
        if self.data_disk is None or not self.running:
            raise LabError(f"VM {self.label}: no running VM with a data disk to snapshot")
        qmp = self._qmp()
        size = next(b["image"]["virtual-size"] for b in qmp.execute("query-named-block-nodes")
                    if b["node-name"] == DATA_NODE)
        run(["qemu-img", "create", "-q", "-f", fmt, str(dest), str(size)], timeout=60, what="create snapshot image")
        self._snapshots += 1
        node, job = f"snap{self._snapshots}", f"snapjob{self._snapshots}"
        qmp.execute("blockdev-add", {"driver": fmt, "node-name": node,
                                     "file": {"driver": "file", "filename": str(Path(dest).resolve())}})
        try:
            qmp.execute("blockdev-backup", {"job-id": job, "device": DATA_NODE, "target": node, "sync": "full",
                                            "speed": speed, "auto-dismiss": True})
        except BaseException:
            qmp.execute("blockdev-del", {"node-name": node})
            raise
        return SnapshotJob(qmp, job, node, Path(dest), started=time.monotonic())

    # ---- guest access ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> SshEndpoint:
        return SshEndpoint(host="127.0.0.1", port=self.ssh_port, user=GUEST_USER, key=self.key_path,
                           control_path=self.workdir_path / "ssh.ctl")

    def ssh(self, command: str, *, timeout: float = 120.0, stdin: bytes | None = None) -> tuple[int, str, str]:
        status, out, err, timed_out = ssh_run(self.endpoint, command, timeout=timeout, stdin=stdin)
        if timed_out:
            raise LabError(f"VM {self.label}: {command!r} timed out after {timeout:.0f}s")
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def boot_id(self) -> str:
        status, out, err = self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30)
        if status != 0:
            raise LabError(f"VM {self.label}: cannot read the boot id: {err.strip()}")
        return out.strip()

    def verify_disk_layout(self) -> None:
        """The root file system must be on the root disk (serial stdbc-root) and the data disk, when attached,
        present; both are found by serial. NVMe names follow the probe order, which is not stable across
        boots with two disks (as on EC2 Nitro): `data_device` records where the data disk is this boot."""
        status, out, _ = self.ssh("findmnt -no SOURCE /; for d in /sys/block/nvme*n1; do "
                                  "echo ${d##*/} $(cat $d/device/serial); done", timeout=60)
        lines = [x.strip() for x in out.splitlines() if x.strip()]
        serials = dict(line.split(None, 1) for line in lines[1:] if len(line.split(None, 1)) == 2)
        root = lines[0].removeprefix("/dev/") if lines else ""
        if status != 0 or serials.get(root) != ROOT_SERIAL:
            raise LabError(f"VM {self.label}: the root file system is on {root or 'nothing'}, not the root disk "
                           f"(disks by serial: {serials})")
        if self.data_disk is not None:
            found = [name for name, serial in serials.items() if serial == DATA_SERIAL]
            if not found:
                raise LabError(f"VM {self.label}: the data disk is not visible (disks by serial: {serials})")
            self.data_device = f"/dev/{found[0]}"
            if self.data_device != "/dev/nvme1n1":
                self.progress(f"VM {self.label}: NVMe names swapped this boot: the data volume is "
                              f"{self.data_device}, the root disk /dev/{root}")

    def address(self) -> str:
        """The VM's address on the lab network (loopback when it only has the slirp NIC)."""
        return self.lab_nic.ip if self.lab_nic else "127.0.0.1"

    @property
    def adaptations(self) -> list[tuple[str, str, str]]:
        found = list(ADAPTATIONS)
        if self.lab_nic is not None:
            found.append(("vm-lab-network", "the VM's lab-network address is a systemd-networkd file written "
                          "before first boot", f"{self.lab_nic.address} on bridge {self.lab_nic.bridge}"))
        return found

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- command line and files ------------------------------------------------------------------
    @property
    def workdir_path(self) -> Path:
        if self.workdir is None:
            raise LabError(f"VM {self.label} is not up")
        return self.workdir

    @property
    def overlay(self) -> Path:
        return self.workdir_path / f"{self.label}-root.qcow2"

    @property
    def key_path(self) -> Path:
        return self.workdir_path / "id_ed25519"

    @property
    def qmp_path(self) -> Path:
        return self.workdir_path / "qmp.sock"

    @property
    def serial_path(self) -> Path:
        return self.workdir_path / "serial.log"

    def qemu_argv(self) -> list[str]:
        accel = self.accel or "tcg"
        argv = ["qemu-system-x86_64", "-name", f"{self.label},process={self.label}", "-machine", f"pc,accel={accel}",
                "-cpu", "host" if accel == "kvm" else "max", "-m", str(self.memory_mib), "-smp", str(self.cpus),
                "-nodefaults", "-display", "none", "-no-user-config",
                "-chardev", f"file,id=serial0,path={self.serial_path},append=on", "-serial", "chardev:serial0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", KERNEL_APPEND,
                "-blockdev", json.dumps({"driver": "qcow2", "node-name": "root0", "discard": "unmap",
                                         "file": {"driver": "file", "filename": str(self.overlay)}}),
                "-device", f"nvme,id=nvme-root,drive=root0,serial={ROOT_SERIAL},bus=pci.0,addr={hex(ROOT_SLOT)}",
                "-device", f"virtio-rng-pci,bus=pci.0,addr={hex(RNG_SLOT)}",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
                "-device", f"virtio-net-pci,netdev=net0,mac={SLIRP_MAC},bus=pci.0,addr={hex(SLIRP_SLOT)}"]
        if self.data_disk is not None:
            argv += ["-blockdev", json.dumps(self._data_blockdev()),
                     "-device", f"nvme,id={DATA_ID},drive={DATA_NODE},serial={DATA_SERIAL},bus=pci.0,"
                                f"addr={hex(DATA_SLOT)}"]
        if self.tap is not None:
            argv += ["-netdev", f"tap,id=net1,ifname={self.tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=net1,mac={self.mac},bus=pci.0,addr={hex(LAB_NIC_SLOT)}"]
        return argv

    def _data_blockdev(self) -> dict[str, object]:
        assert self.data_disk is not None
        return {"driver": data_disk_format(self.data_disk), "node-name": DATA_NODE, "discard": "unmap",
                "file": {"driver": "file", "filename": str(self.data_disk.resolve())}}

    def _guest_files(self, public_key: str) -> list[diskedit.FileSpec]:
        files = [diskedit.FileSpec(f"/home/{GUEST_USER}/.ssh/authorized_keys", (public_key + "\n").encode(),
                                   mode=0o600, uid=GUEST_UID, gid=GUEST_UID)]
        if self.hostname:
            files.append(diskedit.FileSpec("/etc/hostname", f"{self.hostname}\n".encode()))
            files.append(diskedit.FileSpec("/etc/hosts", hosts_file(self.hostname).encode()))
        if self.lab_nic is not None:
            files.append(diskedit.FileSpec(LAB_NETWORK_FILE, lab_network_file(self.lab_nic, self.mac).encode()))
        overridden = {f.path for f in self.extra_files}
        return [f for f in files if f.path not in overridden] + self.extra_files

    def _host_keys(self) -> list[diskedit.FileSpec]:
        """Fresh ssh host keys for this VM, made on the host (RSA key generation takes ~10 s under TCG)."""
        root = self.workdir_path / "hostkeys"
        (root / "etc/ssh").mkdir(parents=True)
        run(["ssh-keygen", "-A", "-f", str(root)], timeout=60, what="generate ssh host keys")
        return [diskedit.FileSpec(f"/etc/ssh/{p.name}", p.read_bytes(), mode=0o644 if p.suffix == ".pub" else 0o600)
                for p in sorted((root / "etc/ssh").glob("ssh_host_*"))]

    def _tap_index(self) -> int:
        used = {p.name for p in Path("/sys/class/net").iterdir()}
        for index in range(10):
            if tap_name(self.run_id, index) not in used:
                return index
        raise LabError(f"run {self.run_id} already has 10 tap devices")

    # ---- internals -------------------------------------------------------------------------------
    def _qmp(self) -> Qmp:
        if self.qmp is None:
            raise LabError(f"VM {self.label} is not running")
        return self.qmp

    def _wait_ssh(self, timeout: float, what: str, alive: Callable[[], bool] | None = None) -> str:
        try:
            return wait_for_ssh(self.endpoint, timeout=timeout, alive=alive or (lambda: self.running),
                                what=f"VM {self.label} {what}")
        except LabError as exc:
            raise LabError(f"{exc.one_line()}; serial console tail: {self.serial_tail()}") from exc

    def _guest_wait(self, command: str, *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ssh(command, timeout=30)[0] == 0:
                return
            time.sleep(1)
        raise LabError(f"VM {self.label}: {what} not seen within {timeout:.0f}s")

    def _unplug_quietly(self) -> None:
        for command, args in (("device_del", {"id": DATA_ID}), ("blockdev-del", {"node-name": DATA_NODE})):
            try:
                self._qmp().execute(command, args)
                if command == "device_del":
                    self._qmp().wait_event("DEVICE_DELETED", timeout=30, match={"device": DATA_ID})
            except LabError:
                pass

    def serial_tail(self, lines: int = 3) -> str:
        try:
            text = self.serial_path.read_text(errors="replace")
        except (OSError, LabError):
            return "(no serial log)"
        tail = [x.strip() for x in text.splitlines() if x.strip()][-lines:]
        return " | ".join(tail) or "(empty)"


class GuestPanic(LabError):
    """The guest kernel panicked before ssh answered."""


class SnapshotJob:
    """A running point-in-time backup of the data disk (see VirtualMachine.start_data_disk_snapshot)."""

    def __init__(self, qmp: Qmp, job: str, node: str, dest: Path, *, started: float) -> None:
        self.qmp, self.job, self.node, self.dest, self.started = qmp, job, node, dest, started
        self.seconds = 0.0

    def status(self) -> dict[str, object] | None:
        """qemu's view of the job (offset/len/status), or None once it has finished."""
        return next((j for j in self.qmp.execute("query-block-jobs") if j.get("device") == self.job), None)

    def wait(self, timeout: float = 600.0) -> Path:
        try:
            event = self.qmp.wait_event("BLOCK_JOB_COMPLETED", timeout=timeout, match={"device": self.job})
        except BaseException:
            self.cancel()
            raise
        self.qmp.execute("blockdev-del", {"node-name": self.node})
        if event["data"].get("error"):
            raise LabError(f"snapshot of the data disk failed: {event['data']['error']}")
        self.seconds = time.monotonic() - self.started
        return self.dest

    def cancel(self) -> None:
        """Best effort: stop the job and release the target node (the partial image stays at dest)."""
        for command, args in (("block-job-cancel", {"device": self.job, "force": True}),
                              ("blockdev-del", {"node-name": self.node})):
            try:
                self.qmp.execute(command, args)
                if command == "block-job-cancel":
                    self.qmp.wait_event("BLOCK_JOB_CANCELLED", timeout=30, match={"device": self.job})
            except LabError:
                pass


def hosts_file(hostname: str) -> str:
    return (f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n\n::1 ip6-localhost ip6-loopback\n"
            "ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")


__all__ = ["ADAPTATIONS", "QmpError", "SnapshotJob", "VirtualMachine", "create_disk", "hosts_file"]
