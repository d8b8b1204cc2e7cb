"""harness/vm/command_server.py: the kit's root commands on a VM through one long-lived session. The server
program runs here with this machine's python3 (over `bash -c` instead of ssh + sudo)."""

from __future__ import annotations

import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.targets.command_session import STOPPED
from harness.vm import command_server
from harness.vm.command_server import CommandServer, close_for, server_for


@dataclass
class LocalEndpoint:
    """Stands in for SshEndpoint: the remote command runs in a local bash, without sudo."""

    control_path: Path
    alive: bool = True

    def argv(self, remote: str) -> list[str]:
        prefix = "sudo -H env PYTHONCOERCECLOCALE=0 python3 "
        assert remote.startswith(prefix)
        return ["bash", "-c", remote.replace(prefix, f"env PYTHONCOERCECLOCALE=0 {shlex.quote(sys.executable)} ", 1)]

    def master_alive(self) -> bool:
        return self.alive


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    endpoint = LocalEndpoint(tmp_path / "ssh.ctl")
    got = server_for(endpoint)  # type: ignore[arg-type]
    assert got is not None
    yield got
    close_for(endpoint.control_path)


def test_status_and_exact_bytes(server: CommandServer) -> None:
    assert server.run("printf 'a\\0b\\n'; echo err >&2; exit 3", timeout=10) == (3, b"a\x00b\n", b"err\n", False)
    status, out, _, _ = server.run("echo $FOO; pwd", timeout=10, env={"FOO": "bar"}) or (None, b"", b"", None)
    assert status == 0 and out.split(b"\n")[0] == b"bar"


def test_a_command_that_overruns_is_killed_with_its_children(server: CommandServer, tmp_path: Path) -> None:
    flag = tmp_path / "survived"
    started = time.monotonic()
    status, _, _, timed_out = server.run(f"(sleep 3; touch {flag}) & sleep 30", timeout=1) or (0, b"", b"", False)
    assert (status, timed_out) == (124, True) and time.monotonic() - started < 10
    time.sleep(3.5)
    assert not flag.exists(), "a child of the timed-out command kept running"
    assert server.run("echo next", timeout=10) == (0, b"next\n", b"", False)  # the server goes on


def test_a_signal_is_128_plus_its_number(server: CommandServer) -> None:
    assert server.run("kill -9 $$", timeout=10) == (128 + 9, b"", b"", False)


def test_busy_means_the_caller_goes_the_old_way(server: CommandServer) -> None:
    holder = threading.Thread(target=server.run, args=("sleep 2",), kwargs={"timeout": 10})
    holder.start()
    time.sleep(0.5)
    assert server.run("echo hi", timeout=10) is None
    holder.join()
    assert server.run("echo hi", timeout=10) == (0, b"hi\n", b"", False)


def test_a_server_that_died_is_replaced_and_a_dead_master_gets_none(tmp_path: Path) -> None:
    endpoint = LocalEndpoint(tmp_path / "ssh.ctl")
    first = server_for(endpoint)  # type: ignore[arg-type]
    assert first is not None
    first.proc.kill()
    first.proc.wait()
    assert first.run("echo hi", timeout=5) in (None, (124, b"", STOPPED, True))
    second = server_for(endpoint)  # type: ignore[arg-type]
    assert second is not None and second is not first
    close_for(endpoint.control_path)
    endpoint.alive = False
    assert server_for(endpoint) is None  # type: ignore[arg-type]


def test_a_server_that_cannot_start_is_not_tried_again_until_the_master_ends(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = LocalEndpoint(tmp_path / "ssh.ctl")
    monkeypatch.setattr(command_server, "START_TIMEOUT", 2.0)
    monkeypatch.setattr(endpoint, "argv", lambda remote: ["bash", "-c", "exit 1"])
    assert server_for(endpoint) is None  # type: ignore[arg-type]
    calls = []
    monkeypatch.setattr(command_server, "CommandServer", lambda ep: calls.append(ep))
    assert server_for(endpoint) is None and calls == []  # type: ignore[arg-type]
    close_for(endpoint.control_path)
