"""One long-lived root session per VM and process for the kit's own root commands.

Under TCG every root command over ssh paid for an ssh session (sshd's fork, PAM, a login shell) and for `sudo`
(PAM again): 0.4-1 s each, most of a vm run's probing. Instead the first root command of a process opens one
session over the VM's master connection, `sudo -H python3 -u -c SERVER` (harness/targets/command_session.py),
and every later root command is one JSON line to it. The session ends with the master connection (reboots,
power-offs, teardown: `close_for`), on stdin's end when the process exits, or when an answer does not come
within the command's timeout plus a margin.
"""

from __future__ import annotations

import os
import shlex
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness.targets.command_session import SERVER, CommandSession

if TYPE_CHECKING:  # a parameter's type only: harness.vm.ssh imports this module to close its sessions
    from harness.vm.ssh import SshEndpoint

START_TIMEOUT = 60.0  # python3 starting under TCG on a busy guest
CommandServer = CommandSession

_SERVERS: dict[str, CommandSession] = {}
_FAILED: set[str] = set()  # VMs whose server did not start: not tried again until their master is ended
_REGISTRY_LOCK = threading.Lock()


def server_for(endpoint: SshEndpoint) -> CommandSession | None:
    """This process's server for the VM behind `endpoint` (started on first use while its master is alive)."""
    if endpoint.control_path is None or os.environ.get("STDBC_VM_COMMAND_SERVER") == "0":
        return None
    key = str(endpoint.control_path)
    with _REGISTRY_LOCK:
        server = _SERVERS.get(key)
        if server is not None and not server.broken:
            return server
        if key in _FAILED or not endpoint.master_alive():
            return None
        try:
            server = CommandServer(endpoint.argv(
                f"sudo -H env PYTHONCOERCECLOCALE=0 python3 -u -c {shlex.quote(SERVER)}"),
                start_timeout=START_TIMEOUT)
        except OSError:
            _FAILED.add(key)
            return None
        if server.broken:
            _FAILED.add(key)
            return None
        _SERVERS[key] = server
        return server


def close_for(control_path: Path | None) -> None:
    """End this process's server on that VM (its master connection is going away: reboot, power-off, down)."""
    if control_path is None:
        return
    with _REGISTRY_LOCK:
        server = _SERVERS.pop(str(control_path), None)
        _FAILED.discard(str(control_path))
    if server is not None:
        server.close()
