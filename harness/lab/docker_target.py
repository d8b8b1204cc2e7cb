"""The `docker` backend of the Target interface: a systemd container driven with `docker exec`.

The kit's own root commands without stdin go through one long-lived root session per container and process
(harness/targets/command_session.py, started with one `docker exec -i`): a new `docker exec` costs the engine
~60 ms of CPU and as much wall time, and a run sends a few hundred. The runbook's steps (run as its user), and
every command with stdin or while the session is busy, broken or being replaced, go through their own
`docker exec` as before. `STDBC_COMMAND_SESSION=0` turns the sessions off.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import threading
import time
from typing import Any

from harness.errors import LabError
from harness.lab.docker import docker
from harness.targets.base import CommandResult, wait_until
from harness.targets.command_session import SERVER, STOPPED, CommandSession

# Run in the user's HOME (as an ssh login would), then hand the command to `bash -c` unchanged.
_ENGINE_SAID = re.compile(r"^(Cannot connect to the Docker daemon|Error response from daemon: )", re.MULTILINE)
_IN_HOME = 'cd "$HOME" 2>/dev/null || cd /; exec bash -c "$0"'
SESSION_START_TIMEOUT = 30.0
SESSION_WRITE_LIMIT = 64 * 1024  # bytes of a file written through the session
SESSION_RETRY_AFTER = 10.0  # a session that could not start (container stopped, no python3) is tried again after

_SESSIONS: dict[str, tuple[CommandSession, str]] = {}  # container -> (session, the container's StartedAt then)
_RETRY_AT: dict[str, float] = {}
_SESSIONS_LOCK = threading.Lock()


def _started_at(container: str) -> str:
    proc = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", container],
                          capture_output=True, timeout=30)
    return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else ""


def session_for(container: str) -> tuple[CommandSession, str] | None:
    """This process's root session in `container` and the container's start time it began in; None when sessions
    are off or one cannot start now (the caller uses `docker exec`)."""
    if os.environ.get("STDBC_COMMAND_SESSION") == "0":
        return None
    with _SESSIONS_LOCK:
        found = _SESSIONS.get(container)
        if found is not None and found[0].usable:
            return found
        for name, (other, _began) in list(_SESSIONS.items()):  # this one's, and any whose container went away
            if not other.usable:
                _SESSIONS.pop(name)
                other.close()  # reaps its `docker exec`
        if time.monotonic() < _RETRY_AT.get(container, 0.0):
            return None
        started = _started_at(container)
        session: CommandSession | None = None
        if started.startswith("true "):
            try:
                session = CommandSession(
                    ["docker", "exec", "-i", "-u", "root", "-e", "HOME=/root", "-e", "USER=root", "-e",
                     "LOGNAME=root", "-e", "PYTHONCOERCECLOCALE=0", container, "python3", "-u", "-c", SERVER],
                    start_timeout=SESSION_START_TIMEOUT)
            except OSError:
                session = None
        if session is None or session.broken:
            _RETRY_AT[container] = time.monotonic() + SESSION_RETRY_AFTER
            return None
        _SESSIONS[container] = (session, started)
        return _SESSIONS[container]


def end_session(container: str) -> None:
    """End this process's session in `container` (it restarts, or goes away)."""
    with _SESSIONS_LOCK:
        found = _SESSIONS.pop(container, None)
        _RETRY_AT.pop(container, None)
    if found is not None:
        found[0].close()


class DockerTarget:
    """A lab container reached with `docker exec` (no ssh needed; the command is the runbook's own)."""

    backend = "docker"

    def __init__(self, container: str, hostname: str, ip: str) -> None:
        self.name = container
        self.hostname = hostname
        self.ip = ip

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0,
            stdin: bytes | None = None, env: dict[str, str] | None = None) -> CommandResult:
        started = time.monotonic()
        done = self._as_root(command, timeout=timeout, env=env) if user == "root" and stdin is None else None
        if done is not None:
            status, out, err, timed_out = done
            return CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                                 stderr=err.decode(errors="replace"), duration=time.monotonic() - started,
                                 user=user, host=self.hostname, timed_out=timed_out)
        return self._exec(command, user=user, timeout=timeout, stdin=stdin, env=env)

    def _as_root(self, command: str, *, timeout: float, env: dict[str, str] | None
                 ) -> tuple[int, bytes, bytes, bool] | None:
        """Through this process's root session in the container, if it can take the command. A session that
        ended under the command: the container stopped (the lab's failure, as for `docker exec`), or it restarted
        since the session began (the command went to the old one: None, so it runs now the usual way)."""
        found = session_for(self.name)
        if found is None:
            return None
        session, began = found
        done = session.run(command, timeout=timeout, env=env)
        if done is None or done[2] != STOPPED or done[1]:
            return done
        now = _started_at(self.name)
        if not now.startswith("true "):
            self._require_running(STOPPED.decode())
        return None if now != began else done

    def _exec(self, command: str, *, user: str, timeout: float, stdin: bytes | None,
              env: dict[str, str] | None) -> CommandResult:
        argv = ["docker", "exec", *(["-i"] if stdin is not None else []), "-u", user]
        home = "/root" if user == "root" else f"/home/{user}"
        argv += ["-e", f"HOME={home}", "-e", f"USER={user}", "-e", f"LOGNAME={user}"]
        for key, value in (env or {}).items():
            argv += ["-e", f"{key}={value}"]
        # bounded inside the container too: a timed-out `docker exec` alone would leave the command running there
        argv += [self.name, "timeout", "-k", "5", str(max(1, int(timeout))), "bash", "-c", _IN_HOME, command]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, input=stdin if stdin is not None else None, capture_output=True,
                                  timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)
            status, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            status, out, err, timed_out = 124, exc.stdout or b"", exc.stderr or b"", True
        if status == 1 and not out and _ENGINE_SAID.search(err.decode(errors="replace")):
            self._require_running(err.decode(errors="replace"))
        return CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"), duration=time.monotonic() - started,
                             user=user, host=self.hostname, timed_out=timed_out)

    def _require_running(self, said: str) -> None:
        """A `docker exec` that failed the way the engine fails (not running, no such container): when the
        container really is not running, that is the lab's failure, never the command's (the runbook's step, a
        check). When it runs, the words were the command's own (a host that runs docker itself)."""
        proc = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.name], capture_output=True,
                              timeout=30)
        if proc.returncode != 0 or proc.stdout.strip() != b"true":
            line = said.strip().splitlines()[-1][:200] if said.strip() else "no answer"
            raise LabError(f"{self.name}: the docker engine could not run a command in it ({line})",
                           hint="see /var/log/stdb-conformance-dockerd.log; run again")

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        """The argv that starts `argv` in this container as `user`, for a long-lived process the caller reads."""
        return ["docker", "exec", "-u", user, self.name, *argv]

    def read_file(self, path: str) -> bytes:
        done = self._as_root(f"cat -- {shlex.quote(path)}", timeout=60, env=None)
        if done is not None:
            status, out, err, _ = done
        else:
            proc = subprocess.run(["docker", "exec", self.name, "cat", "--", path], capture_output=True, timeout=60)
            status, out, err = proc.returncode, proc.stdout, proc.stderr
        if status != 0:
            message = err.decode(errors="replace").strip()
            if "No such file" in message:
                raise FileNotFoundError(path)
            raise LabError(f"{self.name}: cannot read {path}: {message}")
        return out

    def write_file(self, path: str, content: bytes, *, mode: int = 0o644, owner: str = "root") -> None:
        """Up to SESSION_WRITE_LIMIT bytes go through the root session, as base64 in the command (one argument
        may hold 128 KiB); larger files, or with no session, through their own `docker exec -i`."""
        quoted = shlex.quote(path)
        finish = f"chmod {mode:o} {quoted} && chown {shlex.quote(owner)} {quoted}"
        if len(content) <= SESSION_WRITE_LIMIT:
            data = base64.b64encode(content).decode()
            done = self._as_root(f"mkdir -p -- \"$(dirname -- {quoted})\" && printf %s {data} | base64 -d > "
                                 f"{quoted} && {finish}", timeout=60, env=None)
            if done is not None:
                if done[0] != 0 or done[3]:
                    raise LabError(f"{self.name}: cannot write {path}: {done[2].decode(errors='replace').strip()}")
                return
        script = f"mkdir -p -- \"$(dirname -- {quoted})\" && cat > {quoted} && {finish}"
        proc = subprocess.run(["docker", "exec", "-i", self.name, "sh", "-c", script], input=content,
                              capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise LabError(f"{self.name}: cannot write {path}: {proc.stderr.decode(errors='replace').strip()}")

    def address(self) -> str:
        return self.ip

    def boot_id(self) -> str:
        """The kernel's boot id. A container shares the host kernel, so this does not change on restart."""
        return self.read_file("/proc/sys/kernel/random/boot_id").decode().strip()

    def reboot(self, timeout: float = 300.0) -> None:
        """Restart the container (not a kernel reboot: the boot id stays the host's)."""
        end_session(self.name)
        docker("restart", "-t", "20", self.name, timeout=timeout, what="restart the target")
        self.wait_running(timeout)

    def wait_running(self, timeout: float = 90.0) -> str:
        state = {"value": ""}

        def settled() -> bool:
            res = self.run("systemctl is-system-running", timeout=15)
            if "No such container" in res.stderr:  # removed (the lab is going down): nothing to wait for
                raise LabError(f"{self.name}: the container is gone")
            state["value"] = res.stdout.strip()
            return state["value"] in ("running", "degraded")

        try:
            wait_until(settled, timeout=timeout, interval=0.5, what=f"systemd in {self.name}")
        except TimeoutError as exc:
            raise LabError(f"{self.name}: systemd did not finish booting within {timeout:.0f}s "
                           f"(state: {state['value'] or 'unknown'})") from exc
        return state["value"]

    def testinfra_host(self) -> Any:
        """testinfra over this target's own `run` (docker exec as root): harness/targets/testinfra_bridge.py."""
        from harness.targets.testinfra_bridge import host_for  # lazy: only suites need testinfra

        return host_for(self)

    def to_state(self) -> dict[str, str]:
        return {"backend": "docker", "container": self.name, "hostname": self.hostname, "ip": self.ip}
