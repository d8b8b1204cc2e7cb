"""The restore drill's agent on the target host: publish, seed, write, dump, verify a token, run SQL.

Runs with python3's standard library only (copied to the target, never imports the kit) and talks to a
SpacetimeDB HTTP API on the loopback (default http://127.0.0.1:3000; `--url` for another port). Every
HTTP call has a timeout and every loop is bounded in count and time. Output is JSON on stdout (or
`--out FILE`); exit status 0 = everything as expected, 1 = a request failed or answered unexpectedly,
2 = bad usage or input.

  publish --db NAME --module FILE --token-out FILE [--token-file F] [--clear]
      mint an identity (POST /v1/identity; or reuse --token-file), publish the module
      (PUT /v1/database/NAME), write {"identity", "token"} to --token-out (mode 0600).
      stdout: {"ok", "status", "identity", "database_identity", "op", "error"}
  seed --db NAME --token-file F --plan FILE
      apply a seed plan (fixtures/conformance_seed.py: {"steps": [{"kind": "call", "reducer", "args",
      "rows", "table"} | {"kind": "sql", "sql", "rows", "table"}]}) in order, stop at the first failure.
      stdout: {"ok", "steps", "steps_done", "calls", "sql_statements", "rows", "rows_by_table", "seconds",
               "failure": null | {"step", "kind", "status", "error"}}
  write --db NAME --token-file F --log FILE --max-writes N --max-seconds S [--start-seq K] [--fsync]
      the background writer: append_seq(seq, payload(seq)) with seq = K, K+1, ... one call each; after
      each attempt one line {"seq", "acked", "status", "t", "t0"[, "error"][, "present"]} is appended to
      --log and flushed (t0 = before the call, t = after it, time.time()). A failed attempt is retried
      with the same seq (bounded backoff); a 530 saying the row already exists (an earlier unacked attempt
      committed) is logged with "present": true and the writer moves on. Stops after N attempts, S
      seconds, or SIGTERM/SIGINT (the call in flight finishes and is logged). Exit 1 when no attempt was
      acknowledged.
      stdout: {"ok", "attempts", "acked", "first_seq", "last_acked_seq", "max_attempted_seq", "stopped_by",
               "seconds"}
  dump --db NAME --token-file F --tables t1,t2,... [--out FILE]
      SELECT * FROM each table. Output: {table: {"schema": [{"name", "algebraic_type"}], "rows": [[...]],
      "status": 200}}; a table the server refuses: {"schema": null, "rows": null, "status", "error"}.
  verify-token --token-file F [--db NAME] [--table seq]
  delete --db NAME --token-file F          DELETE /v1/database/NAME as its owner
      GET /v1/identity/:identity/verify with the bearer (204 expected); with --db also an owner-only call
      (GET /v1/database/NAME/logs, 200), a SQL read (200), and the same read with a tampered token
      (401 expected: proves the server checks tokens at all).
      stdout: {"ok", "identity", "checks": [{"name", "method", "path", "status", "expected", "ok"}]}
  sql --db NAME --token-file F --query SQL
      one SQL statement; stdout: {"ok", "status", "result" (parsed JSON) | "error"}
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import signal
import sys
import time
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_URL = "http://127.0.0.1:3000"
SEQ_REDUCER = "append_seq"
MAX_PLAN_STEPS = 1_000_000
MAX_TABLES = 100
MAX_ERROR_TEXT = 500


def seq_payload(seq: int) -> str:
    """What the writer stores for `seq` (the same function as fixtures/conformance_seed.py's)."""
    digest = hashlib.sha256(f"stdbc-seq-{seq}".encode()).hexdigest()[:16]
    return f"seq {seq} \u2713 {digest}"


class Api:
    """One keep-alive HTTP/1.1 connection to the server; reconnects after a failed request (no retries)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must be http://host:port, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        timeout: float | None = None,
        auth: bool = True,
    ) -> tuple[int, bytes, str]:
        """(status, body bytes, error text). status 0 = no answer (connection refused, reset, timeout)."""
        all_headers = dict(headers or {})
        bearer = token if token is not None else self.token
        if auth and bearer:
            all_headers["Authorization"] = f"Bearer {bearer}"
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
            else:
                self.conn.timeout = timeout or self.timeout
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(timeout or self.timeout)
            self.conn.request(method, path, body=body, headers=all_headers)
            response = self.conn.getresponse()
            data = response.read()
            if (response.getheader("connection") or "").lower() == "close":
                self.close()
            return response.status, data, ""
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, b"", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]

    def call(self, db: str, reducer: str, args: list[Any], timeout: float | None = None) -> tuple[int, bytes, str]:
        body = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
        return self.request(
            "POST",
            f"/v1/database/{quote(db, safe='')}/call/{quote(reducer, safe='')}",
            body,
            {"Content-Type": "application/json"},
            timeout=timeout,
        )

    def sql(
        self, db: str, query: str, token: str | None = None, timeout: float | None = None
    ) -> tuple[int, bytes, str]:
        return self.request(
            "POST", f"/v1/database/{quote(db, safe='')}/sql", query, {"Content-Type": "text/plain"}, token, timeout
        )


def text_of(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")[:MAX_ERROR_TEXT]


def emit(result: dict[str, Any], out: str | None = None, ok: bool = True) -> None:
    text = json.dumps(result, ensure_ascii=True, separators=(",", ":"))
    if out:
        tmp = out + ".tmp"
        with open(tmp, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
        os.replace(tmp, out)
        print(json.dumps({"ok": ok, "out": out}))
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def read_token(path: str) -> tuple[str, str]:
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    if not isinstance(doc, dict) or not isinstance(doc.get("token"), str) or not isinstance(doc.get("identity"), str):
        raise ValueError(f'{path}: expected {{"identity": ..., "token": ...}}')
    return doc["identity"], doc["token"]


def write_private(path: str, text: str) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------ publish


def cmd_publish(args: argparse.Namespace) -> int:
    api = Api(args.url, timeout=args.timeout)
    if args.token_file:
        identity, token = read_token(args.token_file)
    else:
        status, data, error = api.request("POST", "/v1/identity", auth=False)
        if status != 200:
            emit({"ok": False, "step": "identity", "status": status, "error": error or text_of(data)})
            return 1
        minted = json.loads(data)
        identity, token = minted["identity"], minted["token"]
    api.token = token
    with open(args.module, "rb") as handle:
        program = handle.read()
    path = f"/v1/database/{quote(args.db, safe='')}" + ("?clear=true" if args.clear else "")
    status, data, error = api.request(
        "PUT", path, program, {"Content-Type": "application/octet-stream"}, timeout=max(args.timeout, 120)
    )
    write_private(args.token_out, json.dumps({"identity": identity, "token": token}) + "\n")
    result = {
        "ok": status == 200,
        "step": "publish",
        "status": status,
        "identity": identity,
        "database_identity": None,
        "op": None,
        "error": error or (None if status == 200 else text_of(data)),
    }
    if status == 200:
        try:
            success = json.loads(data).get("Success") or {}
            result["database_identity"] = success.get("database_identity")
            result["op"] = success.get("op")
        except ValueError:
            result["note"] = "publish answered 200 with a body that is not JSON: " + text_of(data)
    emit(result)
    return 0 if result["ok"] else 1


# ------------------------------------------------------------------ seed


def cmd_seed(args: argparse.Namespace) -> int:
    _, token = read_token(args.token_file)
    with open(args.plan, encoding="utf-8") as handle:
        plan = json.load(handle)
    steps = plan.get("steps") if isinstance(plan, dict) else None
    if not isinstance(steps, list) or len(steps) > MAX_PLAN_STEPS:
        emit({"ok": False, "error": "the plan has no `steps` list (or too many steps)"})
        return 2
    api = Api(args.url, token, timeout=args.timeout)
    started = time.monotonic()
    deadline = started + args.max_seconds
    summary: dict[str, Any] = {
        "ok": True,
        "steps": len(steps),
        "steps_done": 0,
        "calls": 0,
        "sql_statements": 0,
        "rows": 0,
        "rows_by_table": {},
        "seconds": 0.0,
        "failure": None,
    }
    for index, step in enumerate(steps):
        if time.monotonic() > deadline:
            summary["failure"] = {
                "step": index,
                "kind": "timeout",
                "status": None,
                "error": f"seeding took longer than --max-seconds {args.max_seconds}",
            }
            break
        kind = step.get("kind")
        if kind == "call":
            status, data, error = api.call(args.db, step["reducer"], step["args"])
            good = status == 200
            summary["calls"] += 1
        elif kind == "sql":
            status, data, error = api.sql(args.db, step["sql"])
            good = status == 200
            summary["sql_statements"] += 1
            if good:
                try:
                    stats = (json.loads(data) or [{}])[0].get("stats") or {}
                except (ValueError, AttributeError, IndexError):
                    stats = {}
                inserted = stats.get("rows_inserted")
                if inserted is not None and inserted != step.get("rows"):
                    good = False
                    error = f"the server inserted {inserted} rows, the statement has {step.get('rows')}"
        else:
            summary["failure"] = {"step": index, "kind": kind, "status": None, "error": "unknown step kind"}
            break
        if not good:
            summary["failure"] = {
                "step": index,
                "kind": kind,
                "status": status,
                "reducer": step.get("reducer"),
                "error": error or text_of(data),
            }
            break
        rows = int(step.get("rows") or 0)
        summary["steps_done"] += 1
        summary["rows"] += rows
        table = step.get("table") or "?"
        summary["rows_by_table"][table] = summary["rows_by_table"].get(table, 0) + rows
    api.close()
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["ok"] = summary["failure"] is None
    emit(summary)
    return 0 if summary["ok"] else 1


# ------------------------------------------------------------------ write


class _Stop:
    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name


def cmd_write(args: argparse.Namespace) -> int:
    _, token = read_token(args.token_file)
    if args.max_writes < 0 or args.max_seconds < 0:
        emit({"ok": False, "error": "--max-writes and --max-seconds must be >= 0"})
        return 2
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api = Api(args.url, token, timeout=args.timeout)
    started = time.monotonic()
    deadline = started + args.max_seconds
    seq = args.start_seq
    attempts = acked = failures = 0
    last_acked = None
    max_attempted = None
    stopped_by = "max-writes"
    with open(args.log, "a", encoding="utf-8", buffering=1) as log:
        while True:
            if stop.signal:
                stopped_by = stop.signal
                break
            if attempts >= args.max_writes:
                stopped_by = "max-writes"
                break
            if time.monotonic() >= deadline:
                stopped_by = "max-seconds"
                break
            attempts += 1
            t0 = time.time()
            remaining = max(0.5, min(args.timeout, deadline - time.monotonic() + 1.0))
            status, data, error = api.call(args.db, SEQ_REDUCER, [seq, seq_payload(seq)], timeout=remaining)
            line = {"seq": seq, "acked": status == 200, "status": status or None, "t": time.time(), "t0": t0}
            max_attempted = seq if max_attempted is None else max(max_attempted, seq)
            advance = False
            if status == 200:
                acked += 1
                last_acked = seq
                failures = 0
                advance = True
            else:
                body = text_of(data)
                line["error"] = error or body
                if status == 530 and ("unique" in body.lower() or "already" in body.lower()):
                    line["present"] = True  # an earlier attempt of this seq committed without an answer
                    advance = True
                    failures = 0
                else:
                    failures += 1
            log.write(json.dumps(line, ensure_ascii=True, separators=(",", ":")) + "\n")
            log.flush()
            if args.fsync:
                os.fsync(log.fileno())
            if advance:
                seq += 1
                if args.interval > 0:
                    time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
            else:
                backoff = min(0.5, 0.02 * (2 ** min(failures, 5)))
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
    api.close()
    ok = acked > 0 or attempts == 0
    emit(
        {
            "ok": ok,
            "attempts": attempts,
            "acked": acked,
            "first_seq": args.start_seq,
            "last_acked_seq": last_acked,
            "max_attempted_seq": max_attempted,
            "stopped_by": stopped_by,
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    return 0 if ok else 1


# ------------------------------------------------------------------ dump


def _schema_elements(schema: Any) -> list[dict[str, Any]]:
    elements = schema.get("elements") if isinstance(schema, dict) else schema
    out = []
    for element in elements or []:
        name = element.get("name")
        if isinstance(name, dict):
            name = name.get("some")
        out.append({"name": name, "algebraic_type": element.get("algebraic_type")})
    return out


def cmd_dump(args: argparse.Namespace) -> int:
    _, token = read_token(args.token_file)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()][:MAX_TABLES]
    api = Api(args.url, token, timeout=args.timeout)
    started = time.monotonic()
    result: dict[str, Any] = {}
    ok = True
    for table in tables:
        status, data, error = api.sql(args.db, f"SELECT * FROM {table}")
        if status != 200:
            ok = False
            result[table] = {"schema": None, "rows": None, "status": status or None, "error": error or text_of(data)}
            continue
        try:
            answer = json.loads(data)
            first = answer[0] if isinstance(answer, list) and answer else {}
            result[table] = {
                "schema": _schema_elements(first.get("schema")),
                "rows": first.get("rows") or [],
                "status": status,
            }
        except (ValueError, AttributeError) as exc:
            ok = False
            result[table] = {"schema": None, "rows": None, "status": status, "error": f"unreadable answer: {exc}"}
    api.close()
    sys.stderr.write(json.dumps({"dump_seconds": round(time.monotonic() - started, 3), "ok": ok}) + "\n")
    emit(result, args.out, ok)
    return 0 if ok else 1


# ------------------------------------------------------------------ verify-token


def _tampered(token: str) -> str:
    head, _, signature = token.rpartition(".")
    if not head or not signature:
        return token + "x"
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{flipped}"


def cmd_verify_token(args: argparse.Namespace) -> int:
    identity, token = read_token(args.token_file)
    api = Api(args.url, token, timeout=args.timeout)
    checks: list[dict[str, Any]] = []

    def check(
        name: str,
        method: str,
        path: str,
        expected: int,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        use_token: str | None = None,
    ) -> None:
        status, data, error = api.request(method, path, body, headers, token=use_token)
        entry = {
            "name": name,
            "method": method,
            "path": path,
            "status": status or None,
            "expected": expected,
            "ok": status == expected,
        }
        if status != expected:
            entry["error"] = error or text_of(data)
        checks.append(entry)

    check("verify", "GET", f"/v1/identity/{quote(identity, safe='')}/verify", 204)
    if args.db:
        db = quote(args.db, safe="")
        check("owner-logs", "GET", f"/v1/database/{db}/logs?num_lines=1", 200)
        query = f"SELECT * FROM {args.table} LIMIT 1"
        check("sql-read", "POST", f"/v1/database/{db}/sql", 200, query, {"Content-Type": "text/plain"})
        check(
            "sql-read-tampered-token",
            "POST",
            f"/v1/database/{db}/sql",
            401,
            query,
            {"Content-Type": "text/plain"},
            _tampered(token),
        )
    api.close()
    ok = all(c["ok"] for c in checks)
    emit({"ok": ok, "identity": identity, "checks": checks})
    return 0 if ok else 1


# ------------------------------------------------------------------ sql


def cmd_sql(args: argparse.Namespace) -> int:
    _, token = read_token(args.token_file)
    api = Api(args.url, token, timeout=args.timeout)
    status, data, error = api.sql(args.db, args.query)
    api.close()
    result: dict[str, Any] = {"ok": status == 200, "status": status or None}
    if status == 200:
        try:
            result["result"] = json.loads(data)
        except ValueError:
            result["error"] = "answer is not JSON: " + text_of(data)
            result["ok"] = False
    else:
        result["error"] = error or text_of(data)
    emit(result)
    return 0 if result["ok"] else 1


# ------------------------------------------------------------------ delete


def cmd_delete(args: argparse.Namespace) -> int:
    _, token = read_token(args.token_file)
    api = Api(args.url, token, timeout=args.timeout)
    status, data, error = api.request("DELETE", f"/v1/database/{quote(args.db, safe='')}", None, None)
    api.close()
    ok = status in (200, 204)
    emit({"ok": ok, "status": status or None, **({} if ok else {"error": error or text_of(data)})})
    return 0 if ok else 1


# ------------------------------------------------------------------ main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="restore drill agent (stdlib only)")
    p.add_argument("--url", default=DEFAULT_URL, help="SpacetimeDB HTTP API (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("publish")
    s.add_argument("--db", required=True)
    s.add_argument("--module", required=True)
    s.add_argument("--token-out", required=True)
    s.add_argument("--token-file", help="publish with this identity instead of minting one")
    s.add_argument("--clear", action="store_true")

    s = sub.add_parser("seed")
    s.add_argument("--db", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--plan", required=True)
    s.add_argument("--max-seconds", type=float, default=600.0)

    s = sub.add_parser("write")
    s.add_argument("--db", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--log", required=True)
    s.add_argument("--max-writes", type=int, required=True)
    s.add_argument("--max-seconds", type=float, required=True)
    s.add_argument("--start-seq", type=int, default=1)
    s.add_argument("--interval", type=float, default=0.0, help="seconds between acknowledged writes")
    s.add_argument("--fsync", action="store_true", help="fsync the log after every line")

    s = sub.add_parser("dump")
    s.add_argument("--db", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--tables", required=True)
    s.add_argument("--out")

    s = sub.add_parser("delete")
    s.add_argument("--db", required=True)
    s.add_argument("--token-file", required=True)

    s = sub.add_parser("verify-token")
    s.add_argument("--token-file", required=True)
    s.add_argument("--db")
    s.add_argument("--table", default="seq")

    s = sub.add_parser("sql")
    s.add_argument("--db", required=True)
    s.add_argument("--token-file", required=True)
    s.add_argument("--query", required=True)
    return p


COMMANDS = {
    "publish": cmd_publish,
    "seed": cmd_seed,
    "write": cmd_write,
    "dump": cmd_dump,
    "verify-token": cmd_verify_token,
    "delete": cmd_delete,
    "sql": cmd_sql,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (OSError, ValueError, KeyError) as exc:
        emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]})
        return 2


if __name__ == "__main__":
    sys.exit(main())
