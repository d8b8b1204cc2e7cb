"""Fixtures for the stand-in tests: one release tree, a local mirror, one install through the real
install script, and one running server (127.0.0.1, random port) shared by the HTTP/websocket tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from standin_clients import WS_IDLE_TIMEOUT, WS_PING_INTERVAL, call, new_identity

from fixtures.spacetimedb_standin.release import build_release_tree
from fixtures.spacetimedb_standin.testing import (
    StandinServer,
    free_port,
    install_with_script,
    serve_release_tree,
    standin_env,
)

EXAMPLE_MODULE = (
    Path(__file__).resolve().parents[2] / "fixtures/spacetimedb_standin/examples" / "quickstart_module.json"
)


@pytest.fixture(scope="session")
def release_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("release") / "tree"
    build_release_tree(tree)
    return tree


@pytest.fixture(scope="session")
def mirror_url(release_tree: Path) -> Iterator[str]:
    with serve_release_tree(release_tree) as url:
        yield url


@pytest.fixture(scope="session")
def installed_template(tmp_path_factory: pytest.TempPathFactory, mirror_url: str) -> Path:
    """A root dir installed once with the real install script (copy it before changing it)."""
    root = tmp_path_factory.mktemp("installed") / "stdb"
    root.mkdir()
    result = install_with_script(root, mirror_url)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def fresh_root(tmp_path: Path, installed_template: Path) -> Path:
    """A private copy of the installed tree (symlinks kept)."""
    root = tmp_path / "stdb"
    shutil.copytree(installed_template, root, symlinks=True)
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, installed_template: Path) -> Iterator[StandinServer]:
    root = tmp_path_factory.mktemp("server") / "stdb"
    shutil.copytree(installed_template, root, symlinks=True)
    env = standin_env(
        STDB_STANDIN_WS_PING_INTERVAL=str(WS_PING_INTERVAL), STDB_STANDIN_WS_IDLE_TIMEOUT=str(WS_IDLE_TIMEOUT)
    )
    instance = StandinServer(root, free_port(), env).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def owner(server: StandinServer) -> tuple[str, str]:
    """(identity, token) of the owner of the `quick` database."""
    return new_identity(server.url)


@pytest.fixture(scope="session")
def database(server: StandinServer, owner: tuple[str, str]) -> str:
    """The example module published as `quick` by `owner`."""
    reply = call(server.url, "PUT", "/v1/database/quick", EXAMPLE_MODULE.read_bytes(), owner[1])
    assert reply.status == 200, reply.text
    return "quick"
