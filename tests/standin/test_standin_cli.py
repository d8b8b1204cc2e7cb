"""CLI facts: server add/list/ping, publish (pre_publish then PUT), sql output format, call."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin_clients import call

from fixtures.spacetimedb_standin.testing import StandinServer, free_port, run_spacetime

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures/spacetimedb_standin/examples/quickstart_module.json"
UNSTABLE = "WARNING: This command is UNSTABLE and subject to breaking changes."


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory, installed_template: Path) -> Iterator[StandinServer]:
    root = tmp_path_factory.mktemp("cli") / "stdb"
    shutil.copytree(installed_template, root, symlinks=True)
    server = StandinServer(root, free_port()).start()
    assert run_spacetime(root, "server", "add", "lab", "--url", server.url).returncode == 0
    yield server
    server.stop()


def _spacetime(server: StandinServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_spacetime(server.root, *args)


def test_cli_config_has_local_and_maincloud_like_the_real_default(cli_server: StandinServer) -> None:
    config = tomllib.loads((cli_server.root / "config/cli.toml").read_text())
    servers = {s["nickname"]: s for s in config["server_configs"]}
    assert config["default_server"] == "maincloud"
    assert (servers["local"]["host"], servers["local"]["protocol"]) == ("127.0.0.1:3000", "http")


def test_server_add_stores_the_public_key(cli_server: StandinServer) -> None:
    config = tomllib.loads((cli_server.root / "config/cli.toml").read_text())
    lab = next(s for s in config["server_configs"] if s.get("nickname") == "lab")
    assert lab["ecdsa_public_key"] == call(cli_server.url, "GET", "/v1/identity/public-key").text
    assert lab["host"] == cli_server.url.split("://")[1] and lab["protocol"] == "http"


def test_server_list_and_ping(cli_server: StandinServer) -> None:
    listing = _spacetime(cli_server, "server", "list")
    assert (
        listing.returncode == 0 and "maincloud.spacetimedb.com" in listing.stdout and "lab" in listing.stdout
    )
    assert listing.stderr.startswith(UNSTABLE)
    ping = _spacetime(cli_server, "server", "ping", "lab")
    assert ping.stdout.strip() == f"Server is online: {cli_server.url}"


def test_publish_runs_pre_publish_then_put(cli_server: StandinServer) -> None:
    first = _spacetime(cli_server, "publish", "-s", "lab", "--bin-path", str(EXAMPLE), "clidb")
    assert first.returncode == 0, first.stderr
    assert "Created new database with name: clidb, identity: c200" in first.stdout
    log = (cli_server.root / "data/logs/standin-access.log").read_text()
    assert log.index("POST /v1/database/clidb/pre_publish") < log.index("PUT /v1/database/clidb?")
    second = _spacetime(cli_server, "publish", "-s", "lab", "--bin-path", str(EXAMPLE), "clidb")
    assert second.returncode == 0 and "Updated database with name: clidb" in second.stdout


def test_call_and_sql_output_format(cli_server: StandinServer) -> None:
    _spacetime(cli_server, "publish", "-s", "lab", "--bin-path", str(EXAMPLE), "clidb")
    called = _spacetime(cli_server, "call", "-s", "lab", "clidb", "add", "Zed", '{"some": 5}')
    assert called.returncode == 0, called.stderr
    result = _spacetime(
        cli_server, "sql", "-s", "lab", "clidb", "SELECT id, name, age FROM person WHERE name = 'Zed'"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("|")[1].strip() == "name" and set(lines[1]) <= {"-", "+"}
    assert '"Zed"' in lines[2] and "(some = 5)" in lines[2]
    assert result.stderr.startswith(UNSTABLE)


def test_sql_error_is_printed_like_anyhow(cli_server: StandinServer) -> None:
    _spacetime(cli_server, "publish", "-s", "lab", "--bin-path", str(EXAMPLE), "clidb")
    result = _spacetime(cli_server, "sql", "-s", "lab", "clidb", "SELECT * FROM nope")
    assert result.returncode == 1
    assert "Error: no such table: `nope`." in result.stderr and "Caused by:" in result.stderr


def test_call_reducer_failure_exits_1_with_response_text(cli_server: StandinServer) -> None:
    _spacetime(cli_server, "publish", "-s", "lab", "--bin-path", str(EXAMPLE), "clidb")
    result = _spacetime(cli_server, "call", "-s", "lab", "clidb", "refuse", "nope")
    assert result.returncode == 1 and "Error: Response text: refused: nope" in result.stderr


def test_build_writes_the_module_where_the_real_build_does(cli_server: StandinServer, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(Path(__file__).resolve().parents[2] / "fixtures/operator_module", project)
    proc = subprocess.run([str(cli_server.root / "spacetime"), f"--root-dir={cli_server.root}", "build"],
                          cwd=project, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    built = project / "target/wasm32-unknown-unknown/release/spacetime_module.wasm"
    assert built.read_bytes().startswith(b"\0asm")
    published = _spacetime(cli_server, "publish", "-s", "lab", "-y", "--bin-path", str(built), "builtdb")
    assert published.returncode == 0, published.stderr
    (project / "stdb-standin-module.json").unlink()
    proc = subprocess.run([str(cli_server.root / "spacetime"), f"--root-dir={cli_server.root}", "build"],
                          cwd=project, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "cannot compile Rust" in proc.stderr
