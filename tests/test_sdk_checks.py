"""The SDK client's command, bindings and failure lines (harness.sdk_checks), without a lab."""

from __future__ import annotations

import json
import shlex

import pytest

from fixtures.conformance_db import PROBE_MODULE
from harness.sdk_bundle import node_flags_for
from harness.sdk_checks import bindings_for, failure, sdk_command, sdk_events


def test_bindings_describe_the_table_and_the_reducer_that_inserts_into_it() -> None:
    assert bindings_for(PROBE_MODULE, "probe") == {
        "table": "probe", "columns": [["id", "u64", "pk"], ["marker", "string"]],
        "reducer": "add_probe", "args": [["marker", "string"]]}
    assert bindings_for(PROBE_MODULE, "nope") is None
    no_string = {"tables": [{"name": "t", "columns": [{"name": "n", "type": "u32"}]}],
                 "reducers": [{"name": "r", "args": [{"name": "n", "type": "u32"}], "ops": [{"insert": "t"}]}]}
    assert "reducer" not in (bindings_for(no_string, "t") or {})


def test_the_command_trusts_the_site_ca_or_the_system_store_and_pins_the_address() -> None:
    prefix = ["/lab/sdk-node", "--experimental-websocket", "/lab/agents/sdk_client.mjs", "--sdk", "/lab/sdk"]
    words = shlex.split(sdk_command(prefix, url="https://x.test", database="db", bindings={"table": "t"},
                                    call_reducer=True, connect="10.0.0.2", ca_file="/tmp/ca.pem"))
    assert words[:2] == ["env", "NODE_EXTRA_CA_CERTS=/tmp/ca.pem"] and words[2:7] == prefix
    assert words[words.index("--connect") + 1] == "10.0.0.2" and "--call-reducer" in words
    assert json.loads(words[words.index("--bindings") + 1]) == {"table": "t"}
    plain = shlex.split(sdk_command(prefix, url="https://x.test", database="db", bindings=None, call_reducer=False))
    assert plain[1] == "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"
    assert "--bindings" not in plain and "--connect" not in plain and "--call-reducer" not in plain


def test_failures_name_the_step_and_the_sdks_words() -> None:
    events = sdk_events('{"event":"connected","identity":"ab"}\nnoise\n'
                        '{"event":"error","step":"returning","message":"Failed to verify token: Forbidden"}\n')
    assert failure(events, 1, "") == "the SDK failed at `returning`: Failed to verify token: Forbidden"
    assert "no answer at `subscribe` within 6 s" in failure(sdk_events(
        '{"event":"timeout","step":"subscribe","seconds":6}'), 3, "")
    assert failure({}, 127, "node: not found\n") == "the SDK client ended with exit 127: node: not found"


def test_node_20_and_21_need_the_websocket_flag() -> None:
    assert node_flags_for("v20.20.2") == ["--experimental-websocket"]
    assert node_flags_for("v21.0.0\n") == ["--experimental-websocket"]
    assert node_flags_for("v22.3.0") == [] and node_flags_for("garbage") == []


def test_the_clients_bound_is_fifteen_seconds_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import KitError

    monkeypatch.delenv("STDB_SDK_TIMEOUT", raising=False)
    args = ["node", "client.mjs"]
    assert "--timeout 15" in sdk_command(args, url="https://x", database="d", bindings=None, call_reducer=False)
    monkeypatch.setenv("STDB_SDK_TIMEOUT", "40")
    assert "--timeout 40" in sdk_command(args, url="https://x", database="d", bindings=None, call_reducer=False)
    monkeypatch.setenv("STDB_SDK_TIMEOUT", "soon")
    with pytest.raises(KitError, match="STDB_SDK_TIMEOUT='soon' is not a number of seconds"):
        sdk_command(args, url="https://x", database="d", bindings=None, call_reducer=False)
