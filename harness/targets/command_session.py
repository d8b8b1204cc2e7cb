"""One long-lived root session on a host for the kit's own root commands (vm and docker targets).

Every new `docker exec` costs the engine ~60 ms of CPU and as much wall time (the CLI, dockerd, containerd, its
shim and runc), and every root command over ssh under TCG paid for an ssh session and `sudo` (0.4-1 s). Instead
the first root command of a process starts one session on the host, `python3 -u -c SERVER` as root (started by
the backend: `sudo -H` over the VM's master connection, `docker exec -i -u root` in a container), and every
later root command is one JSON line to it: the server runs `bash -c COMMAND` as root in root's home with the
environment it was started with (what the backend's own way gives a command), stdin empty, bounded by the
command's timeout (its process group killed then: exit 124, timed out), and answers with the exit status and the
exact output bytes.

Used only for root commands without stdin; anything else, and every command while the session is busy (another
thread), broken or not started (the host rebooting), goes the backend's old way. A session ends on stdin's end
when the process exits, when the backend ends it (reboots, teardown), or when an answer does not come within the
command's timeout plus a margin.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import threading
import time

ANSWER_MARGIN = 30.0  # seconds past a command's own timeout before the session counts as broken
START_TIMEOUT = 60.0  # python3 starting under TCG on a busy guest
STOPPED = b"the kit's command session on the host stopped answering"

# stdlib only, run by the host's python3 as root; reads one JSON request per line, writes one JSON answer per line.
# The backend starts it with PYTHONCOERCECLOCALE=0 (under the C locale python would otherwise put LC_CTYPE into
# its own environment, so into every command's); the server takes that variable out again.
SERVER = """\
import base64, json, os, signal, subprocess, sys
home = os.environ.get("HOME") or "/"
os.environ["OLDPWD"] = os.getcwd()  # the backend's own way starts where this did and changes to home, as here
os.environ.pop("SUDO_COMMAND", None)  # this program's own text: not part of a command's environment
os.environ.pop("PYTHONCOERCECLOCALE", None)
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


class CommandSession:
    """The kit's side of one server session: `run` sends a command and reads its answer (one at a time).

    `argv` starts SERVER as root on the host (the backend builds it); `broken` is set when it did not start."""

    def __init__(self, argv: list[str], *, start_timeout: float = START_TIMEOUT) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     bufsize=0, start_new_session=True)
        self.lock = threading.Lock()
        self.broken = False
        self.count = 0
        self.buffer = b""
        self.commands = 0
        if self._read_line(time.monotonic() + start_timeout) is None:
            self.close()

    @property
    def usable(self) -> bool:
        """Not broken and its process still there (a container restarted ends its `docker exec`)."""
        return not self.broken and self.proc.poll() is None

    def run(self, command: str, *, timeout: float, env: dict[str, str] | None = None
            ) -> tuple[int, bytes, bytes, bool] | None:
        """(status, stdout, stderr, timed_out), or None when the session cannot take it (busy, broken): the
        caller runs the command the old way. A session that ends while a command runs answers 124, timed out,
        with STOPPED on stderr (the command may have run: it is not run twice)."""
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
                self.close()
                return 124, b"", STOPPED, True
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
