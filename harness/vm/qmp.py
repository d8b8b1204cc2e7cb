"""A minimal QMP (QEMU Machine Protocol) client over a unix socket: commands and events, all bounded."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from harness.errors import LabError


class QmpError(LabError):
    """QEMU answered a QMP command with an error."""


class Qmp:
    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buffer = b""

    def connect(self, *, wait: float = 30.0) -> Qmp:
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise LabError(f"QMP socket {self.path} did not answer within {wait:.0f}s: {exc}") from exc
                time.sleep(0.2)
        self._sock = sock
        greeting = self._read_message(self.timeout)
        if "QMP" not in greeting:
            raise LabError(f"unexpected QMP greeting: {greeting}")
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        if self._sock is None:
            raise LabError("QMP is not connected")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                reply = self._read_message(max(0.1, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise LabError(f"QMP {command}: no answer within {timeout or self.timeout:.0f}s") from exc
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QmpError(f"QMP {command} failed: {err.get('class')}: {err.get('desc')}")
            return reply.get("return")

    def wait_event(self, name: str, *, timeout: float, match: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return (and consume) the first event `name` whose data contains `match`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                data = event.get("data", {})
                if event.get("event") == name and all(data.get(k) == v for k, v in (match or {}).items()):
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"QMP event {name} {match or ''} did not arrive within {timeout:.0f}s")
            try:
                self.events.append(self._read_message(min(remaining, 5.0)))
            except TimeoutError:
                continue

    def _read_message(self, timeout: float) -> dict[str, Any]:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("QMP read timed out")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as exc:  # connection reset etc.
                raise LabError(f"QMP connection lost: {exc}") from exc
            if not chunk:
                raise LabError("QMP connection closed by QEMU")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)
