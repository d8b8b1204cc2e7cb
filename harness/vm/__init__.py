"""The VM backend's building blocks: base image (image), qemu machine (machine), ssh, QMP, networking.

Public API:
- ensure_vm_image(progress) -> VmImage            build once, cached by recipe hash
- VirtualMachine(run_id, image, ...)              context manager: up() / down(), reboot, data disk ops
- LabNic(bridge, address, gateway, dns)           optional NIC on the lab's docker bridge (tap device)
- create_disk(path, size)                         an empty volume image (qcow2)
- cleanup_dead_vm_resources()                     sweep qemu/tap/temp dirs of dead runs
- choose_accel(kernel)                            "kvm" when it really works, else "tcg" (warning)
"""

from harness.vm.accel import choose_accel
from harness.vm.image import VmImage, ensure_vm_image
from harness.vm.machine import SnapshotJob, VirtualMachine, create_disk
from harness.vm.net import LabNic
from harness.vm.resources import cleanup_dead_vm_resources

__all__ = ["LabNic", "SnapshotJob", "VirtualMachine", "VmImage", "choose_accel", "cleanup_dead_vm_resources",
           "create_disk", "ensure_vm_image"]
