"""harness/targets/command_session.py: a command through the session sees the environment the backend's own way
gives it (docker's `docker exec ... bash -c 'cd "$HOME"; exec bash -c CMD'`), run here with this machine's
python3 under an empty C-locale environment, where python would otherwise add LC_CTYPE to every command's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.lab.docker_target import _IN_HOME
from harness.targets.command_session import SERVER, CommandSession

PROBE = "env | grep -v '^_=' | sort; pwd; umask"


def test_the_environment_is_the_one_the_backend_gives(tmp_path: Path) -> None:
    base = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path}", "USER=root", "LOGNAME=root"]
    session = CommandSession(["env", "-C", "/", *base, "PYTHONCOERCECLOCALE=0", sys.executable, "-u", "-c",
                              SERVER])
    try:
        assert not session.broken
        got = session.run(PROBE, timeout=30)
    finally:
        session.close()
    own_way = subprocess.run([*base, "bash", "-c", _IN_HOME, PROBE], capture_output=True, cwd="/", timeout=30)
    assert got is not None and got[0] == 0
    assert got[1] == own_way.stdout
    assert b"LC_CTYPE" not in got[1] and b"PYTHONCOERCECLOCALE" not in got[1]
    assert f"PWD={tmp_path}\n".encode() in got[1] and b"OLDPWD=/\n" in got[1]
