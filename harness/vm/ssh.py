"""OpenSSH client plumbing shared by the VM and VmTarget: per-run key, argv, bounded remote commands.

Every command to one endpoint rides one master connection (ControlMaster=auto, its socket beside the VM's key,
ControlPersist): under TCG a fresh ssh handshake per command costs a noticeable share of a run. A master that
dies with the guest (reboot, power-off) needs nothing: ssh finds no live socket and opens a new connection, which
becomes the next master; a master hung on a frozen guest is ended by the keep-alives of SSH_OPTIONS, after which
ssh falls back to a new connection too. testinfra keeps its own connections (it is given SSH_OPTIONS only).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import LabError
from harness.vm.util import run

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3"]
CONTROL_PERSIST = 120  # seconds an idle master stays; it also ends as soon as the VM (and its port forward) goes
MAX_SOCKET_PATH = 88  # sun_path is 108 bytes and ssh appends ".XXXXXXXXXXXXXXXX" while it creates the socket


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str
    key: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def control_path(self) -> Path:
        """The master's socket: beside the key (the VM's workdir, the same in every process of the run), or a short
        /tmp name derived from it when that path would be too long for a unix socket."""
        path = self.key.parent / f"cm-{self.port}"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(f"{self.key}:{self.port}".encode()).hexdigest()[:16]
        return Path("/tmp") / f"stdbc-cm-{digest}"

    def argv(self, remote_command: str | None = None, *, connect_timeout: float = 10.0) -> list[str]:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), *SSH_OPTIONS,
                "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_path}", "-o", f"ControlPersist={CONTROL_PERSIST}",
                f"{self.user}@{self.host}"]
        if remote_command is not None:
            argv += ["--", remote_command]
        return argv


def generate_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at `path` (+ .pub); returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=30,
        what="ssh-keygen")
    return path.with_suffix(".pub").read_text().strip()


def ssh_run(endpoint: SshEndpoint, remote_command: str, *, timeout: float, stdin: bytes | None = None,
            connect_timeout: float = 10.0) -> tuple[int, bytes, bytes, bool]:
    """Run one remote command; returns (exit status, stdout, stderr, timed_out). Status 255 = ssh failure."""
    try:
        proc = subprocess.run(endpoint.argv(remote_command, connect_timeout=connect_timeout), input=stdin or b"",
                              capture_output=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise LabError("the OpenSSH client is not installed", hint="apt-get install openssh-client") from exc
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or b"", exc.stderr or b"", True
    return proc.returncode, proc.stdout, proc.stderr, False


def wait_for_ssh(endpoint: SshEndpoint, *, timeout: float, alive: Callable[[], bool] = lambda: True,
                 what: str = "ssh") -> str:
    """Wait (bounded) until `true` runs over ssh; returns the guest boot id. `alive()` False aborts early."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not alive():
            raise LabError(f"{what}: the VM stopped while waiting for ssh ({last})")
        status, out, err, _ = ssh_run(endpoint, "cat /proc/sys/kernel/random/boot_id", timeout=20,
                                      connect_timeout=5)
        if status == 0 and out.strip():
            return out.decode().strip()
        lines = err.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit {status}"
        time.sleep(1.0)
    raise LabError(f"{what}: no ssh answer from {endpoint.host}:{endpoint.port} within {timeout:.0f}s "
                   f"(last: {last or 'nothing'})")
