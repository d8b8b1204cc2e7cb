"""HTTP API facts (docs/SPACETIMEDB-FACTS.md), one test per fact, against a running stand-in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from standin_clients import Reply, call, new_identity, post_json

from fixtures.spacetimedb_standin.runtime.module_def import wrap_in_wasm
from fixtures.spacetimedb_standin.testing import StandinServer

HEX64 = re.compile(r"^[0-9a-f]{64}$")
EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures/spacetimedb_standin/examples/quickstart_module.json"
COUNTER_MODULE = b"""{"tables": [
  {"name": "counter", "columns": [{"name": "n", "type": "u32", "primary_key": true}]}],
 "reducers": [{"name": "bump", "args": [{"name": "n", "type": "u32"}],
               "ops": [{"insert": "counter", "values": {"n": "$n"}}]}]}"""


def _sql(server: StandinServer, query: str, token: str | None = None) -> Reply:
    return call(server.url, "POST", "/v1/database/quick/sql", query, token)


# ------------------------------------------------------------------ ping, health, identity


def test_ping_is_200_with_empty_body(server: StandinServer) -> None:
    reply = call(server.url, "GET", "/v1/ping")
    assert reply.status == 200 and reply.body == b""


def test_health_is_json_with_version_and_stand_in_flag(server: StandinServer) -> None:
    data = call(server.url, "GET", "/v1/health").json()
    assert data["version"] == "2.8.3" and data["standin"] is True


def test_post_identity_returns_64_hex_identity_and_jwt(server: StandinServer) -> None:
    reply = call(server.url, "POST", "/v1/identity")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    data = reply.json()
    assert (
        set(data) == {"identity", "token"} and HEX64.match(data["identity"]) and data["token"].count(".") == 2
    )


def test_websocket_token_needs_bearer_and_returns_token(server: StandinServer) -> None:
    assert call(server.url, "POST", "/v1/identity/websocket-token").status == 401
    _, token = new_identity(server.url)
    reply = call(server.url, "POST", "/v1/identity/websocket-token", token=token)
    assert reply.status == 200 and set(reply.json()) == {"token"}


def test_public_key_is_pem(server: StandinServer) -> None:
    reply = call(server.url, "GET", "/v1/identity/public-key")
    assert reply.status == 200 and reply.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert reply.text == (server.root / "config/id_ecdsa.pub").read_text()


def test_verify_is_204_on_match_400_on_mismatch_401_without_token(server: StandinServer) -> None:
    identity, token = new_identity(server.url)
    other, _ = new_identity(server.url)
    assert call(server.url, "GET", f"/v1/identity/{identity}/verify", token=token).status == 204
    assert call(server.url, "GET", f"/v1/identity/{other}/verify", token=token).status == 400
    assert call(server.url, "GET", f"/v1/identity/{identity}/verify").status == 401


def test_identity_databases_lists_owned_database_identities(
    server: StandinServer, owner: tuple[str, str], database: str
) -> None:
    reply = call(server.url, "GET", f"/v1/identity/{owner[0]}/databases")
    db_identity = call(server.url, "GET", f"/v1/database/{database}/identity").text
    assert db_identity in reply.json()["identities"]


# ------------------------------------------------------------------ auth rules


def test_database_routes_mint_anonymous_identity_headers(server: StandinServer, database: str) -> None:
    reply = call(server.url, "GET", f"/v1/database/{database}/identity")
    assert HEX64.match(reply.headers["spacetime-identity"])
    assert reply.headers["spacetime-identity-token"].count(".") == 2


def test_database_routes_echo_the_callers_identity(
    server: StandinServer, owner: tuple[str, str], database: str
) -> None:
    reply = call(server.url, "GET", f"/v1/database/{database}/identity", token=owner[1])
    assert reply.headers["spacetime-identity"] == owner[0]


def test_query_token_is_accepted(server: StandinServer, owner: tuple[str, str], database: str) -> None:
    reply = call(server.url, "GET", f"/v1/database/{database}/identity?token={owner[1]}")
    assert reply.headers["spacetime-identity"] == owner[0]


def test_malformed_authorization_header_is_400(server: StandinServer, database: str) -> None:
    reply = call(
        server.url, "GET", f"/v1/database/{database}/identity", headers={"Authorization": "Basic abc"}
    )
    assert reply.status == 400 and "spacetime-identity" not in reply.headers


def test_invalid_token_is_401(server: StandinServer, database: str) -> None:
    _, token = new_identity(server.url)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert call(server.url, "GET", f"/v1/database/{database}/identity", token=forged).status == 401
    assert call(server.url, "GET", f"/v1/database/{database}/identity", token="not-a-jwt").status == 401


# ------------------------------------------------------------------ publish, identity, delete


def test_publish_post_without_name_creates_database(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    reply = call(server.url, "POST", "/v1/database", COUNTER_MODULE, token)
    success = reply.json()["Success"]
    assert reply.status == 200 and success["domain"] is None and success["op"] == "created"
    assert HEX64.match(success["database_identity"])


def test_publish_put_creates_then_updates(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    first = call(server.url, "PUT", "/v1/database/put-test", COUNTER_MODULE, token).json()["Success"]
    second = call(server.url, "PUT", "/v1/database/put-test", COUNTER_MODULE, token).json()["Success"]
    assert first["op"] == "created" and second["op"] == "updated" and first["domain"] == "put-test"
    assert first["database_identity"] == second["database_identity"]


def test_publish_by_non_owner_is_403(server: StandinServer, database: str) -> None:
    _, stranger = new_identity(server.url)
    assert call(server.url, "PUT", f"/v1/database/{database}", EXAMPLE.read_bytes(), stranger).status == 403


def test_publish_accepts_wasm_with_custom_section(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    reply = call(server.url, "PUT", "/v1/database/wasm-test", wrap_in_wasm(COUNTER_MODULE), token)
    assert reply.status == 200 and reply.json()["Success"]["op"] == "created"


def test_publish_rejects_anything_else_with_400(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    real_wasm = call(server.url, "PUT", "/v1/database/bad-wasm", b"\0asm\x01\0\0\0", token)
    assert real_wasm.status == 400 and "stdb_standin_module" in real_wasm.text
    assert call(server.url, "PUT", "/v1/database/bad-blob", b"hello", token).status == 400


def test_publish_rejects_incompatible_schema_change(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    assert call(server.url, "PUT", "/v1/database/schema-change", COUNTER_MODULE, token).status == 200
    changed = COUNTER_MODULE.replace(b'"u32", "primary_key"', b'"u64", "primary_key"')
    reply = call(server.url, "PUT", "/v1/database/schema-change", changed, token)
    assert reply.status == 400 and "Database update rejected" in reply.text


def test_pre_publish_shapes(server: StandinServer, owner: tuple[str, str], database: str) -> None:
    assert (
        call(server.url, "POST", "/v1/database/nothing-here/pre_publish", COUNTER_MODULE, owner[1]).status
        == 404
    )
    reply = call(server.url, "POST", f"/v1/database/{database}/pre_publish", EXAMPLE.read_bytes(), owner[1])
    assert reply.status == 200 and set(reply.json()["AutoMigrate"]) >= {
        "migrate_plan",
        "break_clients",
        "token",
    }
    _, stranger = new_identity(server.url)
    assert (
        call(
            server.url, "POST", f"/v1/database/{database}/pre_publish", EXAMPLE.read_bytes(), stranger
        ).status
        == 403
    )


def test_get_database_identity_is_hex_text_and_unknown_is_404(server: StandinServer, database: str) -> None:
    reply = call(server.url, "GET", f"/v1/database/{database}/identity")
    assert (
        reply.status == 200
        and HEX64.match(reply.text)
        and reply.headers["content-type"].startswith("text/plain")
    )
    missing = call(server.url, "GET", "/v1/database/no-such-db/identity")
    assert missing.status == 404 and missing.text == "`no-such-db` not found"


def test_delete_is_owner_only(server: StandinServer) -> None:
    _, token = new_identity(server.url)
    _, stranger = new_identity(server.url)
    assert call(server.url, "PUT", "/v1/database/doomed", COUNTER_MODULE, token).status == 200
    assert call(server.url, "DELETE", "/v1/database/doomed", token=stranger).status == 403
    assert call(server.url, "DELETE", "/v1/database/doomed", token=token).status == 200
    assert call(server.url, "GET", "/v1/database/doomed/identity").status == 404


# ------------------------------------------------------------------ call


def test_call_without_content_type_is_400(server: StandinServer, database: str) -> None:
    reply = call(server.url, "POST", f"/v1/database/{database}/call/add", '["x", {"none": []}]')
    assert reply.status == 400


def test_call_with_other_content_type_is_415(server: StandinServer, database: str) -> None:
    reply = call(
        server.url, "POST", f"/v1/database/{database}/call/add", "[]", headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 415


def test_call_commits_with_200_and_execution_headers(server: StandinServer, database: str) -> None:
    reply = post_json(server.url, f"/v1/database/{database}/call/add", ["Carol", {"some": 41}])
    assert reply.status == 200 and reply.body == b""
    assert "spacetime-energy-used" in reply.headers and "spacetime-execution-duration-micros" in reply.headers


def test_call_reducer_error_is_530_with_message(server: StandinServer, database: str) -> None:
    reply = post_json(server.url, f"/v1/database/{database}/call/refuse", ["no way"])
    assert reply.status == 530 and reply.text == "refused: no way"


def test_call_unknown_reducer_is_404(server: StandinServer, database: str) -> None:
    assert post_json(server.url, f"/v1/database/{database}/call/nope", []).status == 404


def test_call_bad_arguments_is_400(server: StandinServer, database: str) -> None:
    reply = post_json(server.url, f"/v1/database/{database}/call/add", [1, 2])
    assert reply.status == 400 and reply.text.startswith("invalid arguments for reducer add")


def test_call_unknown_database_is_404(server: StandinServer) -> None:
    assert post_json(server.url, "/v1/database/no-such-db/call/add", []).status == 404


# ------------------------------------------------------------------ sql


def test_sql_select_shape(server: StandinServer, database: str) -> None:
    post_json(server.url, f"/v1/database/{database}/call/add", ["Dora", {"none": []}])
    reply = _sql(server, "SELECT * FROM person WHERE name = 'Dora'")
    assert reply.status == 200
    (result,) = reply.json()
    assert set(result) == {"schema", "rows", "total_duration_micros", "stats"}
    names = [e["name"]["some"] for e in result["schema"]["elements"]]
    assert names == ["id", "name", "age", "owner"]
    assert result["schema"]["elements"][1]["algebraic_type"] == {"String": []}
    (row,) = result["rows"]
    assert row[1] == "Dora" and row[2] == [1, []] and row[3][0].startswith("0xc200")
    assert result["stats"] == {"rows_inserted": 0, "rows_deleted": 0, "rows_updated": 0}


def test_sql_where_with_and_and_projection(server: StandinServer, database: str) -> None:
    post_json(server.url, f"/v1/database/{database}/call/add", ["Eve", {"some": 7}])
    result = _sql(server, "SELECT name FROM person WHERE name = 'Eve' AND id > 0").json()[0]
    assert result["rows"] == [["Eve"]]


def test_sql_dml_by_owner_reports_stats(server: StandinServer, owner: tuple[str, str], database: str) -> None:
    token = owner[1]
    inserted = _sql(server, f"INSERT INTO person (name, owner) VALUES ('Finn', 0x{owner[0]})", token).json()[
        0
    ]
    assert inserted["stats"]["rows_inserted"] == 1
    updated = _sql(server, "UPDATE person SET name = 'Finn2' WHERE name = 'Finn'", token).json()[0]
    assert updated["stats"]["rows_updated"] == 1
    deleted = _sql(server, "DELETE FROM person WHERE name = 'Finn2'", token).json()[0]
    assert deleted["stats"]["rows_deleted"] == 1


def test_sql_dml_by_non_owner_is_rejected(server: StandinServer, database: str) -> None:
    reply = _sql(server, "DELETE FROM person")
    assert reply.status == 400 and "not authorized to run SQL DML statements" in reply.text


def test_sql_error_is_400_text(server: StandinServer, database: str) -> None:
    reply = _sql(server, "SELECT * FROM nowhere")
    assert reply.status == 400 and reply.headers["content-type"].startswith("text/plain")
    assert reply.text == "no such table: `nowhere`. If the table exists, it may be marked private."


# ------------------------------------------------------------------ logs, schema


def test_logs_are_owner_only(server: StandinServer, owner: tuple[str, str], database: str) -> None:
    assert call(server.url, "GET", f"/v1/database/{database}/logs").status == 403
    reply = call(server.url, "GET", f"/v1/database/{database}/logs", token=owner[1])
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-ndjson"


def test_schema_version_9(server: StandinServer, database: str) -> None:
    reply = call(server.url, "GET", f"/v1/database/{database}/schema?version=9")
    data = reply.json()
    assert reply.status == 200 and [t["name"] for t in data["tables"]] == ["person", "secret"]
    assert "add" in [r["name"] for r in data["reducers"]]
    assert call(server.url, "GET", f"/v1/database/{database}/schema").status == 400


# ------------------------------------------------------------------ routing


@pytest.mark.parametrize("path", ["/v1/nope", "/", "/v1/database/quick/nope", "/v2/ping"])
def test_unknown_path_is_404_empty_without_identity_headers(server: StandinServer, path: str) -> None:
    reply = call(server.url, "GET", path)
    assert reply.status == 404 and reply.body == b""
    assert "spacetime-identity" not in reply.headers and "spacetime-identity-token" not in reply.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/ping"),
        ("GET", "/v1/identity"),
        ("GET", "/v1/database/quick/sql"),
        ("PATCH", "/v1/health"),
    ],
)
def test_wrong_method_on_known_path_is_405(
    server: StandinServer, database: str, method: str, path: str
) -> None:
    reply = call(server.url, method, path)
    assert reply.status == 405 and "allow" in reply.headers


def test_every_response_carries_backend_evidence(server: StandinServer, database: str) -> None:
    log = server.root / "data/logs/standin-access.log"
    before = log.read_text().count("\n")
    for method, path in [("GET", "/v1/ping"), ("GET", "/nope"), ("POST", "/v1/ping")]:
        reply = call(server.url, method, path)
        assert reply.headers["x-spacetimedb-standin"] == "2.8.3"
        assert "server" not in reply.headers
    assert log.read_text().count("\n") == before + 3


def test_v1_routes_have_the_cors_layer_headers(server: StandinServer) -> None:
    reply = call(server.url, "GET", "/v1/ping")
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["vary"] == "origin, access-control-request-method, access-control-request-headers"
    preflight = call(server.url, "OPTIONS", "/v1/database/quick/sql")
    assert preflight.status == 200 and preflight.headers["access-control-allow-methods"] == "*"
