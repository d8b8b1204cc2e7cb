"""The `vm` backend of the Target interface: a qemu VM driven over ssh as the `ubuntu` operator.

Commands go through the OpenSSH client with the VM's per-run key (declared adaptation: the key is
placed in ubuntu's authorized_keys before first boot). `ubuntu` runs `bash -c` in its ssh session;
other users go through `sudo -u USER -H bash -c` and root through `sudo -H bash -c`, each starting
in that user's HOME. testinfra (ssh backend) is the query layer.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from harness.errors import LabError
from harness.targets.base import CommandResult
from harness.vm.command_server import server_for
from harness.vm.machine import GUEST_USER, VirtualMachine
from harness.vm.ssh import ssh_run


def remote_command(command: str, *, user: str, env: dict[str, str] | None = None) -> str:
    """The string ssh hands to ubuntu's login shell to run `command` via `bash -c` as `user`."""
    env_prefix = ("env " + " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items()) + " ") if env else ""
    start_home = shlex.quote('cd ~ 2>/dev/null || cd /; exec bash -c "$0"')
    if user == GUEST_USER:
        return f"cd ~ 2>/dev/null || cd /; {env_prefix}bash -c {shlex.quote(command)}"
    sudo = "sudo -H" if user == "root" else f"sudo -u {shlex.quote(user)} -H"
    return f"{sudo} {env_prefix}bash -c {start_home} {shlex.quote(command)}"


class VmTarget:
    """Target protocol over a running VirtualMachine."""

    backend = "vm"

    def __init__(self, vm: VirtualMachine, *, hostname: str | None = None) -> None:
        self.vm = vm
        self.name = vm.label
        self.hostname = hostname or vm.hostname or "ubuntu"

    # ---- Target protocol -------------------------------------------------------------------------
    def run(self, command: str, *, user: str = "root", timeout: float = 600.0,
            stdin: bytes | None = None, env: dict[str, str] | None = None) -> CommandResult:
        started = time.monotonic()
        done = self._as_root(command, timeout=timeout, env=env) if user == "root" and stdin is None else None
        status, out, err, timed_out = done or ssh_run(self.vm.endpoint, remote_command(command, user=user, env=env),
                                                      timeout=timeout, stdin=stdin)
        return CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"), duration=time.monotonic() - started,
                             user=user, host=self.hostname, timed_out=timed_out)

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        """The argv that starts `argv` on the VM as `user`, for a long-lived process the caller reads and writes
        (the state trace's shell): one ssh session over the VM's master connection."""
        return self.vm.endpoint.argv(remote_command(shlex.join(argv), user=user))

    def _as_root(self, command: str, *, timeout: float, env: dict[str, str] | None
                 ) -> tuple[int, bytes, bytes, bool] | None:
        """Through this process's root command session on the VM (harness/vm/command_server.py), if it can."""
        server = server_for(self.vm.endpoint)
        return server.run(command, timeout=timeout, env=env) if server is not None else None

    def read_file(self, path: str) -> bytes:
        done = self._as_root(f"cat -- {shlex.quote(path)}", timeout=120, env=None)
        status, out, err, timed_out = done or ssh_run(self.vm.endpoint, f"sudo cat -- {shlex.quote(path)}",
                                                      timeout=120)
        if status != 0 or timed_out:
            message = err.decode(errors="replace").strip()
            if "No such file" in message:
                raise FileNotFoundError(path)
            raise LabError(f"{self.name}: cannot read {path}: {message or 'timed out'}")
        return out

    def write_file(self, path: str, content: bytes, *, mode: int = 0o644, owner: str = "root") -> None:
        script = (f'set -e; t=$(mktemp); trap \'rm -f "$t"\' EXIT; cat > "$t"; '
                  f'install -m {mode:04o} -o {shlex.quote(owner)} -g "$(id -gn {shlex.quote(owner)})" '
                  f'"$t" {shlex.quote(path)}')
        status, _, err, timed_out = ssh_run(self.vm.endpoint, f"sudo bash -c {shlex.quote(script)}", timeout=120,
                                            stdin=content)
        if status != 0 or timed_out:
            raise LabError(f"{self.name}: cannot write {path}: {err.decode(errors='replace').strip() or 'timed out'}")

    def address(self) -> str:
        return self.vm.address()

    def boot_id(self) -> str:
        return self.vm.boot_id()

    def reboot(self, timeout: float = 300.0) -> None:
        """Guest `systemctl reboot`; back when ssh answers with a new boot id and systemd settled."""
        started = time.monotonic()
        self.vm.reboot(timeout=timeout)
        remaining = max(10.0, timeout - (time.monotonic() - started))
        result = self.run("systemctl is-system-running --wait", timeout=remaining)
        if result.stdout.strip() not in ("running", "degraded"):
            raise LabError(f"{self.name}: after reboot systemd is {result.stdout.strip() or 'unknown'}")

    def testinfra_host(self) -> Any:
        """testinfra over this target's own `run` (ssh as ubuntu, root via sudo): see testinfra_bridge.py."""
        from harness.targets.testinfra_bridge import host_for  # lazy: only suites need testinfra

        return host_for(self)

    # ---- volume operations (vm backend) ----------------------------------------------------------
    def attach_data_disk(self, path: Path) -> str:
        return self.vm.attach_data_disk(path)

    def detach_data_disk(self) -> str:
        return self.vm.detach_data_disk()

    def snapshot_data_disk(self, dest: Path) -> Path:
        return self.vm.snapshot_data_disk(dest)

    @property
    def adaptations(self) -> list[tuple[str, str, str]]:
        return self.vm.adaptations
