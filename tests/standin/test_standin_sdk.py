"""The stand-in against the official TypeScript SDK (npm `spacetimedb`), not against the kit's own encoder.

The client is harness/agents/sdk_client.mjs, the same agent the lab runs from its remote client: it connects
anonymously, subscribes, connects again as a returning client with the saved token, calls a reducer over its
websocket and waits for a second client's subscription to receive the row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standin_clients import WsClient, call, new_identity, post_json

from fixtures.spacetimedb_standin.testing import StandinServer, free_port, standin_env
from harness.errors import KitError
from harness.sdk_bundle import AGENT, SdkBundle, ensure_sdk

QUICK_BINDINGS = {"table": "person", "columns": [["id", "u64", "pk"], ["name", "string"], ["age", "option<u32>"],
                                                 ["owner", "identity"]],
                  "reducer": "add", "args": [["name", "string"], ["age", "option<u32>"]]}


@pytest.fixture(scope="module")
def sdk() -> SdkBundle:
    try:
        return ensure_sdk()
    except KitError as exc:
        if os.environ.get("STDB_REQUIRE_LAB") == "1":
            pytest.fail(f"the official SDK is required here: {exc}")
        pytest.skip(f"the official SDK is not available: {exc}")


def run_sdk(sdk: SdkBundle, url: str, database: str, bindings: dict | None, *extra: str,
            timeout: float = 20) -> tuple[int, list[dict]]:
    argv = [str(sdk.node), *sdk.node_flags(), str(AGENT), "--sdk", str(sdk.directory), "--uri", url,
            "--database", database, "--timeout", str(timeout), *extra]
    if bindings is not None:
        argv += ["--bindings", json.dumps(bindings)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events


def by_event(events: list[dict]) -> dict[str, dict]:
    return {e["event"]: e for e in events}


def sql(server: StandinServer, database: str, query: str) -> list[list]:
    reply = httpx.post(f"{server.url}/v1/database/{database}/sql", content=query.encode(), timeout=30)
    assert reply.status_code == 200, reply.text
    return list(reply.json()[0]["rows"])


def server_log(server: StandinServer) -> str:
    return (server.root / "data" / "logs" / "spacetime-standalone.log").read_text()


def test_sdk_connects_subscribes_returns_and_sees_a_reducer_row(sdk: SdkBundle, server: StandinServer,
                                                               database: str) -> None:
    code, events = run_sdk(sdk, server.url, database, QUICK_BINDINGS, "--call-reducer")
    seen = by_event(events)
    assert code == 0, events
    assert len(seen["connected"]["identity"]) == 64 and seen["connected"]["token_received"]
    assert "applied" in seen and seen["returning"]["same_identity"] is True
    marker = seen["row-seen"]["marker"]
    # the row the SDK saw is really in the database, with the SDK's none and identity arguments
    rows = sql(server, database, f"SELECT * FROM person WHERE name = '{marker}'")
    (only,) = rows
    assert only[2] == [1, []] and only[3] == [hex(int(seen["connected"]["identity"], 16))]
    assert "connected (v3.bsatn.spacetimedb)" in server_log(server)


def test_sdk_receives_existing_rows_gzip_compressed(sdk: SdkBundle, server: StandinServer, database: str,
                                                    owner: tuple[str, str]) -> None:
    """More than 1 KiB of initial rows: the stand-in gzips the frame (tag 2) as the real server does, and the SDK
    (which asks for `compression=Gzip`) decodes every row."""
    names = [f"gzip-row-{i:03d}-" + "x" * 40 for i in range(40)]
    for name in names:
        reply = post_json(server.url, f"/v1/database/{database}/call/add", [name, {"none": []}], owner[1])
        assert reply.status == 200, reply.text
    count = sql(server, database, "SELECT * FROM person")
    code, events = run_sdk(sdk, server.url, database, QUICK_BINDINGS)
    assert code == 0, events
    assert by_event(events)["applied"]["rows"] == len(count) >= 40


def test_subscribe_query_values_are_checked_like_the_real_server(server: StandinServer, database: str) -> None:
    path = f"/v1/database/{database}/subscribe"
    for query in ("compression=gzip", "compression=Zstd", "light=yes", "confirmed=1"):
        client = WsClient(server.url, f"{path}?{query}", ["v2.bsatn.spacetimedb"])
        assert client.status == 400, query
        client.sock.close()
    # checked before the upgrade: a plain GET with a bad value is 400, not 426
    assert call(server.url, "GET", f"{path}?compression=gzip").status == 400
    client = WsClient(server.url, f"{path}?compression=Gzip&light=true&confirmed=false", ["v2.bsatn.spacetimedb"])
    assert client.status == 101
    client.sock.close()


@pytest.fixture
def deaf_server(tmp_path: Path, installed_template: Path) -> Iterator[StandinServer]:
    """A stand-in that ignores v2/v3 client messages (the stand-in of earlier kits)."""
    root = tmp_path / "stdb"
    shutil.copytree(installed_template, root, symlinks=True)
    instance = StandinServer(root, free_port(), standin_env(STDB_STANDIN_BINARY_MESSAGES="0")).start()
    yield instance
    instance.stop()


def test_sdk_hangs_at_subscribe_when_binary_messages_are_ignored(sdk: SdkBundle, deaf_server: StandinServer) -> None:
    _, token = new_identity(deaf_server.url)
    module = Path(__file__).resolve().parents[2] / "fixtures/spacetimedb_standin/examples/quickstart_module.json"
    assert call(deaf_server.url, "PUT", "/v1/database/quick", module.read_bytes(), token).status == 200
    code, events = run_sdk(sdk, deaf_server.url, "quick", QUICK_BINDINGS, "--call-reducer", timeout=6)
    assert code == 3 and by_event(events)["timeout"]["step"] == "subscribe", events
    assert "connected" in by_event(events)  # the handshake alone still works


def test_sdk_reducer_errors_reach_the_caller(sdk: SdkBundle, server: StandinServer, database: str) -> None:
    """A reducer the module does not have: the SDK's promise rejects with the server's InternalError text."""
    bindings = dict(QUICK_BINDINGS, reducer="no_such_reducer")
    code, events = run_sdk(sdk, server.url, database, bindings, "--call-reducer")
    error = by_event(events)["error"]
    assert code == 1 and error["step"] == "reducer" and "No such reducer" in error["message"], events
