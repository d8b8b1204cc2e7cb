"""OpenSSH client plumbing shared by the VM and VmTarget: per-run key, argv, bounded remote commands."""

from __future__ import annotations

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


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str
    key: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    def argv(self, remote_command: str | None = None, *, connect_timeout: float = 10.0) -> list[str]:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), *SSH_OPTIONS,
                "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", f"{self.user}@{self.host}"]
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
