"""The `vm` backend inside a lab: the target is a qemu VM on the lab's docker bridge.

`start_vm_target` boots the cached VM image with a NIC on the lab bridge (the target's lab address, so
the remote client, Pebble's HTTP-01 validation and the operator machine reach it as they reach a
container target) and a user-mode NIC for ssh from the host and for the package archives (default
route and DNS come from it by DHCP, like a cloud VPC's). Lab names (the domain, the install mirror,
the ACME CA) are written into the guest's /etc/hosts before first boot (declared adaptation).

The VM is owned by the process that started it (`stdb-conformance run`): only that process reboots it,
attaches or detaches its data disk and snapshots it (QMP). The suites, which run in pytest
subprocesses, re-attach with `VmHandle.from_state` for ssh access only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.vm import diskedit
from harness.vm.image import VmImage, ensure_vm_image
from harness.vm.machine import VirtualMachine, create_disk
from harness.vm.net import LabNic
from harness.vm.resources import VmRecord, process_alive, release
from harness.vm.target import VmTarget

Progress = Callable[[str], None]
DATA_DISK_SIZE = "2G"
LAB_CA_PATH = "/usr/local/share/ca-certificates/stdb-conformance-lab-ca.crt"


def hosts_with_lab_names(hostname: str, names: dict[str, str]) -> str:
    """/etc/hosts of the VM: the cloud-image lines plus the lab's names (name -> address)."""
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {hostname}", "", "# stdb-conformance lab names"]
    by_address: dict[str, list[str]] = {}
    for name, address in names.items():
        by_address.setdefault(address, []).append(name)
    lines += [f"{address} {' '.join(sorted(set(found)))}" for address, found in sorted(by_address.items())]
    lines += ["", "::1 ip6-localhost ip6-loopback", "ff02::1 ip6-allnodes", "ff02::2 ip6-allrouters"]
    return "\n".join(lines) + "\n"


class AttachedVm(VirtualMachine):
    """A view of a VM another process owns: ssh only (no qemu process, no QMP here)."""

    def __init__(self, state: dict[str, Any]) -> None:
        image = VmImage(kernel=Path(state["image"]["kernel"]), initrd=Path(state["image"]["initrd"]),
                        root_disk=Path(state["image"]["root_disk"]), key=state["image"]["key"], built=False,
                        seconds=0.0, kernel_version=state["image"].get("kernel_version", ""))
        super().__init__(state["run_id"], image, name=state["name"], hostname=state["hostname"],
                         accel=state.get("accel"))
        self.workdir = Path(state["workdir"])
        self.ssh_port = int(state["ssh_port"])
        self.record = VmRecord.load(self.workdir)
        self._lab_ip = state.get("ip", "127.0.0.1")
        self.data_disk = Path(state["data_disk"]) if state.get("data_disk") else None

    @property
    def running(self) -> bool:
        record = VmRecord.load(self.workdir) if self.workdir else None
        return bool(record and any(process_alive(pid) for pid in record.qemu_pids))

    def address(self) -> str:
        return self._lab_ip

    def down(self) -> None:
        """Release every resource the marker lists (used by the owning run's teardown and by `clean`)."""
        record = VmRecord.load(self.workdir) if self.workdir else None
        if self.workdir is not None and self.ssh_port:
            self.endpoint.stop_master()
        if record is not None:
            release(record)


@dataclass
class VmHandle:
    """The lab's VM target: the machine, its lab address and where its data disks live."""

    vm: VirtualMachine
    ip: str
    disks_dir: Path

    @property
    def target(self) -> VmTarget:
        return VmTarget(self.vm, hostname=self.vm.hostname)

    def state(self) -> dict[str, Any]:
        image = self.vm.image
        return {"run_id": self.vm.run_id, "name": self.vm.name, "hostname": self.vm.hostname,
                "workdir": str(self.vm.workdir), "ssh_port": self.vm.ssh_port, "ip": self.ip,
                "accel": self.vm.accel, "disks_dir": str(self.disks_dir),
                "data_disk": str(self.vm.data_disk) if self.vm.data_disk else "",
                "boot_seconds": round(self.vm.last_boot_seconds, 1),
                "image": {"kernel": str(image.kernel), "initrd": str(image.initrd),
                          "root_disk": str(image.root_disk), "key": image.key,
                          "kernel_version": image.kernel_version}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> VmHandle:
        if not state or not state.get("workdir"):
            raise LabError("the lab state has no VM (was the lab brought up with --backend vm?)")
        return cls(AttachedVm(state), state.get("ip", "127.0.0.1"), Path(state.get("disks_dir") or state["workdir"]))

    def new_volume(self, name: str, size: str = DATA_DISK_SIZE) -> Path:
        """A fresh, empty volume image (the stand-in for a newly created EBS volume)."""
        self.disks_dir.mkdir(parents=True, exist_ok=True)
        return create_disk(self.disks_dir / f"{name}.qcow2", size)

    def down(self) -> None:
        self.vm.down()


def start_vm_target(*, run_id: str, workdir: Path, bridge: str, ip: str, prefix: int, gateway: str | None,
                    hostname: str, hosts: dict[str, str], nameservers: list[str], ca_pem: bytes,
                    files: dict[str, bytes], progress: Progress, name: str = "target",
                    data_disk: Path | None = None) -> VmHandle:
    """Boot the target VM on the lab bridge at `ip`/`prefix`; returns when ssh answers.

    `gateway` and `nameservers` are recorded but not used as the default route / resolver: the user-mode
    NIC provides both (the lab bridge's gateway is the host itself), so only lab traffic uses the bridge."""
    del gateway, nameservers  # see the docstring: the slirp NIC's DHCP gives route and DNS
    ipaddress.ip_address(ip)
    image = ensure_vm_image(progress)
    nic = LabNic(bridge=bridge, address=f"{ip}/{prefix}")
    extra = [diskedit.FileSpec("/etc/hosts", hosts_with_lab_names(hostname, hosts).encode()),
             diskedit.FileSpec(LAB_CA_PATH, ca_pem)]
    extra += [diskedit.FileSpec(path, content) for path, content in files.items()]
    vm = VirtualMachine(run_id, image, name=name, hostname=hostname, lab_nic=nic, data_disk=data_disk,
                        progress=progress, extra_files=extra)
    vm.up()
    progress(f"{name} VM {vm.label}: {ip} on {bridge}, ssh 127.0.0.1:{vm.ssh_port}, {vm.accel}, "
             f"booted in {vm.last_boot_seconds:.0f}s")
    return VmHandle(vm, ip, Path(workdir) / "volumes")


__all__ = ["AttachedVm", "VmHandle", "hosts_with_lab_names", "start_vm_target"]
