"""harness/lab/docker_target.py: the kit's root commands in a container through one long-lived session answer
what their own `docker exec` answers (user, home, working directory, environment, umask, no terminal, exit
status, exact bytes, timeouts), and a container restarted under the session costs no command. Run in the lab's
own base image (a container with systemd as PID 1, as every lab target)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from harness.backends.docker import SYSTEMD_FLAGS
from harness.lab import docker_target
from harness.lab.docker_target import DockerTarget, end_session, session_for
from harness.lab.image import ensure_base_image

pytestmark = pytest.mark.lab

PROBE = ("id -un; pwd; echo \"$HOME\"; env | grep -v '^_=' | sort; umask; test -t 0 && echo tty || echo no-tty; "
         "ls -l /proc/self/fd/0 | sed 's/.*-> //'; printf 'a\\0b\\n'; echo err >&2; exit 7")


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    tag = ensure_base_image(lambda _line: None).tag
    name = f"stdbc-session-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--label", "stdbc-test=command-session", *SYSTEMD_FLAGS,
                    tag, "/sbin/init"], check=True, capture_output=True, timeout=120)
    try:
        yield name
    finally:
        end_session(name)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_a_root_command_answers_as_its_own_docker_exec(container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = DockerTarget(container, "stdb", "")
    found = session_for(container)
    assert found is not None, "no command session in the container"
    session = found[0]
    before = session.commands
    via_session = target.run(PROBE, timeout=60, env={"FOO": "bar baz"})
    assert session.commands == before + 1, "the command did not go through the session"
    monkeypatch.setenv("STDBC_COMMAND_SESSION", "0")
    via_exec = target.run(PROBE, timeout=60, env={"FOO": "bar baz"})
    assert (via_session.exit_status, via_session.stdout, via_session.stderr) == \
        (via_exec.exit_status, via_exec.stdout, via_exec.stderr)
    assert via_session.exit_status == 7 and via_session.stdout.startswith("root\n/root\n/root\n")
    assert "FOO=bar baz\n" in via_session.stdout and "LC_CTYPE" not in via_session.stdout
    assert "a\x00b\n" in via_session.stdout and via_session.stderr == "err\n"


def test_a_command_that_overruns_is_ended_in_the_session(container: str) -> None:
    target = DockerTarget(container, "stdb", "")
    slow = target.run("sleep 30", timeout=2)
    assert slow.timed_out and slow.exit_status == 124 and slow.duration < 15
    assert target.run("echo next", timeout=30).stdout == "next\n"


def test_files_read_and_written_through_the_session(container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = DockerTarget(container, "stdb", "")
    found = session_for(container)
    assert found is not None
    before = found[0].commands
    small, large = bytes(range(256)) * 4, bytes(range(256)) * 400  # 1 KiB through the session, 100 KiB not
    target.write_file("/root/new/dir/small.bin", small, mode=0o640, owner="ubuntu")
    target.write_file("/root/large.bin", large)
    assert target.read_file("/root/new/dir/small.bin") == small and target.read_file("/root/large.bin") == large
    assert found[0].commands == before + 3, "a small write and both reads go through the session"
    with pytest.raises(FileNotFoundError):
        target.read_file("/root/absent")
    listing = target.run("stat -c '%a %U' /root/new/dir/small.bin /root/large.bin").stdout
    monkeypatch.setenv("STDBC_COMMAND_SESSION", "0")
    target.write_file("/root/new/dir/small.bin", small, mode=0o640, owner="ubuntu")
    target.write_file("/root/large.bin", large)
    assert target.run("stat -c '%a %U' /root/new/dir/small.bin /root/large.bin").stdout == listing == \
        "640 ubuntu\n644 root\n"


def test_a_container_restarted_under_the_session_costs_no_command(container: str) -> None:
    target = DockerTarget(container, "stdb", "")
    first = session_for(container)
    assert first is not None
    subprocess.run(["docker", "restart", "-t", "5", container], check=True, capture_output=True, timeout=120)
    res = target.run("cat /proc/1/comm", timeout=60)  # the old session is gone: the command still runs, once
    assert res.ok and res.stdout.strip() == "systemd", res
    second = session_for(container)
    assert second is not None and second[0] is not first[0] and second[1] != first[1]


def test_sessions_off_or_unstartable_mean_docker_exec(container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    end_session(container)
    monkeypatch.setattr(docker_target, "SERVER", "import sys; sys.exit(1)")
    assert session_for(container) is None
    res = DockerTarget(container, "stdb", "").run("echo via-exec", timeout=30)
    assert res.ok and res.stdout == "via-exec\n"
    end_session(container)


def test_sessions_of_containers_gone_are_reaped(container: str) -> None:
    """A process that outlives many lab containers (a test session, `lab up`) keeps no ended `docker exec`."""
    found = session_for(container)
    assert found is not None
    found[0].proc.kill()
    for _ in range(100):  # ended (all its threads), not yet reaped: WNOWAIT leaves it waitable (bounded: 10 s)
        if os.waitid(os.P_PID, found[0].proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.1)
    assert session_for("stdbc-session-test-absent") is None  # no such container: no session, but the sweep ran
    assert container not in docker_target._SESSIONS
    assert found[0].proc.returncode is not None, "the ended docker exec was not reaped"
