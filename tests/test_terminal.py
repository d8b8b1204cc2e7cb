"""harness/terminal.py: a command in a pty that ends when the command has ended (the shell text runs here as on a
target: sh and python3)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

import pytest

from harness.terminal import in_terminal


def _run(command: str, timeout: float = 20) -> tuple[int, str, float]:
    started = time.monotonic()
    text = in_terminal(command).replace("python3 -c", f"{shlex.quote(sys.executable)} -c", 1)
    done = subprocess.run(["sh", "-c", text], capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    return done.returncode, done.stdout.decode(errors="replace"), time.monotonic() - started


def test_the_command_has_a_terminal_and_its_exit_status() -> None:
    code, out, _ = _run("test -t 0 && test -t 1 && echo on-a-tty; exit 7")
    assert code == 7
    assert out == "on-a-tty\r\n"  # a terminal's line endings: the output went through a pty


def test_all_output_arrives() -> None:
    code, out, _ = _run("seq 1 20000")
    assert code == 0
    assert out.split() == [str(i) for i in range(1, 20001)]


def test_a_signal_is_128_plus_its_number() -> None:
    code, _, _ = _run("kill -TERM $$")
    assert code == 128 + 15


def test_it_ends_when_the_command_ends_although_a_leftover_holds_the_terminal() -> None:
    # a process in its own session keeps the pty's other end open: the copy never sees end of file
    code, out, seconds = _run("setsid sleep 30 & echo started; exit 0", timeout=25)
    assert code == 0 and "started" in out
    assert seconds < 10, f"waited {seconds:.1f} s for a process the command left behind"


@pytest.mark.parametrize("command", ["sudo nginx -t", "journalctl -u 'x y' | tail -3", "echo \"it's\""])
def test_the_program_and_the_command_are_one_word_each(command: str) -> None:
    words = shlex.split(in_terminal(command))
    assert words[:2] == ["python3", "-c"] and words[3] == command and len(words) == 4
