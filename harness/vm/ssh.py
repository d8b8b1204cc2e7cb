"""OpenSSH client plumbing shared by the VM and VmTarget: per-run key, argv, bounded remote commands.

One connection, many queries: while a VM runs, one OpenSSH master connection (ControlMaster, its socket in
the VM's own folder, so named after the run) carries every command as a new session over it. Under TCG a
new connection costs the guest ~1.2 s of key exchange and sshd start; a session over the master ~0.1 s.
Commands never start a master themselves (`ControlMaster=no`): without a live master ssh connects directly,
so a master that died with a reboot costs speed, never a command. The VM starts the master after every
boot and ends it before every reboot, power-off and teardown; it also ends by itself within ~15 s of the
guest going away (ServerAlive).
"""

from __future__ import annotations

import dataclasses
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
    control_path: Path | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    def argv(self, remote_command: str | None = None, *, connect_timeout: float = 10.0) -> list[str]:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), *SSH_OPTIONS, *self.mux_options("no"),
                "-o", f"ConnectTimeout={max(1, int(connect_timeout))}", f"{self.user}@{self.host}"]
        if remote_command is not None:
            argv += ["--", remote_command]
        return argv


    def mux_options(self, master: str) -> list[str]:
        if self.control_path is None:
            return []
        return ["-o", f"ControlMaster={master}", "-o", f"ControlPath={self.control_path}"]

    def master_alive(self) -> bool:
        if self.control_path is None or not self.control_path.exists():
            return False
        try:
            return subprocess.run(["ssh", *self.mux_options("no"), "-O", "check", f"{self.user}@{self.host}"],
                                  capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def start_master(self, *, timeout: float = 30.0) -> bool:
        """Open the master connection in the background (bounded); False when it could not (commands then
        connect one by one, as before)."""
        if self.control_path is None:
            return False
        if self.master_alive():
            return True
        self.control_path.unlink(missing_ok=True)  # a socket left by a master that died with the guest
        argv = ["ssh", "-i", str(self.key), "-p", str(self.port), *SSH_OPTIONS, *self.mux_options("yes"),
                "-o", "ControlPersist=yes", "-o", "ConnectTimeout=10", "-f", "-N", f"{self.user}@{self.host}"]
        try:
            # the backgrounded master keeps no pipe of ours open: its stdio is /dev/null
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and self.master_alive()

    def stop_master(self) -> None:
        """End the master connection (bounded; nothing to do when there is none), and this process's command
        session over it first."""
        from harness.vm.command_server import close_for  # the command session module builds on this one

        close_for(self.control_path)
        if self.control_path is None or not self.control_path.exists():
            return
        try:
            subprocess.run(["ssh", *self.mux_options("no"), "-O", "exit", f"{self.user}@{self.host}"],
                           capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.control_path.unlink(missing_ok=True)


def generate_key(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at `path` (+ .pub); returns the public key line."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], timeout=30,
        what="ssh-keygen")
    return path.with_suffix(".pub").read_text().strip()


def ssh_run(endpoint: SshEndpoint, remote_command: str, *, timeout: float, stdin: bytes | None = None,
            connect_timeout: float = 10.0) -> tuple[int, bytes, bytes, bool]:
    """Run one remote command; returns (exit status, stdout, stderr, timed_out). Status 255 = ssh failure.
    A session the master connection could not open (it was dying, or the guest's sshd refused one more
    session) is sent again once on a connection of its own."""
    result = _ssh_once(endpoint, remote_command, timeout=timeout, stdin=stdin, connect_timeout=connect_timeout)
    if endpoint.control_path is not None and result[0] == 255 and not result[3] and _mux_failure(result[2]):
        direct = dataclasses.replace(endpoint, control_path=None)
        return _ssh_once(direct, remote_command, timeout=timeout, stdin=stdin, connect_timeout=connect_timeout)
    return result


# failures before the guest ran anything (a session that never opened); a session that broke later is not
# sent again: the command may have run
MUX_FAILURES = (b"Session open refused", b"session request failed", b"hello_exchange")


def _mux_failure(stderr: bytes) -> bool:
    return any(marker in stderr for marker in MUX_FAILURES)


def _ssh_once(endpoint: SshEndpoint, remote_command: str, *, timeout: float, stdin: bytes | None,
              connect_timeout: float) -> tuple[int, bytes, bytes, bool]:
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
