"""Fast tests of the VM backend's building blocks (no VM is booted)."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.vm import recipe
from harness.vm.accel import choose_accel
from harness.vm.image import VmImage
from harness.vm.machine import KERNEL_APPEND, VirtualMachine
from harness.vm.net import LabNic, lab_mac, lab_network_file, tap_name
from harness.vm.qmp import Qmp, QmpError
from harness.vm.resources import MARKER, VmRecord, cleanup_dead_vm_resources, process_alive
from harness.vm.target import VmTarget, remote_command

IS_ROOT = os.geteuid() == 0


def _image(tmp_path: Path) -> VmImage:
    return VmImage(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.img", root_disk=tmp_path / "root.qcow2",
                   key="k", built=False, seconds=0.0)


# ---- recipe / cache key ---------------------------------------------------------------------------
def test_cache_key_is_stable_and_follows_the_recipe():
    data = recipe.recipe()
    assert recipe.cache_key(data) == recipe.cache_key(recipe.recipe()) == recipe.cache_key()
    changed = dict(data, packages=[*recipe.PACKAGES, "htop"])
    assert recipe.cache_key(changed) != recipe.cache_key(data)
    assert len(recipe.cache_key()) == 16


def test_recipe_has_a_cloud_server_package_set():
    for name in ("openssh-server", "python3", "curl", "ca-certificates", "nano", "ufw", "e2fsprogs", "fdisk",
                 "util-linux", "iproute2", "udev", "sudo", "linux-image-virtual", "systemd-resolved"):
        assert name in recipe.PACKAGES


def test_mirror_is_read_from_debootstrap_sources_list():
    assert recipe.mirror_from_sources_list("deb http://mirror.invalid/ubuntu noble main\n") == \
        "http://mirror.invalid/ubuntu"
    assert recipe.mirror_from_sources_list("# c\ndeb [arch=amd64] http://m.invalid/u noble main\n") == \
        "http://m.invalid/u"
    with pytest.raises(ValueError):
        recipe.mirror_from_sources_list("# nothing\n")


def test_deb822_sources_like_a_cloud_image():
    text = recipe.sources_deb822("http://mirror.invalid/ubuntu")
    stanzas = [s for s in text.split("\n\n") if s.strip()]
    assert len(stanzas) == 2
    suites = [line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("Suites:")]
    assert suites == [["noble", "noble-updates"], ["noble-security"]]
    assert text.count("Components: main restricted universe multiverse") == 2
    assert text.count("URIs: http://mirror.invalid/ubuntu") == 2
    assert "Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg" in text


def test_no_archive_url_in_the_vm_sources():
    """The archive is whatever debootstrap used (read back from the rootfs), never a URL in the code."""
    for path in Path(recipe.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "http://" not in text and "https://" not in text, path


def test_configure_script_makes_the_cloud_user():
    script = recipe.configure_script()
    assert "useradd" in script and "passwd --lock ubuntu" in script
    assert "ubuntu ALL=(ALL) NOPASSWD:ALL" in recipe.SUDOERS
    assert "systemctl enable systemd-networkd.service" in script and "ssh.socket" in script
    assert "ENABLED=no" in script  # ufw installed but inactive
    assert ": > /etc/machine-id" in script


# ---- networking -----------------------------------------------------------------------------------
def test_tap_names_carry_the_run_id_and_fit_ifnamsiz():
    assert tap_name("deadbeef", 0) == "stdbcdeadbeeft0"
    assert all(len(tap_name("0123456789abcdef", i)) <= 15 for i in range(10))


def test_lab_network_file_is_static_and_matched_by_mac():
    nic = LabNic(bridge="br-x", address="172.18.0.50/16", gateway="172.18.0.1", dns=["172.18.0.2"])
    mac = lab_mac("deadbeef", "target")
    assert mac.startswith("52:54:00:") and mac == lab_mac("deadbeef", "target") != lab_mac("deadbeef", "other")
    text = lab_network_file(nic, mac)
    assert f"MACAddress={mac}" in text and "Address=172.18.0.50/16" in text
    assert "DNS=172.18.0.2" in text and "Domains=~." in text and "Gateway=172.18.0.1" in text
    assert "DHCP" not in text
    plain = lab_network_file(LabNic(bridge="br-x", address="10.9.0.5/24"), mac)
    assert "Gateway" not in plain and "DNS=" not in plain


def test_lab_nic_validation():
    with pytest.raises(ValueError):
        LabNic(bridge="br-x", address="172.18.0.50")
    with pytest.raises(ValueError):
        LabNic(bridge="br-x", address="172.18.0.50/16", gateway="10.0.0.1")
    assert LabNic(bridge="br-x", address="172.18.0.50/16").ip == "172.18.0.50"


# ---- qemu command line ------------------------------------------------------------------------------
def test_qemu_command_line(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path), accel="tcg",
                             lab_nic=LabNic(bridge="br-x", address="172.18.0.50/16"),
                             data_disk=tmp_path / "data.qcow2")
    (tmp_path / "data.qcow2").write_bytes(b"QFI\xfb" + b"\0" * 100)
    machine.workdir = tmp_path
    machine.ssh_port = 2222
    machine.tap = "stdbcdeadbeeft0"
    argv = machine.qemu_argv()
    joined = " ".join(argv)
    assert argv[argv.index("-append") + 1] == KERNEL_APPEND
    assert "root=LABEL=cloudimg-rootfs" in KERNEL_APPEND and "console=ttyS0" in KERNEL_APPEND
    assert "pc,accel=tcg" in joined and "-cpu max" in joined
    assert "nvme,id=nvme-root,drive=root0,serial=stdbc-root,bus=pci.0,addr=0x4" in joined
    assert "nvme,id=nvme-data,drive=data0,serial=stdbc-data,bus=pci.0,addr=0x5" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert "tap,id=net1,ifname=stdbcdeadbeeft0,script=no,downscript=no" in joined
    assert "stdbc-deadbeef-target-root.qcow2" in joined and "stdbc-deadbeef-target" in argv[argv.index("-name") + 1]
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    assert [b["driver"] for b in blockdevs] == ["qcow2", "qcow2"]
    assert blockdevs[1]["file"]["filename"] == str(tmp_path / "data.qcow2")


def test_pci_slots_keep_the_data_disk_slot_free_for_hotplug(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path), accel="tcg",
                             lab_nic=LabNic(bridge="br-x", address="172.18.0.50/16"))
    machine.workdir = tmp_path
    machine.tap = "stdbcdeadbeeft0"
    devices = [a for i, a in enumerate(machine.qemu_argv()) if i and machine.qemu_argv()[i - 1] == "-device"]
    slots = [d.split("addr=")[1].split(",")[0] for d in devices if "addr=" in d]
    assert len(slots) == len(devices) == 4 and len(set(slots)) == 4, devices  # every device placed explicitly
    assert "0x5" not in slots  # the data disk's slot, hot-plugged later


def test_boot_panic_is_seen_only_after_the_boot_started(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path))
    machine.workdir = tmp_path
    machine.serial_path.write_text("[ 9.3] Kernel panic - not syncing: old boot\n")
    offset = machine.serial_path.stat().st_size
    assert machine._panic_since(0).startswith("[ 9.3] Kernel panic")
    assert machine._panic_since(offset) == ""
    with open(machine.serial_path, "a") as handle:
        handle.write("booting\n[ 8.1] Kernel panic - not syncing: Fatal exception in interrupt\n")
    assert "Fatal exception" in machine._panic_since(offset)


def test_qemu_command_line_minimal_kvm(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path), accel="kvm")
    machine.workdir = tmp_path
    joined = " ".join(machine.qemu_argv())
    assert "accel=kvm" in joined and "-cpu host" in joined
    assert "nvme-data" not in joined and "tap," not in joined
    assert machine.address() == "127.0.0.1"
    assert [a[0] for a in machine.adaptations] == ["vm-ssh-key", "vm-direct-kernel-boot", "vm-ssh-hostkeys"]


def test_down_before_up_is_harmless(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path))
    machine.down()
    machine.down()


def test_accel_override(monkeypatch, tmp_path):
    monkeypatch.setenv("STDB_VM_ACCEL", "tcg")
    assert choose_accel(tmp_path / "vmlinuz", progress=lambda _m: None) == "tcg"
    monkeypatch.setenv("STDB_VM_ACCEL", "kvm")
    assert choose_accel(tmp_path / "vmlinuz", progress=lambda _m: None) == "kvm"


def test_kvm_flavour_names_the_vendor_module_or_pvm(tmp_path):
    from harness.vm.accel import kvm_flavour, pvm_reason

    assert kvm_flavour(tmp_path) == "unknown"
    (tmp_path / "kvm").mkdir()
    (tmp_path / "kvm_pvm").mkdir()
    assert kvm_flavour(tmp_path) == "pvm"
    (tmp_path / "kvm_amd").mkdir()
    assert kvm_flavour(tmp_path) == "amd"
    assert "guest kernels built as PVM guests" in pvm_reason("no serial output")
    assert pvm_reason("no serial output").endswith("no serial output")


# ---- ssh command strings ----------------------------------------------------------------------------
def test_remote_command_shapes():
    assert remote_command("id", user="root").startswith("sudo -H bash -c ")
    assert remote_command("id", user="spacetimedb").startswith("sudo -u spacetimedb -H bash -c ")
    assert remote_command("id", user="ubuntu").endswith("bash -c id")
    assert "env 'A=1 2' bash -c" in remote_command("id", user="root", env={"A": "1 2"})


def test_remote_command_quoting_round_trips_through_a_shell(tmp_path):
    """The ubuntu form is what ubuntu's login shell receives; run it with bash to check the quoting."""
    command = "printf '%s|' \"$0\" \"$X\" 'single $HOME' \"dq \\\"x\\\"\"; echo"
    line = remote_command(command, user="ubuntu", env={"X": "it's $y"})
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env={"HOME": str(tmp_path),
                         "PATH": os.environ["PATH"]}, timeout=10)
    assert out.stdout == "bash|it's $y|single $HOME|dq \"x\"|\n"


def test_remote_command_sudo_form_runs_command_in_home(tmp_path, monkeypatch):
    """Strip the sudo prefix and run the rest: the command starts in HOME and sees $0 = bash."""
    line = remote_command("pwd; echo \"$0\"", user="root").removeprefix("sudo -H ")
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=10,
                         env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]}, cwd="/")
    assert out.stdout.split() == [str(tmp_path), "bash"]


def test_vm_target_identity(tmp_path):
    machine = VirtualMachine("deadbeef", _image(tmp_path), hostname="stdb-target")
    target = VmTarget(machine)
    assert (target.backend, target.name, target.hostname) == ("vm", "stdbc-deadbeef-target", "stdb-target")


def test_vm_commands_and_the_trace_shell_go_over_the_vms_master_connection(tmp_path):
    """Every command argv names the VM's own control socket without starting a master itself (ControlMaster=no:
    with no live master ssh connects directly); the long-lived shell of the state trace is root's bash."""
    machine = VirtualMachine("deadbeef", _image(tmp_path), hostname="stdb-target")
    machine.workdir = tmp_path / "vm"
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        machine.ssh_port = probe.getsockname()[1]
    argv = VmTarget(machine).popen_argv(["bash"], user="root")
    assert argv[0] == "ssh" and "ControlMaster=no" in argv and f"ControlPath={tmp_path / 'vm' / 'ssh.ctl'}" in argv
    assert argv[-1].startswith("sudo -H bash -c ") and argv[-1].endswith(" bash")
    assert "ControlMaster=no" in machine.endpoint.argv("true")
    assert not machine.endpoint.master_alive() and not machine.endpoint.start_master(timeout=5)  # nothing listens


# ---- QMP ----------------------------------------------------------------------------------------------
def test_qmp_commands_errors_and_events(tmp_path):
    path = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        stream = conn.makefile("rwb")
        stream.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        stream.flush()
        for line in stream:
            cmd = json.loads(line)["execute"]
            if cmd == "qmp_capabilities":
                stream.write(b'{"return": {}}\n')
            elif cmd == "query-status":
                stream.write(b'{"event": "RESUME", "data": {}}\n{"return": {"status": "running"}}\n')
            elif cmd == "device_del":
                stream.write(b'{"return": {}}\n{"event": "DEVICE_DELETED", "data": {"device": "d1"}}\n')
            else:
                stream.write(b'{"error": {"class": "GenericError", "desc": "nope"}}\n')
            stream.flush()
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    qmp = Qmp(path, timeout=5).connect(wait=5)
    try:
        assert qmp.execute("query-status") == {"status": "running"}
        assert qmp.events[0]["event"] == "RESUME"
        qmp.execute("device_del", {"id": "d1"})
        assert qmp.wait_event("DEVICE_DELETED", timeout=5, match={"device": "d1"})["data"]["device"] == "d1"
        with pytest.raises(QmpError, match="nope"):
            qmp.execute("bogus")
    finally:
        qmp.close()
        server.close()


# ---- leftovers of dead runs ---------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(not IS_ROOT or not shutil.which("ip"), reason="needs root to create a tap device")
def test_cleanup_removes_resources_of_dead_runs_only(tmp_path):
    dead_dir = tmp_path / "stdbc-0badf00d-vm-target-x1"
    live_dir = tmp_path / "stdbc-0goodf00-vm-target-x2"
    dead_dir.mkdir()
    live_dir.mkdir()
    tap = tap_name("0badf00d", 7)
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True, timeout=15)
    # the fake qemu says "up" once it runs (its command line then names the run's folder, which is what cleanup
    # matches a pid by); the interpreter itself, never a PATH shim that execs it later
    fake_qemu = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)",
                                  str(dead_dir)], stdout=subprocess.PIPE)
    try:
        assert fake_qemu.stdout is not None
        ready, _, _ = select.select([fake_qemu.stdout], [], [], 60)
        assert ready and fake_qemu.stdout.readline() == b"up\n", "the fake qemu did not start within 60 s"
        assert str(dead_dir).encode() in Path(f"/proc/{fake_qemu.pid}/cmdline").read_bytes()
        dead = VmRecord(run_id="0badf00d", name="target", workdir=str(dead_dir), kit_pid=_dead_pid(),
                        taps=[tap], qemu_pids=[fake_qemu.pid, os.getpid()])  # own pid: cmdline check spares it
        dead.save()
        VmRecord(run_id="0goodf00", name="target", workdir=str(live_dir)).save()
        removed = cleanup_dead_vm_resources(tmp_path)
        assert f"tap {tap}" in removed and f"qemu pid {fake_qemu.pid}" in removed, removed
        assert fake_qemu.wait(timeout=30) is not None
        assert not dead_dir.exists() and not Path(f"/sys/class/net/{tap}").exists()
        assert (live_dir / MARKER).is_file() and process_alive(os.getpid())
    finally:
        if fake_qemu.poll() is None:
            fake_qemu.kill()
        subprocess.run(["ip", "link", "del", tap], capture_output=True, timeout=15)


# ---- disk editing (qemu-img + qemu-storage-daemon + debugfs; no VM) ----------------------------------
@pytest.mark.skipif(not IS_ROOT or not all(shutil.which(t) for t in ("qemu-img", "qemu-storage-daemon", "debugfs")),
                    reason="needs root, qemu-utils, qemu-system-common, e2fsprogs")
def test_write_files_into_a_qcow2_overlay(tmp_path):
    from harness.vm.diskedit import FileSpec, fsck, read_file, write_files

    base = tmp_path / "base.raw"
    subprocess.run(["truncate", "-s", "64M", str(base)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(base)], check=True, timeout=60)
    qcow = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(base), str(qcow)], check=True, timeout=60)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(qcow), "-F", "qcow2", str(overlay)],
                   check=True, timeout=60)
    write_files(overlay, [FileSpec("/home/ubuntu/.ssh/authorized_keys", b"ssh-ed25519 AAAA k\n", 0o600, 1000, 1000),
                          FileSpec("/etc/hostname", b"one\n")])
    write_files(overlay, [FileSpec("/etc/hostname", b"two\n")])  # replace
    assert read_file(overlay, "/etc/hostname") == b"two\n"
    assert read_file(qcow, "/etc/hostname") is None  # the base is untouched
    assert read_file(overlay, "/nope") is None
    stat = subprocess.run(["debugfs", "-R", "stat /home/ubuntu/.ssh/authorized_keys", str(_raw(overlay, tmp_path))],
                          capture_output=True, text=True, timeout=60).stdout
    assert "User:  1000" in stat and "Group:  1000" in stat and "Mode:  0600" in stat
    assert fsck(overlay, repair=False)[0] == 0


def _raw(image: Path, tmp_path: Path) -> Path:
    out = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True, timeout=60)
    return out
