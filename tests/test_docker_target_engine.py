"""A `docker exec` the engine could not carry out is the lab's failure, never the command's: a runbook step
must not be reported as failing "as written" because the docker engine died under the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import LabError
from harness.lab.docker_target import DockerTarget

FAKE_DOCKER = """#!/bin/sh
case "$1" in
  exec) printf '%s\\n' "$FAKE_EXEC_SAYS" >&2; exit 1 ;;
  inspect) [ -n "$FAKE_RUNNING" ] && { echo "$FAKE_RUNNING"; exit 0; }; echo "Error: No such object: $4" >&2; exit 1 ;;
esac
exit 2
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


@pytest.mark.parametrize("said", ["Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the "
                                  "docker daemon running?",
                                  "Error response from daemon: No such container: stdbc-x-target"])
def test_an_engine_that_cannot_exec_is_a_lab_error(fake_docker: None, monkeypatch: pytest.MonkeyPatch,
                                                   said: str) -> None:
    monkeypatch.setenv("FAKE_EXEC_SAYS", said)
    monkeypatch.delenv("FAKE_RUNNING", raising=False)
    with pytest.raises(LabError) as caught:
        DockerTarget("stdbc-x-target", "stdb", "10.0.0.2").run("sudo apt update", user="ubuntu")
    assert "docker engine could not run a command" in str(caught.value) and said[:30] in str(caught.value)


def test_the_same_words_from_a_running_containers_command_are_the_commands_own(
        fake_docker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that runs docker itself: its own `docker ps` may say the same; the container is running."""
    monkeypatch.setenv("FAKE_EXEC_SAYS", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
    monkeypatch.setenv("FAKE_RUNNING", "true")
    res = DockerTarget("stdbc-x-target", "stdb", "10.0.0.2").run("docker ps", user="ubuntu")
    assert res.exit_status == 1 and "Cannot connect" in res.stderr
