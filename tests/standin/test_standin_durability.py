"""Durability: kill -9 mid-burst, torn records, segment rotation + snapshots, keys and pid lock."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from standin_clients import call, new_identity, post_json

from fixtures.spacetimedb_standin.runtime.commitlog import encode_record
from fixtures.spacetimedb_standin.testing import StandinServer, free_port, standin_env

LEDGER_MODULE = b"""{"tables": [{"name": "entry", "columns": [
    {"name": "id", "type": "u64", "primary_key": true}, {"name": "writer", "type": "string"}]}],
 "reducers": [{"name": "write", "args": [{"name": "id", "type": "u64"}, {"name": "writer", "type": "string"}],
               "ops": [{"insert": "entry", "values": {"id": "$id", "writer": "$writer"}}]}]}"""
THREADS = 4
WRITES_PER_THREAD = 60


def _publish(server: StandinServer, token: str, name: str = "ledger") -> None:
    reply = call(server.url, "PUT", f"/v1/database/{name}", LEDGER_MODULE, token)
    assert reply.status == 200, reply.text


def _ids(server: StandinServer, name: str = "ledger") -> set[int]:
    reply = call(server.url, "POST", f"/v1/database/{name}/sql", "SELECT * FROM entry")
    assert reply.status == 200, reply.text
    return {row[0] for row in reply.json()[0]["rows"]}


def test_kill9_during_write_burst_loses_no_acknowledged_write(fresh_root: Path) -> None:
    server = StandinServer(fresh_root, free_port()).start()
    _, token = new_identity(server.url)
    _publish(server, token)
    acknowledged: set[int] = set()
    attempted: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        for n in range(WRITES_PER_THREAD):
            if stop.is_set():
                return
            entry_id = worker * 1000 + n
            with lock:
                attempted.add(entry_id)
            try:
                reply = post_json(
                    server.url, "/v1/database/ledger/call/write", [entry_id, f"w{worker}"], timeout=10
                )
            except OSError:
                return
            if reply.status == 200:
                with lock:
                    acknowledged.add(entry_id)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < THREADS * WRITES_PER_THREAD // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert acknowledged, "no write was acknowledged before the kill"
    assert len(acknowledged) < THREADS * WRITES_PER_THREAD, "the burst ended before the kill"
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        present = _ids(restarted)
        assert acknowledged <= present, f"lost acknowledged writes: {sorted(acknowledged - present)[:10]}"
        assert present <= attempted, f"writes that were never attempted: {sorted(present - attempted)[:10]}"
        assert post_json(restarted.url, "/v1/database/ledger/call/write", [999999, "after"]).status == 200
    finally:
        restarted.stop()


def test_token_issued_before_restart_still_verifies(fresh_root: Path) -> None:
    server = StandinServer(fresh_root, free_port()).start()
    identity, token = new_identity(server.url)
    server.stop()
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        assert call(restarted.url, "GET", f"/v1/identity/{identity}/verify", token=token).status == 204
    finally:
        restarted.stop()


def test_torn_final_commitlog_record_is_ignored(fresh_root: Path) -> None:
    server = StandinServer(fresh_root, free_port()).start()
    _, token = new_identity(server.url)
    _publish(server, token)
    for n in range(5):
        assert post_json(server.url, "/v1/database/ledger/call/write", [n, "x"]).status == 200
    server.kill9()
    (segment,) = sorted((fresh_root / "data/replicas").glob("*/clog/*.stdb.log"))
    intact = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(encode_record({"tx": 99, "ts": 0, "ops": [["i", "entry", [77, "torn"]]]})[:-7])
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        assert _ids(restarted) == {0, 1, 2, 3, 4}
        assert segment.stat().st_size == intact
        assert post_json(restarted.url, "/v1/database/ledger/call/write", [5, "x"]).status == 200
    finally:
        restarted.stop()
    again = StandinServer(fresh_root, server.port).start()
    try:
        assert _ids(again) == {0, 1, 2, 3, 4, 5}
    finally:
        again.stop()


def test_segment_rotation_takes_snapshots_and_restart_recovers(fresh_root: Path) -> None:
    env = standin_env(STDB_STANDIN_MAX_SEGMENT_SIZE="1500")
    server = StandinServer(fresh_root, free_port(), env).start()
    _, token = new_identity(server.url)
    _publish(server, token)
    for n in range(40):
        assert post_json(server.url, "/v1/database/ledger/call/write", [n, "rotating"]).status == 200
    server.kill9()
    (replica,) = (fresh_root / "data/replicas").iterdir()
    assert len(list((replica / "clog").glob("*.stdb.log"))) > 2
    snapshots = list((replica / "snapshots").glob("*.snapshot_dir/*.snapshot_bsatn"))
    assert snapshots
    restarted = StandinServer(fresh_root, server.port, env).start()
    try:
        assert _ids(restarted) == set(range(40))
    finally:
        restarted.stop()


def test_pid_lock_refuses_a_second_instance(fresh_root: Path) -> None:
    server = StandinServer(fresh_root, free_port()).start()
    try:
        standalone = fresh_root / "bin/current/spacetimedb-standalone"
        second = subprocess.run(
            [
                str(standalone),
                "start",
                "--data-dir",
                str(fresh_root / "data"),
                "--jwt-key-dir",
                str(fresh_root / "config"),
                "--listen-addr",
                f"127.0.0.1:{free_port()}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        pid = (fresh_root / "data/spacetime.pid").read_text().strip()
        assert (
            f"Error: cannot take lock on database; spacetime.pid already exists (owned by pid Some({pid}))"
            in second.stderr
        )
        assert call(server.url, "GET", "/v1/ping").status == 200
    finally:
        server.stop()
