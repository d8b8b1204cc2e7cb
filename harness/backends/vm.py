"""Backend `vm://`: the target is a qemu VM on the lab network, booted fresh per run from the cached image.

The VM is owned by the process that started it (`stdb-conformance run`): only that process reboots it,
attaches or detaches its data disk and snapshots it (QMP). The suites' pytest processes re-attach from the
state for ssh access only. The runbook's console step that creates and attaches the data volume is performed
by this backend (a new disk hot-plugged as /dev/nvme1n1) right before the next step that runs.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.backends import TargetUrl
from harness.backends.base import Capability, HostAccess, Progress, RecoveryHost, SnapshotInfo, TargetBackend
from harness.errors import LabError
from harness.lab.services import (
    DATA_DEVICE,
    RECOVERY_HOSTNAME,
    TARGET_HOSTNAME,
    Adaptation,
    LabServices,
    host_nameservers,
)
from harness.targets.base import Target
from harness.vm.lab_target import VmHandle, start_vm_target

CONSISTENCY = ("crash-consistent: qemu blockdev-backup (sync=full) of the running guest's data disk, the image "
               "as it was at the job's start, while the writer goes on (like an EBS snapshot: no freeze, no stop)")


class VmBackend(TargetBackend):
    scheme = "vm"
    capabilities = frozenset({Capability.COMMANDS, Capability.FILES, Capability.BUILDS_HOST, Capability.MUTATION,
                              Capability.REBOOT, Capability.VOLUME_DETACH, Capability.VOLUME_HOTPLUG,
                              Capability.VOLUME_SNAPSHOT, Capability.RECOVERY_HOST, Capability.LAB_NETWORK})

    def __init__(self, run_id: str, *, vm_state: dict[str, Any] | None = None,
                 recovery_state: dict[str, Any] | None = None, attach_before: int | None = None) -> None:
        self.run_id = run_id
        self.vm_state = dict(vm_state or {})
        self.recovery_state = dict(recovery_state or {})
        self.attach_before = attach_before  # plan index of the step right after the console attach
        self.adaptations: list[Adaptation] = []
        self.readiness: dict[str, Any] = {}
        self._handle: VmHandle | None = None
        self._lab: LabServices | None = None
        self._detached: Path | None = None  # the data disk while a boot runs without it

    @classmethod
    def for_run(cls, run_id: str, url: TargetUrl, access: HostAccess, workdir: Path) -> VmBackend:
        return cls(run_id)

    @classmethod
    def preflight(cls) -> None:
        from harness.lab.preflight import check_environment

        check_environment(qemu=True)

    @classmethod
    def prepare(cls, progress: Progress) -> dict[str, Any]:
        from harness.vm.image import ensure_vm_image

        image = ensure_vm_image(progress)
        return {"vm_image": {k: str(v) for k, v in getattr(image, "__dict__", {}).items()}}

    # ---- state ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        if self._handle is not None:
            self.vm_state = self._handle.state()
        return {"scheme": self.scheme, "run_id": self.run_id, "vm": self.vm_state,
                "recovery_vm": self.recovery_state, "attach_before": self.attach_before}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> VmBackend:
        return cls(state["run_id"], vm_state=state.get("vm"), recovery_state=state.get("recovery_vm"),
                   attach_before=state.get("attach_before"))

    @property
    def handle(self) -> VmHandle:
        if self._handle is None:
            self._handle = VmHandle.from_state(self.vm_state)
        return self._handle

    @property
    def target(self) -> Target:
        return self.handle.target

    def facts(self) -> dict[str, Any]:
        vm = self.state()["vm"]
        return {"vm": {"accel": vm.get("accel"), "first_boot_seconds": vm.get("boot_seconds"),
                       "kernel": vm.get("image", {}).get("kernel_version"),
                       "image_key": vm.get("image", {}).get("key")}}

    # ---- up / down -----------------------------------------------------------------------------------------
    def up(self, lab: LabServices | None, progress: Progress) -> None:
        if lab is None:
            raise LabError("the vm backend builds its target inside a lab")
        self._lab = lab
        self._handle = _start_vm(lab, "target", TARGET_HOSTNAME, progress)
        self.vm_state = self._handle.state()

    def down(self) -> None:
        for state in (self.recovery_state, self.vm_state):
            if not state:
                continue
            try:
                VmHandle.from_state(state).down()
            except Exception:  # noqa: BLE001 - the lab's sweep still runs
                pass
        if self._handle is not None:
            try:
                self._handle.down()
            except Exception:  # noqa: BLE001
                pass
        self.recovery_state = {}

    def keep(self) -> None:
        from harness.vm.resources import VmRecord

        record = VmRecord.load(Path(self.state()["vm"]["workdir"]))
        if record is not None:
            record.kept = True
            record.save()

    # ---- the runbook's console attach, performed by the backend ------------------------------------------
    def follow_plan(self, plan: Any) -> None:
        seen_attach = False
        for step in plan.steps:
            if step.phase != "apply":
                continue
            if step.kind.value == "console" and re.search(r"\battach", step.raw or "", re.I) \
                    and re.search(r"volume", step.raw or "", re.I):
                seen_attach = True
            elif seen_attach and step.runs:
                self.attach_before = step.index
                return

    def before_step(self, step: Any) -> str | None:
        if self.attach_before is None or step.index != self.attach_before:
            return None
        handle = self.handle
        disk = handle.new_volume("data-volume")
        how = handle.vm.attach_data_disk(disk)
        self.vm_state = handle.state()
        self.adaptations.append(Adaptation(
            "lab.vm-data-volume", "the console steps (create a gp3 volume, attach it) are performed by the vm "
            "backend: a new empty disk attached to the running target as /dev/nvme1n1",
            f"{disk.name}, virtual size {_virtual_size(disk)} (the runbook's 200 GB is checked in the AWS plan), "
            f"attached by {how}; NVMe serial stdbc-data"))
        return f"created a new volume {disk.name} and attached it to the target VM ({how}) as {DATA_DEVICE}"

    # ---- capabilities ----------------------------------------------------------------------------------------
    def reboot(self, timeout: float = 600.0) -> None:
        self.target.reboot(timeout=timeout)
        self.vm_state = self.handle.state()

    def power_off(self, *, hard: bool = False) -> None:
        vm = self.handle.vm
        if not hard:
            vm.shutdown()
            return
        vm.endpoint.stop_master()  # its connection dies with qemu; commands must not queue on it
        # the kit's own qemu process, by its pid
        if vm.proc is not None and vm.proc.poll() is None:
            vm.proc.kill()
            vm.proc.wait(timeout=30)
        if vm.qmp is not None:
            vm.qmp.close()
            vm.qmp = None

    def boot(self, *, with_volume: bool = True, timeout: float | None = None) -> None:
        vm = self.handle.vm
        if not with_volume:
            self._detached = vm.data_disk
            vm.data_disk = None
        elif vm.data_disk is None and self._detached is not None:
            vm.data_disk, self._detached = self._detached, None
        vm.boot(timeout=timeout)
        self.vm_state = self.handle.state()

    def has_volume(self) -> bool:
        return self.handle.vm.data_disk is not None or self._detached is not None

    def running(self) -> bool:
        return self.handle.vm.running

    def serial_tail(self, lines: int = 25) -> str:
        return self.handle.vm.serial_tail(lines)

    def recover(self) -> None:
        """After a failed scenario: qemu stopped hard if it hangs, the volume back, a cold boot."""
        vm = self.handle.vm
        if vm.running and self.target.run("true", timeout=20).ok:
            if vm.data_disk is not None:
                return
        self.power_off(hard=True)
        if vm.data_disk is None and self._detached is not None:
            vm.data_disk, self._detached = self._detached, None
        vm.boot()
        self.vm_state = self.handle.state()

    def snapshot_volume(self, dest: Path, *, freeze: str = "/stdb",
                        during: Callable[[], None] | None = None) -> SnapshotInfo:
        """QMP blockdev-backup: the image as at the job's start; `during` runs while the job copies."""
        del freeze  # crash-consistent on purpose: no freeze, as an EBS snapshot
        vm = self.handle.vm
        job = vm.start_data_disk_snapshot(dest)
        if during is not None:
            during()
        job.wait(timeout=600)
        return SnapshotInfo(dest, "qemu blockdev-backup (sync=full) of the running guest's data disk", CONSISTENCY,
                            {"source": str(vm.data_disk), "seconds": round(job.seconds, 2),
                             "crash_consistent_claim_proven": True})

    def recovery_host(self, progress: Progress) -> VmRecoveryHost:
        if self._lab is None:
            raise LabError("a recovery VM needs the lab this target was built in")
        if self.recovery_state:
            raise LabError("this lab already has a recovery VM")
        handle = _start_vm(self._lab, "recovery", RECOVERY_HOSTNAME, progress)
        self.recovery_state = handle.state()
        # as the run's target: without it the runbook's certbot fails verifying the lab's ACME server
        self._lab.install_lab_ca(handle.target, "recovery VM")
        return VmRecoveryHost(self, handle)


class VmRecoveryHost(RecoveryHost):
    def __init__(self, backend: VmBackend, handle: VmHandle) -> None:
        self.backend = backend
        self.handle = handle

    @property
    def target(self) -> Target:
        return self.handle.target

    def boot_seconds(self) -> float | None:
        return round(self.handle.vm.last_boot_seconds, 1)

    def before_step(self, step: Any) -> str | None:
        if step.index != self.backend.attach_before:
            return None
        disk = self.handle.new_volume("recovery-own-volume")
        how = self.handle.vm.attach_data_disk(disk)
        return f"created a new volume {disk.name} and attached it to the recovery VM ({how}) as {DATA_DEVICE}"

    def volume_image(self, snapshot: Path, dest: Path) -> dict[str, Any]:
        fmt = "raw" if snapshot.suffix in (".raw", ".img") else "qcow2"
        command = ["qemu-img", "convert", "-f", fmt, "-O", "qcow2", str(snapshot), str(dest)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        return {"status": "ok" if proc.returncode == 0 else "failed", "performed_by": "kit (vm backend)",
                "detail": f"qemu-img convert {snapshot.name} -> {dest.name}", "error": proc.stderr.strip()[-300:]}

    def replace_volume(self, volume: Path) -> dict[str, Any]:
        vm = self.handle.vm
        own = vm.data_disk
        vm.shutdown()
        vm.data_disk = volume
        boot_id = vm.boot()
        return {"boot_id": boot_id, "boot_seconds": round(vm.last_boot_seconds, 1),
                "detail": (f"powered the recovery VM off, replaced its own volume "
                           f"({Path(own).name if own else 'none'}) with {volume.name} as {DATA_DEVICE}, booted it")}

    def restored_volume_path(self) -> Path:
        self.handle.disks_dir.mkdir(parents=True, exist_ok=True)
        return self.handle.disks_dir / "restored-volume.qcow2"

    def release(self) -> None:
        self.handle.down()
        self.backend.recovery_state = {}


def _start_vm(lab: LabServices, role: str, hostname: str, progress: Progress) -> VmHandle:
    return start_vm_target(
        run_id=lab.run_id, workdir=lab.workdir, bridge=lab.bridge(), ip=lab.s.ips[role], prefix=24,
        gateway=lab.gateway(), hostname=hostname, hosts=lab.lab_names(), nameservers=host_nameservers(),
        ca_pem=lab.ca_cert_path.read_bytes(), files={}, progress=progress, name=role)


def _virtual_size(disk: Path) -> str:
    proc = subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True, text=True,
                          timeout=30)
    try:
        size = json.loads(proc.stdout)["virtual-size"]
    except (ValueError, KeyError):
        return "unknown"
    return f"{size / 2**30:.0f} GiB"
