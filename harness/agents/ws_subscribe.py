"""Subscribe to a SpacetimeDB database over ws:// or wss:// and print every server message as one JSON line.

Runs inside a lab host with python3's standard library only. Prints {"event": ...} lines: "upgraded" (status,
echoed subprotocol), then each text message, and exits 0 as soon as a message contains --until, 3 when the
--timeout (seconds) expires first, 2 when the upgrade is refused (status line printed).

usage: python3 ws_subscribe.py URL QUERY --until TEXT [--timeout 30] [--protocol v1.json.spacetimedb]
                              [--connect ADDR] [--cafile FILE]

--connect opens the TCP connection to ADDR while the URL's host stays the Host header and the TLS name (a
vantage without the domain in its resolver); --cafile verifies the server against FILE instead of the system
store. An empty QUERY subscribes to nothing (the server still answers with its initial update): a database
the kit did not publish has no table the kit knows.
"""

import argparse
import base64
import json
import os
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit


def emit(**fields):
    print(json.dumps(fields), flush=True)


def read_exact(sock, n, deadline):
    data = b""
    while len(data) < n:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def send_frame(sock, opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_message(sock, deadline):
    chunks, first_opcode = [], None
    while True:
        b1, b2 = read_exact(sock, 2, deadline)
        opcode, fin, n = b1 & 0x0F, b1 & 0x80, b2 & 0x7F
        if n == 126:
            n = struct.unpack("!H", read_exact(sock, 2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", read_exact(sock, 8, deadline))[0]
        mask = read_exact(sock, 4, deadline) if b2 & 0x80 else None
        payload = read_exact(sock, n, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if opcode == 0x9:
            send_frame(sock, 0xA, payload)
            continue
        if opcode == 0x8:
            raise EOFError("server closed the websocket")
        if opcode in (0x1, 0x2):
            first_opcode = opcode
        chunks.append(payload)
        if fin:
            return first_opcode, b"".join(chunks)


def parser():
    result = argparse.ArgumentParser()
    result.add_argument("url")
    result.add_argument("query")
    result.add_argument("--until", required=True)
    result.add_argument("--timeout", type=float, default=30.0)
    result.add_argument("--protocol", default="v1.json.spacetimedb")
    result.add_argument("--connect", default=None, help="TCP address to connect to (default: the URL's host)")
    result.add_argument("--cafile", default=None, help="PEM bundle to verify against (default: system store)")
    return result


def main(argv=None):
    args = parser().parse_args(argv)
    deadline = time.monotonic() + args.timeout
    url = urlsplit(args.url)
    port = url.port or (443 if url.scheme == "wss" else 80)
    sock = socket.create_connection((args.connect or url.hostname, port), timeout=10)
    if url.scheme == "wss":
        sock = ssl.create_default_context(cafile=args.cafile).wrap_socket(sock, server_hostname=url.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    path = url.path + ("?" + url.query if url.query else "")
    request = (f"GET {path} HTTP/1.1\r\nHost: {url.hostname}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {args.protocol}\r\n\r\n")
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += read_exact(sock, 1, deadline)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    emit(event="upgraded" if status == 101 else "refused", status=status, status_line=lines[0],
         protocol=headers.get("sec-websocket-protocol"))
    if status != 101:
        sys.exit(2)
    queries = [args.query] if args.query else []
    send_frame(sock, 0x1, json.dumps({"Subscribe": {"query_strings": queries, "request_id": 1}}).encode())
    while time.monotonic() < deadline:
        try:
            opcode, payload = read_message(sock, deadline)
        except TimeoutError:
            break
        except EOFError as exc:
            emit(event="closed", reason=str(exc))
            sys.exit(4)
        text = payload.decode("utf-8", "replace") if opcode == 0x1 else base64.b64encode(payload).decode()
        try:
            message = json.loads(text)
            kind = next(iter(message)) if isinstance(message, dict) and message else "?"
        except ValueError:
            kind = "non-json"
        emit(event="message", kind=kind, text=text[:4000])
        if args.until in text:
            emit(event="seen", until=args.until)
            sys.exit(0)
    emit(event="timeout", seconds=args.timeout)
    sys.exit(3)


if __name__ == "__main__":
    main()
