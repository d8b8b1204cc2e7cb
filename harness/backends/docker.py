"""Backend `docker://`: the target is a systemd container on the lab network, built fresh per run.

The EBS data volume is a loop device seen in the container as /dev/nvme1n1 (declared adaptation). A
snapshot freezes the file system at /stdb and copies the loop device's backing file: file-system
consistent, which is stronger than an EBS snapshot and so does not prove a crash-consistency claim. A
container shares the host's kernel: it has no reboot of its own, and after a restart systemd skips
block-device fstab entries (no udev), so mount persistence cannot be proven here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.backends import TargetUrl
from harness.backends.base import Capability, HostAccess, Progress, RecoveryHost, SnapshotInfo, TargetBackend
from harness.errors import LabError
from harness.lab.docker import docker
from harness.lab.docker_target import DockerTarget
from harness.lab.services import (
    DATA_DEVICE,
    RECOVERY_HOSTNAME,
    TARGET_HOSTNAME,
    Adaptation,
    LabServices,
)

DATA_SIZE_MB = 1024
CHECKPOINT_REPO = "stdb-conformance/checkpoint"
CHECKPOINT_LABEL = "stdbc.checkpoint"
SYSTEMD_FLAGS = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
                 "--security-opt", "apparmor=unconfined", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                 "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker", "--stop-signal", "SIGRTMIN+3"]
CONSISTENCY = ("filesystem-consistent, NOT crash-consistent: fsfreeze of /stdb in the target container, copy of "
               "the loop device's backing file, unfreeze (writes block for the copy; the service keeps running). "
               "Stronger than an EBS snapshot: it does not prove the runbook's crash-consistency claim (a backend "
               "with a crash-consistent volume snapshot does, e.g. vm://)")


class DockerBackend(TargetBackend):
    scheme = "docker"
    capabilities = frozenset({Capability.COMMANDS, Capability.FILES, Capability.BUILDS_HOST, Capability.MUTATION,
                              Capability.RESTART, Capability.VOLUME_SNAPSHOT, Capability.RECOVERY_HOST,
                              Capability.LAB_NETWORK, Capability.CHECKPOINT})
    limitations = {
        Capability.REBOOT: ("the docker backend cannot prove mount persistence: after a container restart systemd "
                            "skips block-device fstab entries and there is no udev, and a container has no boot of "
                            "its own (run with --backend vm)"),
        Capability.VOLUME_DETACH: "a container's data volume cannot be detached across a boot (run with --backend vm)",
    }

    def __init__(self, run_id: str, *, container: str = "", ip: str = "", loop_device: str = "",
                 volume_file: str = "", extra_loop_devices: list[str] | None = None,
                 data_volume: bool = True) -> None:
        self.run_id = run_id
        self.container = container
        self.ip = ip
        self.loop_device = loop_device
        self.volume_file = volume_file
        self.extra_loop_devices = list(extra_loop_devices or [])
        self.data_volume = data_volume
        self.adaptations: list[Adaptation] = []
        self.readiness: dict[str, Any] = {}
        self._lab: LabServices | None = None

    @classmethod
    def for_run(cls, run_id: str, url: TargetUrl, access: HostAccess, workdir: Path) -> DockerBackend:
        return cls(run_id)

    @classmethod
    def preflight(cls) -> None:
        from harness.lab.preflight import check_environment

        check_environment(loop_device=True)

    # ---- state ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "run_id": self.run_id, "container": self.container, "ip": self.ip,
                "loop_device": self.loop_device, "volume_file": self.volume_file,
                "extra_loop_devices": self.extra_loop_devices, "data_volume": self.data_volume}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DockerBackend:
        return cls(state["run_id"], container=state.get("container", ""), ip=state.get("ip", ""),
                   loop_device=state.get("loop_device", ""), volume_file=state.get("volume_file", ""),
                   extra_loop_devices=state.get("extra_loop_devices") or [],
                   data_volume=bool(state.get("data_volume", True)))

    @property
    def target(self) -> DockerTarget:
        if not self.container:
            raise LabError("the docker target is not up")
        return DockerTarget(self.container, TARGET_HOSTNAME, self.ip)

    def facts(self) -> dict[str, Any]:
        return {"container": self.container, "data_volume": self.loop_device or None}

    # ---- up / down -----------------------------------------------------------------------------------------
    def up(self, lab: LabServices | None, progress: Progress) -> None:
        if lab is None:
            raise LabError("the docker backend builds its target inside a lab")
        self._lab = lab
        self.ip = lab.target_ip
        image = lab.s.image
        if self.restore_from is not None:
            image = self.restore_from[1]["image"]
        if self.data_volume:
            self._loop_device(lab, progress)
        argv = ["--hostname", TARGET_HOSTNAME, "--network-alias", lab.domain, *SYSTEMD_FLAGS]
        if self.loop_device:
            argv += ["--device", f"{self.loop_device}:{DATA_DEVICE}"]
        self.container = lab.run_container("target", [*argv, image, "/lib/systemd/systemd"], progress)
        target = self.target
        state = target.wait_running(timeout=90)
        progress(f"target {self.container} ({self.ip}, {lab.domain}): systemd {state}")
        sshd = target.run("systemctl is-active ssh.socket ssh.service", timeout=15)
        if "active" not in sshd.stdout.split():
            # images built before the ssh-hostkeys ordering fix (harness/lab/image.py) lose ssh.socket's start
            # job at some boots: start it, and say so
            started = target.run("systemctl start ssh.socket", timeout=30)
            self.readiness["target ssh.socket"] = {"after_boot": " ".join(sshd.stdout.split()),
                                                   "started_by_kit": started.ok}
            self.adaptations.append(Adaptation(
                "lab.ssh-socket-started", "ssh.socket was not active after the target booted; the kit started it",
                f"systemctl is-active ssh.socket ssh.service: {' '.join(sshd.stdout.split())}; "
                f"systemctl start ssh.socket: exit {started.exit_status}"))
            progress(f"target: ssh.socket was not active after boot; started it (exit {started.exit_status})")

    def _loop_device(self, lab: LabServices, progress: Progress) -> None:
        backing = lab.workdir / "data-volume.img"
        made = self.restore_from[1] if self.restore_from is not None else {}
        kept = self.restore_from[0] / made["volume"] if self.restore_from is not None and made.get("volume") else None
        if kept is not None:
            proc = subprocess.run(["cp", "--sparse=always", str(kept), str(backing)], capture_output=True, text=True,
                                  timeout=600)
            if proc.returncode != 0:
                raise LabError(f"cannot copy the checkpoint's data volume: {proc.stderr.strip()}")
        else:
            with open(backing, "wb") as handle:
                handle.truncate(DATA_SIZE_MB * 1024 * 1024)
        self.volume_file = str(backing)
        self.loop_device = _losetup_find(backing, "the data volume")
        progress(f"data volume: {DATA_SIZE_MB} MiB loop device {self.loop_device} -> {DATA_DEVICE} on the target")
        self.adaptations.append(Adaptation(
            "lab.data-volume", f"the EBS data volume is a {DATA_SIZE_MB} MiB loop device seen as {DATA_DEVICE}",
            f"{self.loop_device} backed by {backing}"))

    def down(self) -> None:
        """Remove the target container and detach this run's loop devices (recorded ones, and any whose backing
        file is one of this run's: a `losetup --find --show` interrupted before its answer was recorded)."""
        if self.container:
            try:
                docker("rm", "-f", "-v", self.container, check=False, timeout=120)
            except LabError:
                pass
        devices = {d for d in [self.loop_device, *self.extra_loop_devices] if d}
        try:
            proc = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, timeout=30)
            for dev in (json.loads(proc.stdout).get("loopdevices", []) if proc.stdout.strip() else []):
                if f"/stdbc-{self.run_id}-" in (dev.get("back-file") or ""):
                    devices.add(dev["name"])
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        for device in sorted(devices):
            try:
                subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass

    # ---- checkpoints (harness.checkpoint) ---------------------------------------------------------------------
    def save_checkpoint(self, directory: Path, key: str) -> dict[str, Any]:
        """The container's file system committed as an image (paused for the commit), and a copy of the data
        volume's backing file (the caller has seen no block device mounted, so nothing writes to it)."""
        tag = f"{CHECKPOINT_REPO}:{key[:32]}"
        docker("commit", "--pause=true", "--change", f"LABEL {CHECKPOINT_LABEL}={key[:32]}", self.container, tag,
               timeout=300, what="commit the target for a checkpoint")
        made: dict[str, Any] = {"scheme": self.scheme, "image": tag}
        if self.volume_file:
            proc = subprocess.run(["cp", "--sparse=always", self.volume_file, str(directory / "volume.img")],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                docker("rmi", "-f", tag, check=False, timeout=120)
                raise LabError(f"cannot copy the data volume for a checkpoint: {proc.stderr.strip()}")
            made["volume"] = "volume.img"
        return made

    @staticmethod
    def checkpoint_present(made: dict[str, Any]) -> bool:
        image = (made.get("backend") or {}).get("image", "")
        return bool(image) and docker("image", "inspect", image, check=False, timeout=30).returncode == 0

    @staticmethod
    def remove_checkpoint(made: dict[str, Any]) -> None:
        if made.get("image"):
            docker("rmi", "-f", made["image"], check=False, timeout=120)

    # ---- capabilities ----------------------------------------------------------------------------------------
    def snapshot_volume(self, dest: Path, *, freeze: str = "/stdb",
                        during: Callable[[], None] | None = None) -> SnapshotInfo:
        """fsfreeze of `freeze`, a sparse copy of the backing file, unfreeze; `during` runs after the copy."""
        if not self.volume_file:
            raise LabError("this docker target has no data volume to snapshot")
        target = self.target
        began = time.monotonic()
        frozen = target.run(f"fsfreeze --freeze {shlex.quote(freeze)}", timeout=60) if freeze else None
        try:
            proc = subprocess.run(["cp", "--sparse=always", self.volume_file, str(dest)], capture_output=True,
                                  text=True, timeout=600)
        finally:
            if frozen is not None and frozen.ok:
                target.run(f"fsfreeze --unfreeze {shlex.quote(freeze)}", timeout=60)
        seconds = time.monotonic() - began
        if proc.returncode != 0:
            raise LabError(f"cannot copy the data volume: {proc.stderr.strip()}")
        if during is not None:
            during()
        ok = frozen is not None and frozen.ok
        return SnapshotInfo(dest, "fsfreeze + copy of the volume's backing file" if ok
                            else "copy of the volume's backing file (no freeze: crash-consistent at best)",
                            CONSISTENCY if ok else "unfrozen copy of the backing file (fsfreeze failed): "
                            "crash-consistent at best",
                            {"source": self.volume_file, "seconds": round(seconds, 2),
                             "frozen": ok, "crash_consistent_claim_proven": False})

    def recovery_host(self, progress: Progress) -> DockerRecoveryHost:
        if self._lab is None:
            raise LabError("a recovery host needs the lab this target was built in")
        host = DockerRecoveryHost(self, self._lab)
        host.start(progress)
        return host


class DockerRecoveryHost(RecoveryHost):
    """A second, fresh container like the target before the runbook ran, with its own empty volume."""

    def __init__(self, backend: DockerBackend, lab: LabServices) -> None:
        self.backend = backend
        self.lab = lab
        self.container = ""
        self.loop = ""

    def start(self, progress: Progress) -> None:
        if self.lab.has("recovery"):
            raise LabError("this lab already has a recovery host")
        own = self.lab.workdir / "recovery-own-volume.img"
        with open(own, "wb") as handle:
            handle.truncate(DATA_SIZE_MB * 1024 * 1024)
        self.loop = _losetup_find(own, "the recovery host's volume")
        self.backend.extra_loop_devices.append(self.loop)
        argv = ["--hostname", RECOVERY_HOSTNAME, *SYSTEMD_FLAGS, "--device", f"{self.loop}:{DATA_DEVICE}"]
        self.container = self.lab.run_container("recovery", [*argv, self.lab.s.image, "/lib/systemd/systemd"],
                                                progress)
        host = self.target
        host.wait_running(timeout=90)
        self.lab.install_lab_ca(host, "recovery host")

    @property
    def target(self) -> DockerTarget:
        return DockerTarget(self.container, RECOVERY_HOSTNAME, self.lab.s.ips["recovery"])

    def before_step(self, step: Any) -> str | None:
        return None

    def volume_image(self, snapshot: Path, dest: Path) -> dict[str, Any]:
        proc = subprocess.run(["cp", "--sparse=always", str(snapshot), str(dest)], capture_output=True, text=True,
                              timeout=600)
        return {"status": "ok" if proc.returncode == 0 else "failed", "performed_by": "kit (docker backend)",
                "detail": f"copy {snapshot.name} -> {dest.name}", "error": proc.stderr.strip()[-300:]}

    def replace_volume(self, volume: Path) -> dict[str, Any]:
        docker("stop", "-t", "30", self.container, timeout=90, what="stop the recovery container")
        for command in (["losetup", "-d", self.loop], ["losetup", self.loop, str(volume)]):
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise LabError(f"cannot re-point {self.loop} at the restored volume ({' '.join(command)}): "
                               f"{proc.stderr.strip()}")
        docker("start", self.container, timeout=90, what="start the recovery container")
        state = self.target.wait_running(timeout=120)
        # That start is the lab's, not the runbook's (attaching a volume boots nothing): at it the runbook's enabled
        # service found /stdb unmounted (a container mounts no block device from fstab), failed and restarted
        # until systemd's start limit, which would refuse the runbook's own `systemctl start` minutes later when
        # the machine is slow (seen in CI). What that boot failed is forgotten before the runbook goes on.
        failed = self.target.run("systemctl list-units --state=failed --no-legend --plain | awk '{print $1}'; "
                                 "systemctl reset-failed", timeout=60)
        units = " ".join(failed.stdout.split())
        return {"detail": (f"stopped the recovery container, re-pointed its {DATA_DEVICE} ({self.loop}) from its "
                           f"own volume to {volume.name}, started it (systemd {state}); units that failed at that "
                           f"start, reset with systemctl reset-failed: {units or 'none'}")}

    def restored_volume_path(self) -> Path:
        return self.lab.workdir / "restored-volume.img"

    def release(self) -> None:
        """The lab's teardown removes the container and the backend's loop devices; nothing to do early."""


def _losetup_find(backing: Path, what: str) -> str:
    proc = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise LabError(f"cannot attach a loop device for {what}: {proc.stderr.strip()}",
                       hint="the docker backend needs root and loop devices (modprobe loop)")
    return proc.stdout.strip()
