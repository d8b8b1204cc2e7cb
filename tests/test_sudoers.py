"""`staging sudoers`: the drop-in names exactly the read-only catalogue (issue 27, least privilege on the host)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends import readonly_script
from harness.backends.ssh_catalogue import CATALOGUE
from harness.backends.sudoers import MAX_PATTERN, PROGRAM_PATHS, commands, drop_in, entry_regex, find_regex
from tests.test_ssh_catalogue import LOOKS_READ_ONLY_BUT_IS_NOT, READ_ONLY

REPO = Path(__file__).resolve().parents[1]


def _sudo_allows(argv: list[str]) -> bool:
    """What the drop-in's patterns say about argv (Python's re reads these POSIX patterns the same way)."""
    program = argv[0]
    patterns = [entry_regex(e) for e in CATALOGUE if e.words[0] == program]
    if program == "find":
        patterns.append(find_regex())
    args = " ".join(argv[1:])
    return any(re.fullmatch(p, args) for p in patterns)


def _remote_argvs(command: str) -> list[list[str]]:
    return [s.argv for s in readonly_script.remote_commands(readonly_script.parse(command))]


def test_every_pattern_fits_sudo_and_every_program_has_a_path() -> None:
    for line in commands():
        path, _, pattern = line.partition(" ")
        assert path.startswith("/") and pattern.startswith("^") and pattern.endswith("$")
        assert len(pattern) <= MAX_PATTERN, path
    assert {e.words[0] for e in CATALOGUE} <= set(PROGRAM_PATHS)


@pytest.mark.parametrize("command", READ_ONLY)
def test_sudo_allows_what_the_kit_sends(command: str) -> None:
    for argv in _remote_argvs(command):
        assert _sudo_allows(argv), shlex.join(argv)


def test_sudo_refuses_what_the_kit_refuses() -> None:
    """Every corpus command whose words parse: sudo's patterns refuse each command the catalogue refuses."""
    checked = 0
    for command in LOOKS_READ_ONLY_BUT_IS_NOT:
        try:
            argvs = _remote_argvs(command)
        except readonly_script.NotReadOnly:
            continue
        for argv in argvs:
            if argv[0] in PROGRAM_PATHS and readonly_script.match(argv) is not None and \
                    isinstance(readonly_script.match(argv), str):
                assert not _sudo_allows(argv), shlex.join(argv)
                checked += 1
    assert checked >= 40


def test_the_command_prints_a_drop_in_and_bad_names_are_one_line() -> None:
    text = drop_in("audit")
    assert "Cmnd_Alias STDBC_READ_ONLY" in text and "audit ALL=(root, spacetimedb) NOPASSWD: STDBC_READ_ONLY" in text
    assert "ALL=(ALL)" not in text and "NOPASSWD: ALL" not in text
    done = subprocess.run([sys.executable, "-m", "harness", "staging", "sudoers", "--user", "Bad User"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
