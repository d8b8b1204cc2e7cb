"""The target interface every backend implements, and the command result it returns."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class CommandResult:
    """What one command did: the evidence unit of transcripts and checks."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration: float
    user: str = "root"
    host: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "user": self.user,
            "command": self.command,
            "exit_status": self.exit_status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration": round(self.duration, 3),
            "timed_out": self.timed_out,
        }


class Target(Protocol):
    """A host the runbook is applied to."""

    name: str  # backend-specific handle (container name, VM name, ssh host)
    backend: str  # "docker" | "vm" | "ssh"
    hostname: str  # the host's name on the lab network

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0,
            stdin: bytes | None = None, env: dict[str, str] | None = None) -> CommandResult:
        """Run `command` through `bash -c` as `user` (with that user's HOME; cwd = HOME when it exists)."""
        ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, content: bytes, *, mode: int = 0o644, owner: str = "root") -> None: ...

    def address(self) -> str:
        """IP address of the host on the lab network."""
        ...

    def boot_id(self) -> str: ...

    def reboot(self, timeout: float = 300.0) -> None:
        """Reboot and wait until the host is back (systemd reached running/degraded)."""
        ...

    def testinfra_host(self) -> Any:
        """A testinfra Host bound to this target (the query layer for suites)."""
        ...


def wait_until(predicate, *, timeout: float, interval: float = 0.5, what: str = "condition") -> None:
    """Poll `predicate` until true, bounded by `timeout` seconds; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
