"""The request agent sent to lab containers (harness/agents/http_probe.py), run here against a loopback server:
path bytes go out verbatim, answers come back as JSON lines, every request is bounded in time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "harness" / "agents" / "http_probe.py"


@pytest.fixture()
def raw_server():  # type: ignore[no-untyped-def]
    """A loopback TCP server that records each request line and answers per path; `/silent` never answers."""
    seen: list[str] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            seen.append(line)
            if " /silent " in line:
                stop.wait(3)
                return
            body = json.dumps({"line": line}).encode()
            conn.sendall(b"HTTP/1.1 418 Teapot\r\nX-Backend: yes\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], seen
    stop.set()
    thread.join(timeout=5)
    srv.close()


def _agent(requests: list[dict], *flags: str) -> list[dict]:
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([sys.executable, "-u", "-c", AGENT.read_text(), *flags], input=stdin, capture_output=True,
                          text=True, timeout=60)
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.parametrize("path", ["/v1/database/a%2Fb/sql", "/v1/x/../identity", "//v1//identity",
                                  "/V1/Identity/?q=1&token=x", "/" + "a" * 3000])
def test_paths_are_sent_verbatim(raw_server, path: str) -> None:  # type: ignore[no-untyped-def]
    port, seen = raw_server
    [result] = _agent([{"id": 1, "scheme": "http", "host": "127.0.0.1", "port": port, "server_name": "stdb.test",
                        "method": "PATCH", "path": path, "timeout": 5}])
    assert result["status"] == 418 and result["headers"]["x-backend"] == "yes"
    assert seen == [f"PATCH {path} HTTP/1.1"]
    assert json.loads(result["body"])["line"] == f"PATCH {path} HTTP/1.1"


def test_batch_and_per_request_timeout(raw_server) -> None:  # type: ignore[no-untyped-def]
    port, _ = raw_server
    started = time.monotonic()
    results = _agent([{"id": i, "scheme": "http", "host": "127.0.0.1", "port": port, "method": "GET",
                       "path": "/silent" if i == 2 else f"/r{i}", "timeout": 1} for i in range(1, 4)])
    assert [r["id"] for r in results] == [1, 2, 3]
    assert results[1]["status"] == 0 and results[1]["error"]
    assert results[0]["status"] == 418 and results[2]["status"] == 418
    assert time.monotonic() - started < 20


def test_connection_refused_is_data() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    [result] = _agent([{"id": 1, "scheme": "http", "host": "127.0.0.1", "port": port, "method": "GET",
                        "path": "/", "timeout": 2}])
    assert result["status"] == 0 and "Refused" in result["error"]


def test_connect_flag_overrides_the_address_not_the_name(raw_server) -> None:  # type: ignore[no-untyped-def]
    """--connect: the TCP connection goes to the given address; the request's host stays its name (a vantage
    whose resolver does not know the domain). Without the flag the host is the address (tests above)."""
    port, seen = raw_server
    [result] = _agent([{"id": 1, "scheme": "http", "host": "stdb.unresolvable.invalid", "port": port,
                        "method": "GET", "path": "/via-connect", "timeout": 5}], "--connect", "127.0.0.1")
    assert result["status"] == 418, result
    assert seen == ["GET /via-connect HTTP/1.1"]
