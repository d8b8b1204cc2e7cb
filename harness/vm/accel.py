"""Choose the qemu accelerator: KVM when it really works, else TCG with a one-line warning.

`/dev/kvm` can exist and answer ioctls while nested KVM still hangs the guest in early boot, so the
decision is a bounded boot probe: the guest kernel is started under KVM with no root disk and must
reach its "unable to mount root" panic (qemu then exits, -no-reboot) within PROBE_TIMEOUT seconds.
The verdict is cached per host boot id. STDB_VM_ACCEL=kvm|tcg overrides the probe.

On the project's machines /dev/kvm is PVM (module kvm_pvm, kernel option nested_pvm=1): a hypervisor for
machines without hardware virtualisation that runs only guest kernels built as PVM guests. Ubuntu's
kernel is not one: under every CPU model, machine type and clock option tried (host, max, EPYC, qemu64,
kvm64 without x2apic; pc, q35, microvm; no kvmclock, no HPET; early console) it either dies on an MSR
qemu sets (0x10a) or stops at "KVM internal error ... emulation failure" in its decompressor before the
first serial byte. The probe's reason says so when the flavour is PVM.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
from pathlib import Path

from harness.errors import LabError
from harness.vm.util import Progress, Stopwatch, cache_root, host_boot_id, stderr_progress

PROBE_TIMEOUT = 25.0
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
TCG_WARNING = ("KVM is not usable here ({reason}): falling back to TCG emulation; "
               "CPU-bound work in the VM is roughly 10x slower")


KVM_DEVICE = "/dev/kvm"
SYS_MODULES = Path("/sys/module")


def kvm_flavour(modules: Path = SYS_MODULES) -> str:
    """Which KVM this host has: "intel", "amd", "pvm" (the pagetable-based nested hypervisor, which
    runs only guest kernels built as PVM guests) or "unknown" (KVM built in without its vendor module)."""
    for name, flavour in (("kvm_intel", "intel"), ("kvm_amd", "amd"), ("kvm_pvm", "pvm")):
        if (modules / name).exists():
            return flavour
    return "unknown"


def pvm_reason(probe_reason: str) -> str:
    """Why KVM fails on a PVM host, with what the probe saw."""
    return ("KVM here is PVM (module kvm_pvm, no hardware virtualisation in this machine): it runs only guest "
            "kernels built as PVM guests, and Ubuntu's kernel is not one; the probe saw: " + probe_reason)


def kvm_device_ok(device: str = KVM_DEVICE) -> tuple[bool, str]:
    """`device` (/dev/kvm) opens read-write, speaks API 12 and creates a VM."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return False, f"{device}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != 12:
            return False, f"{device} API version {version}"
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
        return True, "KVM_CREATE_VM ok"
    except OSError as exc:
        return False, f"KVM ioctl failed: {exc.strerror}"
    finally:
        os.close(fd)


def kvm_boot_probe(kernel: Path, *, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot `kernel` under KVM without root disk; True when it reaches its root-mount panic in time."""
    with tempfile.TemporaryDirectory(prefix="stdbc-kvmprobe-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
                "-display", "none", "-no-reboot", "-serial", f"file:{log}", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
        watch = Stopwatch()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError as exc:
            raise LabError("qemu-system-x86_64 is not installed", hint="apt-get install qemu-system-x86") from exc
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            seen = "serial output but no panic" if log.exists() and log.stat().st_size else "no serial output"
            return False, f"guest kernel hung under KVM ({seen} after {timeout:.0f}s)"
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Kernel panic" in text or "VFS:" in text:
            return True, f"guest kernel booted under KVM in {watch.seconds:.1f}s"
        reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no kernel output"]
        return False, f"qemu -accel kvm: {reason[0]}"


_WARNED: list[bool] = []  # the TCG warning is printed once per process (a run may boot several VMs)


def choose_accel(kernel: Path, *, progress: Progress = stderr_progress, use_cache: bool = True,
                 device: str = KVM_DEVICE) -> str:
    """Return "kvm" or "tcg" (warning once on stderr when falling back). A missing or unusable `device` is
    never an error: the run goes on under TCG after the one warning line."""
    forced = os.environ.get("STDB_VM_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced
    cache = cache_root() / "accel.json"
    boot = host_boot_id()
    if use_cache:
        try:
            known = json.loads(cache.read_text())
            if known.get("boot_id") == boot and known.get("kernel") == str(kernel):
                if not known["kvm"] and not _WARNED:
                    reason = known["reason"]
                    if kvm_flavour() == "pvm" and "PVM" not in reason:  # a verdict cached before the flavour was named
                        reason = pvm_reason(reason)
                    progress(TCG_WARNING.format(reason=reason))
                    _WARNED.append(True)
                return "kvm" if known["kvm"] else "tcg"
        except (OSError, ValueError, KeyError):
            pass
    ok, reason = kvm_device_ok(device)
    if ok:
        progress("probing KVM with a bounded guest-kernel boot ...")
        ok, reason = kvm_boot_probe(kernel)
        if not ok and kvm_flavour() == "pvm":
            reason = pvm_reason(reason)
    if use_cache:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"boot_id": boot, "kernel": str(kernel), "kvm": ok, "reason": reason}))
        except OSError:  # the verdict cache only saves the next run a probe
            pass
    if not ok and not _WARNED:
        progress(TCG_WARNING.format(reason=reason))
    if not ok:
        _WARNED.append(True)
    return "kvm" if ok else "tcg"
