"""harness.tape: what a live object answered is recorded, and replayed without it."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from harness.redact import SHAPED_JWT
from harness.tape import NotRecorded, Tape, decode, encode
from harness.targets.base import CommandResult


class FakeHost:
    """A live object whose answers change with every call: the replay must give them back in order."""

    def __init__(self) -> None:
        self.calls = 0
        self.name = "host-1"

    def run(self, command: str, *, user: str = "root") -> CommandResult:
        self.calls += 1
        return CommandResult(command=command, exit_status=0 if self.calls > 2 else 3,
                             stdout=f"call {self.calls} as {user}", stderr="", duration=0.25)

    def read_file(self, path: str) -> bytes:
        if path == "/missing":
            raise FileNotFoundError(2, "No such file", path)
        return b"\x00\x01binary" if path.endswith(".bin") else b"text of " + path.encode()

    def child(self, which: str) -> FakeChild:
        return FakeChild(which)


class FakeChild:
    def __init__(self, which: str) -> None:
        self.which = which

    def ask(self) -> str:
        return f"child {self.which}"


def _record(tmp_path: Path, scope: str = "t::a") -> tuple[Path, FakeHost]:
    path = tmp_path / "tape.jsonl.gz"
    tape = Tape("record", path)
    tape.scope = scope
    host = FakeHost()
    proxy = tape.wrap(host, "target")
    assert proxy.name == "host-1"
    for _ in range(3):
        proxy.run("systemctl is-active x", user="root")
    proxy.run("date +%s-1700000000")
    assert proxy.read_file("/etc/a") == b"text of /etc/a"
    assert proxy.read_file("/x.bin") == b"\x00\x01binary"
    with pytest.raises(FileNotFoundError):
        proxy.read_file("/missing")
    assert proxy.child("op").ask() == "child op"
    assert tape.value("seed", lambda: 1234) == 1234
    tape.close()
    return path, host


def test_replay_gives_back_every_answer_in_order_without_the_object(tmp_path: Path) -> None:
    path, host = _record(tmp_path)
    tape = Tape("replay", path)
    tape.scope = "t::a"
    proxy = tape.wrap(None, "target")
    assert proxy.name == "host-1"
    results = [proxy.run("systemctl is-active x", user="root") for _ in range(3)]
    assert [r.exit_status for r in results] == [3, 3, 0]
    assert results[0].stdout == "call 1 as root" and results[0].duration == 0.25
    # a poll that asks once more than it did live gets the last answer again (a host in a steady state)
    assert proxy.run("systemctl is-active x", user="root").stdout == "call 3 as root"
    # a number in a command (a timestamp) may differ when judged again
    assert proxy.run("date +%s-1800000000").stdout == "call 4 as root"
    assert proxy.read_file("/etc/a") == b"text of /etc/a"
    assert proxy.read_file("/x.bin") == b"\x00\x01binary"
    with pytest.raises(FileNotFoundError):
        proxy.read_file("/missing")
    assert proxy.child("op").ask() == "child op"
    assert tape.value("seed", lambda: pytest.fail("a replay never calls the live function")) == 1234
    assert host.calls == 4  # only the recording touched the host


def test_a_question_never_asked_or_asked_in_another_check_is_not_answered(tmp_path: Path) -> None:
    path, _ = _record(tmp_path)
    tape = Tape("replay", path)
    tape.scope = "t::a"
    proxy = tape.wrap(None, "target")
    with pytest.raises(NotRecorded, match="never asked target.run"):
        proxy.run("rm -rf /stdb")
    tape.scope = "t::b"
    with pytest.raises(NotRecorded, match="in t::b"):
        proxy.read_file("/etc/a")


def test_the_virtual_clock_advances_by_sleeps_and_by_recorded_call_times(tmp_path: Path) -> None:
    path, _ = _record(tmp_path)
    tape = Tape("replay", path)
    tape.scope = "t::a"
    proxy = tape.wrap(None, "target")
    before = tape.offset
    proxy.run("systemctl is-active x", user="root")
    assert tape.offset >= before  # the recorded call's duration (tiny here, but never negative)


def test_values_round_trip_with_their_types() -> None:
    value = {"a": (1, "x"), "b": [b"\xff\x00", Path("/stdb")], "c": frozenset({"k"}),
             "d": subprocess.CompletedProcess(["sslyze"], 0, "out", ""), "$odd": None,
             "when": dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)}
    back = decode(encode(value))
    assert back["a"] == (1, "x") and back["b"] == [b"\xff\x00", Path("/stdb")] and back["c"] == frozenset({"k"})
    assert back["d"].returncode == 0 and back["d"].stdout == "out" and back["$odd"] is None
    assert back["when"] == value["when"]


def test_secrets_leave_the_tape_with_their_shape(tmp_path: Path) -> None:
    path = tmp_path / "tape.jsonl"
    tape = Tape("record", path)
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJoZXhfaWRlbnRpdHkiOiJjMjAwIn0.c2lnbmF0dXJlLWJ5dGVz"
    tape.value("identity", lambda: f'{{"identity":"c200","token":"{jwt}"}}')
    tape.close()
    text = path.read_text()
    assert jwt not in text and "eyJoZXhfaWRlbnRpdHkiOiJjMjAwIn0" not in text
    replayed = Tape("replay", path).value("identity", lambda: "")
    assert replayed == f'{{"identity":"c200","token":"{SHAPED_JWT}"}}'
    assert SHAPED_JWT.count(".") == 2


def test_a_file_that_is_no_tape_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "tape.jsonl"
    bad.write_text('{"not": "a tape"}\n')
    with pytest.raises(NotRecorded, match="not a tape"):
        Tape("replay", bad)


class Picky(Exception):
    """An exception whose constructor wants other arguments than its args (as botocore's ClientError)."""

    def __init__(self, response: dict, operation: str) -> None:
        super().__init__(f"{operation} failed: {response['Error']}")


def test_an_exception_whose_class_wants_other_arguments_comes_back_as_its_class(tmp_path: Path) -> None:
    def fails() -> None:
        raise Picky({"Error": "NotImplemented"}, "ListRecoveryPoints")

    path = tmp_path / "tape.jsonl"
    tape = Tape("record", path)
    with pytest.raises(Picky):
        tape.value("aws", fails)
    tape.close()
    with pytest.raises(Picky, match="ListRecoveryPoints failed: NotImplemented"):
        Tape("replay", path).value("aws", fails)
