"""Send raw HTTP/1.1 requests exactly as given (path bytes untouched) and report what came back.

Runs inside a lab host with python3's standard library only. Reads one JSON request per line on stdin,
writes one JSON result per line on stdout (so one process serves a whole batch or a hypothesis run):

  request: {"id", "scheme": "http"|"https", "host" (TCP address), "port", "server_name" (Host header + SNI),
            "method", "path" (sent verbatim), "headers": {..}, "body": str, "timeout": seconds,
            "cafile": path or null (https: verify against it; null = system store)}
  result:  {"id", "status", "reason", "headers": {lowercased: value}, "body": first 4000 chars, "error"}

usage: python3 http_probe.py [--connect ADDR] [--cafile FILE]

--connect ADDR opens every TCP connection to ADDR while "server_name" (else "host") stays the Host header and
the TLS name: a vantage whose resolver does not know the domain. --cafile FILE is the trust for https requests
whose "cafile" is null. Without the flags requests go exactly where they say.
"""

import argparse
import json
import socket
import ssl
import sys
import time

MAX_BODY = 65536


def read_response(sock, deadline):
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError("no response head")
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key:
            headers[key.strip().lower()] = value.strip()
    body = rest
    # requests are sent with `Connection: close`: read to EOF, bounded in size and time
    while time.monotonic() < deadline and len(body) < MAX_BODY:
        if status in (101, 204, 304):
            break
        length = headers.get("content-length")
        if length is not None and len(body) >= int(length):
            break
        try:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        body += chunk
    return status, (parts[2] if len(parts) > 2 else ""), headers, body


def one(request, connect=None, cafile=None):
    result = {"id": request.get("id"), "status": 0, "reason": "", "headers": {}, "body": "", "error": ""}
    timeout = float(request.get("timeout", 10))
    deadline = time.monotonic() + timeout
    sock = None
    try:
        sock = socket.create_connection((connect or request["host"], int(request["port"])), timeout=timeout)
        name = request.get("server_name") or request["host"]
        if request.get("scheme") == "https":
            context = ssl.create_default_context(cafile=request.get("cafile") or cafile)
            sock = context.wrap_socket(sock, server_hostname=name)
        body = request.get("body", "").encode()
        headers = {"Host": name, "User-Agent": "stdb-conformance-probe", "Connection": "close",
                   **request.get("headers", {})}
        if body or request.get("method") in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Length", str(len(body)))
        head = f"{request['method']} {request['path']} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode("latin-1") + body)
        status, reason, headers_in, body_in = read_response(sock, deadline)
        result.update(status=status, reason=reason, headers=headers_in,
                      body=body_in.decode("utf-8", "replace")[:4000])
    except Exception as exc:  # every failure is data for the checker
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
    return result


def parser():
    result = argparse.ArgumentParser()
    result.add_argument("--connect", default=None, help="TCP address for every request (default: its host)")
    result.add_argument("--cafile", default=None, help="trust for https requests without their own cafile")
    return result


def main(argv=None):
    args = parser().parse_args(argv)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(one(json.loads(line), args.connect, args.cafile)), flush=True)


if __name__ == "__main__":
    main()
