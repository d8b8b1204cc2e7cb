"""BSATN values and v2/v3 client frames: byte layouts the official SDK writes (read from its BinaryWriter)."""

from __future__ import annotations

import struct

import pytest

from fixtures.spacetimedb_standin.runtime import ws_v2
from fixtures.spacetimedb_standin.runtime.bsatn import BsatnError, Reader, decode_product, decode_value, encode_value
from fixtures.spacetimedb_standin.runtime.sats import parse_type

IDENT = "c2" + "ab" * 31


@pytest.mark.parametrize(("type_name", "value", "encoded"), [
    ("u8", 200, b"\xc8"),
    ("i16", -2, b"\xfe\xff"),
    ("u64", 2**64 - 1, b"\xff" * 8),
    ("i128", -1, b"\xff" * 16),
    ("bool", True, b"\x01"),
    ("f64", 0.5, struct.pack("<d", 0.5)),
    ("string", "hé", b"\x03\x00\x00\x00h\xc3\xa9"),
    ("bytes", b"\x00\x01", b"\x02\x00\x00\x00\x00\x01"),
    ("option<u32>", None, b"\x01"),
    ("option<u32>", 7, b"\x00\x07\x00\x00\x00"),
    ("identity", IDENT, int(IDENT, 16).to_bytes(32, "little")),
])
def test_values_encode_and_decode(type_name: str, value: object, encoded: bytes) -> None:
    ty = parse_type(type_name)
    assert encode_value(ty, value) == encoded
    reader = Reader(encoded)
    assert decode_value(ty, reader) == value and reader.remaining == 0


def test_arguments_must_use_every_byte_and_no_more() -> None:
    types = [parse_type("string"), parse_type("option<u32>")]
    assert decode_product(types, b"\x01\x00\x00\x00a\x01") == ["a", None]
    with pytest.raises(BsatnError, match="left over"):
        decode_product(types, b"\x01\x00\x00\x00a\x01\x00")
    with pytest.raises(BsatnError, match="truncated"):
        decode_product(types, b"\x05\x00\x00\x00a")
    with pytest.raises(BsatnError, match="option tag"):
        decode_product(types, b"\x01\x00\x00\x00a\x07")


def _subscribe(request_id: int, set_id: int, query: str) -> bytes:
    raw = query.encode()
    return bytes([0]) + struct.pack("<III", request_id, set_id, 1) + struct.pack("<I", len(raw)) + raw


def test_a_v3_frame_holds_several_v2_messages_and_a_v2_frame_one() -> None:
    call = bytes([3]) + struct.pack("<IB", 9, 0) + struct.pack("<I", 3) + b"add" + struct.pack("<I", 1) + b"\x01"
    frame = _subscribe(1, 2, "SELECT * FROM t") + call
    messages = ws_v2.decode_client_frame(frame, v3=True)
    assert messages == [ws_v2.Subscribe(1, 2, ["SELECT * FROM t"]), ws_v2.CallReducer(9, 0, "add", b"\x01")]
    with pytest.raises(BsatnError):
        ws_v2.decode_client_frame(frame, v3=False)
    with pytest.raises(BsatnError, match="unknown client message tag"):
        ws_v2.decode_client_frame(b"\x09", v3=False)


def test_server_frames_carry_the_compression_tag() -> None:
    small = ws_v2.subscription_error(None, 3, "no")
    assert ws_v2.server_frame(small, ws_v2.COMPRESSION_GZIP)[:1] == b"\x00"
    big = ws_v2.subscription_error(1, 3, "x" * 2000)
    frame = ws_v2.server_frame(big, ws_v2.COMPRESSION_GZIP)
    assert frame[:1] == b"\x02" and len(frame) < len(big)
    # a client that asked for brotli gets an uncompressed frame, which its tag says
    assert ws_v2.server_frame(big, ws_v2.COMPRESSION_BROTLI) == b"\x00" + big
