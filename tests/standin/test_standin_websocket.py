"""Subscribe websocket facts: status order, handshake, first message, subscriptions, pings, idle timeout."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from standin_clients import (
    WS_IDLE_TIMEOUT,
    WS_PING_INTERVAL,
    WsClient,
    WsClosed,
    call,
    new_identity,
    post_json,
)

from fixtures.spacetimedb_standin.testing import StandinServer

TEXT = "v1.json.spacetimedb"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_subscribe_not_get_is_405(server: StandinServer, database: str) -> None:
    assert call(server.url, "POST", f"/v1/database/{database}/subscribe").status == 405


def test_subscribe_without_upgrade_is_426_before_name_lookup(server: StandinServer) -> None:
    reply = call(server.url, "GET", "/v1/database/no-such-db/subscribe")
    assert reply.status == 426 and reply.text == "This service requires use of the websocket protocol"


def test_subscribe_unknown_database_is_404(server: StandinServer) -> None:
    client = WsClient(server.url, "/v1/database/no-such-db/subscribe", [TEXT])
    assert client.status == 404
    client.sock.close()


@pytest.mark.parametrize("protocols", [None, ["v9.json.nonsense"]])
def test_subscribe_missing_or_unknown_protocol_is_400(
    server: StandinServer, database: str, protocols: list[str] | None
) -> None:
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", protocols)
    assert client.status == 400
    client.sock.close()


def test_handshake_echoes_protocol_and_first_message_is_identity_token(
    server: StandinServer, database: str
) -> None:
    identity, token = new_identity(server.url)
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", [TEXT], token=token)
    try:
        assert client.status == 101
        assert client.headers["sec-websocket-protocol"] == TEXT
        expected = base64.b64encode(hashlib.sha1((client.key + GUID).encode()).digest()).decode()
        assert client.headers["sec-websocket-accept"] == expected
        message = client.next_json()
        body = message["IdentityToken"]
        assert body["identity"] == {"__identity__": hex(int(identity, 16))}
        assert body["token"] == token
        assert isinstance(body["connection_id"]["__connection_id__"], int)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("protocol", "tag"),
    [("v1.bsatn.spacetimedb", 3), ("v2.bsatn.spacetimedb", 0), ("v3.bsatn.spacetimedb", 0)],
)
def test_binary_protocols_are_echoed_with_binary_first_message(
    server: StandinServer, database: str, protocol: str, tag: int
) -> None:
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", ["nonsense", protocol])
    try:
        assert client.status == 101 and client.headers["sec-websocket-protocol"] == protocol
        opcode, payload = client.next_message()
        assert opcode == 0x2 and payload[0] == 0 and payload[1] == tag
    finally:
        client.close()


def test_subscription_gets_initial_rows_then_pushed_inserts(
    server: StandinServer, owner: tuple[str, str], database: str
) -> None:
    post_json(server.url, f"/v1/database/{database}/call/add", ["Wanda", {"some": 1}])
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", [TEXT])
    try:
        client.next_json()
        client.send_json(
            {"Subscribe": {"query_strings": ["SELECT * FROM person WHERE name = 'Wanda'"], "request_id": 7}}
        )
        initial = client.next_json()["InitialSubscription"]
        assert initial["request_id"] == 7
        (table,) = initial["database_update"]["tables"]
        assert table["table_name"] == "person"
        rows = [json.loads(r) for r in table["updates"][0]["inserts"]]
        assert [r[1] for r in rows] == ["Wanda"]
        client.send_json(
            {
                "SubscribeMulti": {
                    "query_strings": ["SELECT * FROM person WHERE name = 'Xena'"],
                    "request_id": 8,
                    "query_id": {"id": 1},
                }
            }
        )
        assert client.next_json()["SubscribeMultiApplied"]["query_id"] == {"id": 1}
        assert (
            post_json(server.url, f"/v1/database/{database}/call/add", ["Xena", {"none": []}]).status == 200
        )
        update = client.next_json()["TransactionUpdate"]
        assert update["reducer_call"]["reducer_name"] == "add"
        (changed,) = update["status"]["Committed"]["tables"]
        assert json.loads(changed["updates"][0]["inserts"][0])[1] == "Xena"
        call(
            server.url,
            "POST",
            f"/v1/database/{database}/sql",
            "DELETE FROM person WHERE name = 'Wanda'",
            owner[1],
        )
        deleted = client.next_json()["TransactionUpdate"]["status"]["Committed"]["tables"][0]
        assert json.loads(deleted["updates"][0]["deletes"][0])[1] == "Wanda"
    finally:
        client.close()


def test_reducer_call_over_websocket_reports_to_caller(server: StandinServer, database: str) -> None:
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", [TEXT])
    try:
        client.next_json()
        client.send_json(
            {"CallReducer": {"reducer": "refuse", "args": json.dumps(["ws"]), "request_id": 3, "flags": 0}}
        )
        update = client.next_json()["TransactionUpdate"]
        assert update["status"] == {"Failed": "refused: ws"} and update["reducer_call"]["request_id"] == 3
    finally:
        client.close()


def test_server_pings_and_answered_pings_keep_the_connection(server: StandinServer, database: str) -> None:
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", [TEXT])
    try:
        client.next_json()
        deadline = time.monotonic() + WS_IDLE_TIMEOUT * 2
        while client.pings_received < 3 and time.monotonic() < deadline:
            with pytest.raises(TimeoutError):
                client.next_message(timeout=WS_PING_INTERVAL)
        assert client.pings_received >= 3
        client.send_json({"Subscribe": {"query_strings": ["SELECT * FROM person"], "request_id": 1}})
        assert "InitialSubscription" in client.next_json()
    finally:
        client.close()


def test_idle_connection_is_closed_after_idle_timeout(server: StandinServer, database: str) -> None:
    client = WsClient(server.url, f"/v1/database/{database}/subscribe", [TEXT])
    client.auto_pong = False
    started = time.monotonic()
    try:
        client.next_json()
        with pytest.raises(WsClosed):
            client.next_message(timeout=WS_IDLE_TIMEOUT * 4)
        elapsed = time.monotonic() - started
        assert WS_IDLE_TIMEOUT * 0.8 <= elapsed <= WS_IDLE_TIMEOUT * 4
        assert client.pings_received >= 1
    finally:
        client.sock.close()
