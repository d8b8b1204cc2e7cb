"""Unit tests of the stand-in's building blocks (no server)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fixtures.spacetimedb_standin.runtime import jwt
from fixtures.spacetimedb_standin.runtime.blake3 import blake3
from fixtures.spacetimedb_standin.runtime.cli_args import unrecognized_subcommand
from fixtures.spacetimedb_standin.runtime.commitlog import HEADER, Commitlog, encode_record
from fixtures.spacetimedb_standin.runtime.identity import identity_from_claims
from fixtures.spacetimedb_standin.runtime.layout import DataDir
from fixtures.spacetimedb_standin.runtime.module_def import ModuleError, load_module, wrap_in_wasm
from fixtures.spacetimedb_standin.runtime.p256 import PrivateKey, load_private_pem, load_public_pem
from fixtures.spacetimedb_standin.runtime.psql_table import render
from fixtures.spacetimedb_standin.runtime.sats import parse_type, rust_float
from fixtures.spacetimedb_standin.runtime.sqlparse import Compare, Select, SqlError, parse
from fixtures.spacetimedb_standin.runtime.standalone_main import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures/spacetimedb_standin/examples/quickstart_module.json"


@pytest.mark.parametrize(
    ("length", "digest"),
    [
        (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        (1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
        (1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"),
        (4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"),
    ],
)
def test_blake3_matches_official_test_vectors(length: int, digest: str) -> None:
    assert blake3(bytes(i % 251 for i in range(length))).hex() == digest


def test_identity_is_64_hex_with_c200_prefix_and_checksum() -> None:
    identity = identity_from_claims("localhost", "some-subject")
    assert len(identity) == 64 and identity.startswith("c200")
    id_hash = blake3(b"localhost|some-subject")[:26]
    assert identity[12:] == id_hash.hex()
    assert identity[4:12] == blake3(b"\xc2\x00" + id_hash)[:4].hex()


def test_p256_signatures_and_pem_round_trip() -> None:
    key = PrivateKey.generate()
    signature = key.sign(b"message")
    assert key.public_key().verify(b"message", signature)
    assert not key.public_key().verify(b"other", signature)
    assert load_private_pem(key.to_pem()) == key
    assert load_public_pem(key.public_key().to_pem()) == key.public_key()
    assert key.to_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.public_key().to_pem().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_p256_keys_interoperate_with_openssl() -> None:
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")
    utils = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.utils")
    key = PrivateKey.generate()
    signature = key.sign(b"jwt")
    public = serialization.load_pem_public_key(key.public_key().to_pem())
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public.verify(der, b"jwt", ec.ECDSA(hashes.SHA256()))
    assert serialization.load_pem_private_key(key.to_pem(), None).private_numbers().private_value == key.d


def test_jwt_es256_claims_and_rejections() -> None:
    key = PrivateKey.generate()
    claims = jwt.new_anonymous_claims()
    token = jwt.encode(claims, key)
    header = json.loads(jwt.b64url_decode(token.split(".")[0]))
    assert header == {"typ": "JWT", "alg": "ES256"}
    verified = jwt.verify(token, key.public_key())
    assert set(verified) == {"hex_identity", "sub", "iss", "aud", "iat", "exp"}
    assert verified["iss"] == "localhost" and verified["aud"] == ["spacetimedb"] and verified["exp"] is None
    with pytest.raises(jwt.TokenError) as excinfo:
        jwt.verify(token, PrivateKey.generate().public_key())
    assert excinfo.value.kind == "InvalidSignature"
    expired = jwt.encode(jwt.mint_claims("localhost", "s", ["spacetimedb"], expiry_seconds=-120), key)
    with pytest.raises(jwt.TokenError) as excinfo:
        jwt.verify(expired, key.public_key(), now=time.time())
    assert excinfo.value.kind == "ExpiredSignature"


def test_sql_parser_handles_where_and_or_and_dml() -> None:
    stmt = parse("SELECT * FROM person WHERE id = 1 AND (name = 'a''b' OR age > -3);")
    assert isinstance(stmt, Select) and stmt.table == "person"
    assert stmt.where is not None and stmt.where.op == "AND"  # type: ignore[union-attr]
    assert isinstance(stmt.where.left, Compare)  # type: ignore[union-attr]
    assert parse("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')").rows[1][1].text == "y"  # type: ignore[union-attr]
    assert parse("UPDATE t SET a = 0x01 WHERE b = true").assignments[0][1].kind == "hex"  # type: ignore[union-attr]
    assert parse("DELETE FROM t").where is None  # type: ignore[union-attr]
    with pytest.raises(SqlError):
        parse("SELEC * FROM t")
    with pytest.raises(SqlError):
        parse("SELECT * FROM a JOIN b ON a.x = b.x")


def test_psql_table_matches_the_real_cli_layout() -> None:
    schema = {
        "elements": [
            {"name": {"some": "a"}, "algebraic_type": {"I32": []}},
            {"name": {"some": "b"}, "algebraic_type": {"I64": []}},
        ]
    }
    assert render(schema, [[1, 2]]) == " a | b \n---+---\n 1 | 2 "
    identity = {"Product": {"elements": [{"name": {"some": "__identity__"}, "algebraic_type": {"U256": []}}]}}
    text_schema = {
        "elements": [
            {"name": {"some": "s"}, "algebraic_type": {"String": []}},
            {"name": {"some": "who"}, "algebraic_type": identity},
        ]
    }
    out = render(text_schema, [["hi", ["0x0"]]])
    assert '"hi"' in out and "0x" + "0" * 64 in out


def test_rust_like_float_display() -> None:
    assert rust_float(1.0) == "1"
    assert rust_float(0.1, single=True) == "0.1"
    assert rust_float(1e20) == "100000000000000000000"
    assert rust_float(-2.5) == "-2.5"


def test_unknown_subcommand_error_is_clap_shaped() -> None:
    error = unrecognized_subcommand(
        "install", ["publish", "list", "init", "version"], "spacetime [OPTIONS] <COMMAND>"
    )
    assert error.render() == (
        "error: unrecognized subcommand 'install'\n\n"
        "  tip: some similar subcommands exist: 'list', 'init'\n\n"
        "Usage: spacetime [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n"
    )


def test_commitlog_ignores_a_torn_final_record(tmp_path: Path) -> None:
    log = Commitlog(tmp_path / "clog")
    list(log.replay())
    log.open_for_append()
    for tx in range(3):
        log.append({"tx": tx, "ts": 0, "ops": [["i", "t", [tx]]]})
    log.close()
    segment = log.segments()[-1]
    good_size = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(encode_record({"tx": 3, "ts": 0, "ops": []})[:-5])
    reopened = Commitlog(tmp_path / "clog")
    assert [r["tx"] for r in reopened.replay()] == [0, 1, 2]
    assert segment.stat().st_size == good_size and reopened.torn_bytes_dropped > 0
    reopened.open_for_append()
    reopened.append({"tx": 3, "ts": 0, "ops": []})
    reopened.close()
    assert [r["tx"] for r in Commitlog(tmp_path / "clog").replay()] == [0, 1, 2, 3]
    assert segment.read_bytes().startswith(HEADER)


def test_module_json_wasm_custom_section_and_rejections() -> None:
    raw = EXAMPLE.read_bytes()
    module = load_module(raw)
    assert [t.name for t in module.tables] == ["person", "secret"]
    assert load_module(wrap_in_wasm(raw)).reducer("add") is not None
    with pytest.raises(ModuleError, match="stdb_standin_module"):
        load_module(b"\0asm\x01\0\0\0")
    with pytest.raises(ModuleError):
        load_module(b"not a module")
    with pytest.raises(ModuleError):
        load_module(b'{"tables": [{"name": "t", "columns": [{"name": "x", "type": "u512"}]}]}')
    assert str(parse_type("option<identity>")) == "option<identity>"


def test_websocket_ping_and_idle_defaults_and_env_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STDB_STANDIN_WS_PING_INTERVAL", raising=False)
    monkeypatch.delenv("STDB_STANDIN_WS_IDLE_TIMEOUT", raising=False)
    settings = load_settings(DataDir(tmp_path / "data"))
    assert (settings.ping_interval, settings.idle_timeout) == (15.0, 30.0)
    monkeypatch.setenv("STDB_STANDIN_WS_PING_INTERVAL", "0.5")
    monkeypatch.setenv("STDB_STANDIN_WS_IDLE_TIMEOUT", "2")
    settings = load_settings(DataDir(tmp_path / "data"))
    assert (settings.ping_interval, settings.idle_timeout) == (0.5, 2.0)
