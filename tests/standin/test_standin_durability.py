"""Durability: acknowledged before flushed (kill -9 mid-burst), torn records, segment rotation + snapshots, keys
and pid lock."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

from standin_clients import call, new_identity, post_json
from websockets.typing import Subprotocol

from fixtures.spacetimedb_standin.runtime.commitlog import encode_record
from fixtures.spacetimedb_standin.testing import StandinServer, free_port, standin_env
from harness.fidelity import DURABILITY_SLACK

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


def _burst_then_kill9(server: StandinServer, per_thread: int = WRITES_PER_THREAD,
                      settle: float = 0.0) -> tuple[dict[int, float], set[int], float]:
    """Writers call a reducer in parallel until a third of the burst is acknowledged (and `settle` seconds more),
    then the server gets kill -9. Returns (acknowledged id -> when its answer arrived, attempted ids, when the kill
    was sent)."""
    _, token = new_identity(server.url)
    _publish(server, token)
    acknowledged: dict[int, float] = {}
    attempted: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        for n in range(per_thread):
            if stop.is_set():
                return
            entry_id = worker * 100000 + n
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
                    acknowledged[entry_id] = time.monotonic()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < THREADS * WRITES_PER_THREAD // 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(settle)
    killed_at = time.monotonic()
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert acknowledged, "no write was acknowledged before the kill"
    assert len(acknowledged) < THREADS * per_thread, "the burst ended before the kill"
    return acknowledged, attempted, killed_at


def test_kill9_loses_only_writes_acknowledged_inside_the_durability_window(fresh_root: Path) -> None:
    """As SpacetimeDB's local durability: a commit is acknowledged from memory and flushed+fsynced every
    interval (here 1 s, to make the window wide): what was acknowledged a whole interval before the kill is on
    disk; what was acknowledged inside the window may be lost, and with a 1 s window some is."""
    interval = 1.0
    server = StandinServer(fresh_root, free_port(),
                           standin_env(STDB_STANDIN_DURABILITY_INTERVAL=str(interval))).start()
    acknowledged, attempted, killed_at = _burst_then_kill9(server, per_thread=2000, settle=2 * interval)
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        present = _ids(restarted)
        bound = interval + DURABILITY_SLACK  # the interval, plus the flush itself and the clock reads
        old = {i for i, at in acknowledged.items() if at <= killed_at - bound}
        assert old, "no write was acknowledged before the window: nothing to prove"
        assert old <= present, f"lost writes acknowledged before the window: {sorted(old - present)[:10]}"
        lost = set(acknowledged) - present
        assert lost, "nothing acknowledged inside a 1 s durability window was lost: the stand-in fsyncs too early"
        assert all(acknowledged[i] > killed_at - bound for i in lost)
        assert present <= attempted, f"writes that were never attempted: {sorted(present - attempted)[:10]}"
        assert post_json(restarted.url, "/v1/database/ledger/call/write", [999999, "after"]).status == 200
    finally:
        restarted.stop()


def test_kill9_loses_no_acknowledged_write_with_fsync_on_every_commit(fresh_root: Path) -> None:
    server = StandinServer(fresh_root, free_port(), standin_env(STDB_STANDIN_DURABILITY_INTERVAL="0")).start()
    acknowledged, attempted, _ = _burst_then_kill9(server)
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        present = _ids(restarted)
        assert set(acknowledged) <= present, f"lost acknowledged writes: {sorted(set(acknowledged) - present)[:10]}"
        assert present <= attempted
    finally:
        restarted.stop()


def _five_writes(root: Path, interval: str) -> StandinServer:
    """A server with the given durability interval, the ledger published and rows 0..4 written."""
    server = StandinServer(root, free_port(), standin_env(STDB_STANDIN_DURABILITY_INTERVAL=interval)).start()
    _, token = new_identity(server.url)
    _publish(server, token)
    for n in range(5):
        assert post_json(server.url, "/v1/database/ledger/call/write", [n, "x"]).status == 200
    return server


def test_a_graceful_stop_flushes_what_is_queued(fresh_root: Path) -> None:
    server = _five_writes(fresh_root, "30")
    server.stop()  # SIGINT, as Ctrl-C (systemd stops with SIGTERM, handled the same): it flushes before it exits
    restarted = StandinServer(fresh_root, server.port).start()
    try:
        assert {0, 1, 2, 3, 4} <= _ids(restarted)
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
    server = _five_writes(fresh_root, "0")
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
    # every commit flushed (interval 0): rotation happens at the record it is about, and kill -9 loses nothing
    env = standin_env(STDB_STANDIN_MAX_SEGMENT_SIZE="1500", STDB_STANDIN_DURABILITY_INTERVAL="0")
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


def _update_arrives(server: StandinServer, confirmed: bool, marker: str) -> bool:
    """Subscribe over v1.json (`?confirmed=`), insert `marker` with a reducer call, wait for its update; return
    whether the commitlog on disk already held the transaction when the update arrived."""
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + f"/v1/database/ledger/subscribe?confirmed={str(confirmed).lower()}"
    with connect(url, subprotocols=[Subprotocol("v1.json.spacetimedb")], open_timeout=10) as ws:
        assert "IdentityToken" in str(ws.recv(timeout=10))
        ws.send(json.dumps({"Subscribe": {"query_strings": ["SELECT * FROM entry"], "request_id": 1}}))
        assert "InitialSubscription" in str(ws.recv(timeout=10))
        assert post_json(server.url, "/v1/database/ledger/call/write", [4242, marker]).status == 200
        update = str(ws.recv(timeout=10))
        assert marker in update, update
        return any(marker.encode() in p.read_bytes() for p in server.root.glob("data/replicas/*/clog/*.stdb.log"))


def _on_disk_when_the_update_arrives(root: Path, interval: str, confirmed: bool) -> bool:
    server = StandinServer(root, free_port(), standin_env(STDB_STANDIN_DURABILITY_INTERVAL=interval)).start()
    try:
        _, token = new_identity(server.url)
        _publish(server, token)
        return _update_arrives(server, confirmed=confirmed, marker=f"marker-{confirmed}")
    finally:
        server.kill9()


def test_confirmed_updates_wait_for_the_disk_and_others_do_not(fresh_root: Path, tmp_path: Path) -> None:
    """`?confirmed=true` (the SDK's withConfirmedReads): an update is sent once its transaction is flushed; without
    it the update comes straight from memory, before the disk has it (a 30 s interval makes that certain)."""
    assert _on_disk_when_the_update_arrives(fresh_root, "30", confirmed=False) is False
    other = tmp_path / "other"
    shutil.copytree(fresh_root, other, symlinks=True, ignore=shutil.ignore_patterns("data"))
    assert _on_disk_when_the_update_arrives(other, "1", confirmed=True) is True
