"""Small HTTP and websocket clients for the stand-in tests (stdlib only, bounded by timeouts)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The shared test server runs with these websocket timings (seconds).
WS_PING_INTERVAL = 0.3
WS_IDLE_TIMEOUT = 1.5


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base_url: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> Reply:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if isinstance(body, str) else body
    try:
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        raw = [(k.lower(), v) for k, v in response.getheaders()]
        return Reply(response.status, dict(raw), raw, response.read())
    finally:
        connection.close()


def post_json(base_url: str, path: str, payload: Any, token: str | None = None, timeout: float = 30) -> Reply:
    return call(
        base_url, "POST", path, json.dumps(payload), token, {"Content-Type": "application/json"}, timeout
    )


def new_identity(base_url: str) -> tuple[str, str]:
    reply = call(base_url, "POST", "/v1/identity")
    assert reply.status == 200, reply.text
    data = reply.json()
    return data["identity"], data["token"]


class WsClosed(Exception):
    pass


class WsClient:
    """A raw RFC 6455 client: handshake, masked frames, replies to pings unless told not to."""

    def __init__(
        self,
        base_url: str,
        path: str,
        protocols: list[str] | None,
        token: str | None = None,
        timeout: float = 10,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, self.buffer = self._read_head()
        status_line, *header_lines = head.split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        self.pings_received = 0
        self.auto_pong = True

    def _read_head(self) -> tuple[str, bytearray]:
        data = bytearray()
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        return head.decode(), bytearray(rest)

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buffer) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("no websocket frame in time")
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WsClosed("connection closed")
            self.buffer += chunk

    def read_frame(self, timeout: float = 10) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        opcode = self.buffer[0] & 0x0F
        length = self.buffer[1] & 0x7F
        offset = 2
        if length == 126:
            self._fill(4, deadline)
            length = struct.unpack_from(">H", self.buffer, 2)[0]
            offset = 4
        elif length == 127:
            self._fill(10, deadline)
            length = struct.unpack_from(">Q", self.buffer, 2)[0]
            offset = 10
        assert not self.buffer[1] & 0x80, "server frames must not be masked"
        self._fill(offset + length, deadline)
        payload = bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        return opcode, payload

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytearray([0x80 | opcode])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def send_json(self, message: Any) -> None:
        self.send(0x1, json.dumps(message).encode())

    def next_message(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next text/binary message; pings are counted (and answered when auto_pong)."""
        deadline = time.monotonic() + timeout
        while True:
            opcode, payload = self.read_frame(max(0.05, deadline - time.monotonic()))
            if opcode == 0x9:
                self.pings_received += 1
                if self.auto_pong:
                    self.send(0xA, payload)
                continue
            if opcode == 0x8:
                raise WsClosed(f"close frame {payload[:2].hex()}")
            return opcode, payload

    def next_json(self, timeout: float = 10) -> dict[str, Any]:
        opcode, payload = self.next_message(timeout)
        assert opcode == 0x1, f"expected a text frame, got opcode {opcode}"
        return json.loads(payload)

    def close(self) -> None:
        try:
            self.send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()
