"""One long-lived root session per VM and process for the kit's own root commands.

Under TCG every root command over ssh paid for an ssh session (sshd's fork, PAM, a login shell) and for `sudo`
(PAM again): 0.4-1 s each, most of a vm run's probing. Instead the first root command of a process opens one
session over the VM's master connection, `sudo -H python3 -u -c SERVER`, and every later root command is one
JSON line to it: the server runs `bash -c COMMAND` as root in root's home, with the environment `sudo -H`
gives (the same a single `sudo -H bash -c` gets), stdin empty, bounded by the command's own timeout (its
process group killed then: exit 124, timed out), and answers with its exit status and exact output bytes.

Used only for root commands without stdin; anything else, and every command while the server is busy (another
thread), broken or not started (the guest rebooting), goes the old way (`ssh_run`). The session ends with the
master connection (reboots, power-offs, teardown: `close_for`), on stdin's end when the process exits, or when
an answer does not come within the command's timeout plus a margin.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a parameter's type only: harness.vm.ssh imports this module to close its sessions
    from harness.vm.ssh import SshEndpoint

ANSWER_MARGIN = 30.0  # seconds past a command's own timeout before the server counts as broken
START_TIMEOUT = 60.0  # python3 starting under TCG on a busy guest

# stdlib only, run by the guest's python3 as root; reads one JSON request per line, writes one JSON answer per line
SERVER = """\
import base64, json, os, signal, subprocess, sys
home = os.environ.get("HOME") or "/"
os.environ.pop("SUDO_COMMAND", None)  # this program's own text: not part of a command's environment
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    env = dict(os.environ, **req.get("env", {}))
    cwd = home if os.path.isdir(home) else "/"
    timed_out = False
    try:
        proc = subprocess.Popen(["bash", "-c", req["command"]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=req["timeout"])
            status = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            status, timed_out = 124, True
    except (OSError, ValueError) as exc:
        out, err, status = b"", str(exc).encode(), 127
    if status < 0:
        status = 128 - status
    print(json.dumps({"id": req["id"], "status": status, "timed_out": timed_out,
                      "out": base64.b64encode(out).decode(), "err": base64.b64encode(err).decode()}), flush=True)
"""

_SERVERS: dict[str, CommandServer] = {}
_FAILED: set[str] = set()  # VMs whose server did not start: not tried again until their master is ended
_REGISTRY_LOCK = threading.Lock()


class CommandServer:
    """The kit's side of one server session: `run` sends a command and reads its answer (one at a time)."""

    def __init__(self, endpoint: SshEndpoint) -> None:
        self.proc = subprocess.Popen(endpoint.argv(f"sudo -H python3 -u -c {shlex.quote(SERVER)}"),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     bufsize=0, start_new_session=True)
        self.lock = threading.Lock()
        self.broken = False
        self.count = 0
        self.buffer = b""
        self.commands = 0
        if self._read_line(time.monotonic() + START_TIMEOUT) is None:
            self.close()

    def run(self, command: str, *, timeout: float, env: dict[str, str] | None = None
            ) -> tuple[int, bytes, bytes, bool] | None:
        """(status, stdout, stderr, timed_out), or None when the server cannot take it (busy, broken): the
        caller runs the command the old way."""
        if self.broken or not self.lock.acquire(blocking=False):
            return None
        try:
            self.count += 1
            request = {"id": self.count, "command": command, "timeout": timeout, "env": env or {}}
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(request) + "\n").encode())
            except OSError:
                self.close()
                return None
            answer = self._read_line(time.monotonic() + timeout + ANSWER_MARGIN)
            if answer is None or answer.get("id") != self.count:
                self.close()  # the command may have run: say it timed out rather than run it twice
                return 124, b"", b"the kit's command session on the VM stopped answering", True
            self.commands += 1
            return (int(answer["status"]), base64.b64decode(answer["out"]), base64.b64decode(answer["err"]),
                    bool(answer["timed_out"]))
        finally:
            self.lock.release()

    def _read_line(self, deadline: float) -> dict | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def close(self) -> None:
        self.broken = True
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)


def server_for(endpoint: SshEndpoint) -> CommandServer | None:
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
            server = CommandServer(endpoint)
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
