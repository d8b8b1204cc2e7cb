"""testinfra as the kit's query layer (harness/targets/testinfra_bridge.py): every testinfra query runs through
a kit Target's `run` and, with a recorder attached, is recorded as evidence with its exit status.

The fast tests drive a Target over this machine (real commands through `bash -c`, as Target.run does); the lab
test proves the same on a systemd container of the kit's base image wrapped in the docker backend's Target.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import testinfra

from harness.targets.base import CommandResult
from harness.targets.testinfra_bridge import KitBackend, bridge_of, host_for

REPO = Path(__file__).resolve().parent.parent


class LocalTarget:
    """A kit Target over this machine: `bash -c` as the current user, bounded like Target.run (status 124 on a
    timeout). Every result it returned is kept in `sent`, to compare with what a recorder saw."""

    backend = "local"
    name = "localhost"
    hostname = "localhost"

    def __init__(self) -> None:
        self.sent: list[CommandResult] = []

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0) -> CommandResult:
        started = time.monotonic()
        try:
            proc = subprocess.run(["bash", "-c", command], capture_output=True, timeout=timeout)
            status, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            status, out, err, timed_out = 124, exc.stdout or b"", exc.stderr or b"", True
        result = CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                               stderr=err.decode(errors="replace"), duration=time.monotonic() - started,
                               user=user, host=self.hostname, timed_out=timed_out)
        self.sent.append(result)
        return result


class Evidence:
    """A recorder like the suites' `check`: keeps (label, result) per recorded query."""

    def __init__(self) -> None:
        self.items: list[tuple[str, CommandResult]] = []

    def record(self, result: CommandResult, label: str = "") -> CommandResult:
        self.items.append((label, result))
        return result

    def labels(self) -> list[str]:
        return [label for label, _ in self.items]


@pytest.fixture
def local() -> LocalTarget:
    return LocalTarget()


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def test_results_convert_to_testinfras(local: LocalTarget) -> None:
    host = host_for(local, user=_me())
    out = host.run("printf 'out café'; printf 'err\\n' >&2; exit %s", "3")
    assert (out.rc, out.stdout, out.stderr) == (3, "out café", "err\n")
    assert out.stdout_bytes == "out café".encode() and out.failed and not out.succeeded
    assert out.command == b"printf 'out caf\xc3\xa9'; printf 'err\\n' >&2; exit 3"
    assert local.sent[-1].command == "printf 'out café'; printf 'err\\n' >&2; exit 3"  # quoted by testinfra
    assert host.check_output("echo %s", "a b; echo injected") == "a b; echo injected"
    timed = host.run("sleep 5", timeout=1)  # a query's own bound reaches Target.run
    assert timed.rc == 124 and local.sent[-1].timed_out
    assert [r.user for r in local.sent] == [_me()] * 3  # every query ran as the bridge's user
    assert host.backend.get_pytest_id() == "kit+local://localhost"


def test_every_module_query_is_recorded_with_its_status_and_module_call(local: LocalTarget) -> None:
    evidence = Evidence()
    host = host_for(local, evidence, user=_me())
    for module in ("file", "mount_point", "process", "user"):
        getattr(host, module)  # picks each module's implementation: setup, not evidence
    assert not evidence.items
    local.sent.clear()
    assert host.file("/proc/self/status").contains("^Name:")
    assert not host.file("/nonexistent/kit").exists
    mount = host.mount_point("/")
    assert mount.exists and mount.device
    assert host.process.filter(pid=os.getpid())[0].user == _me()
    assert host.user(_me()).exists
    host.check_output("true")
    assert [r.command for _, r in evidence.items] == [r.command for r in local.sent]
    assert [(r.exit_status, r.stdout) for _, r in evidence.items] == [(r.exit_status, r.stdout) for r in local.sent]
    assert evidence.labels() == [
        "testinfra: file('/proc/self/status').contains",
        "testinfra: file('/nonexistent/kit').exists",
        "testinfra: mount_point('/').exists",
        f"testinfra: process.filter(pid={os.getpid()})",
        f"testinfra: process(pid={os.getpid()}).user",
        f"testinfra: user({_me()!r}).exists",
        "testinfra: host.check_output",
    ]
    assert evidence.items[1][1].exit_status == 1  # a False answer is evidence too, with its status


def test_one_host_serves_many_recorders(local: LocalTarget) -> None:
    host = host_for(local, user=_me())
    bridge = bridge_of(host)
    first, second = Evidence(), Evidence()
    host.run("echo unrecorded")
    with bridge.recording(first):
        host.run("echo one")
        with bridge.recording(None):
            host.run("echo between")
        with bridge.recording(second):
            host.run("echo two")
        host.run("echo one again")
    host.run("echo unrecorded again")
    assert [r.stdout for _, r in first.items] == ["one\n", "one again\n"]
    assert [r.stdout for _, r in second.items] == ["two\n"]
    assert bridge.recorder is None


def test_module_setup_is_kept_apart_from_the_evidence(local: LocalTarget) -> None:
    evidence = Evidence()
    host = host_for(local, evidence, user=_me())
    sockets = host.socket.get_listening_sockets()  # setup: which system, is `ss` (or netstat) installed
    bridge = bridge_of(host)
    assert bridge.setup and all(label.startswith("testinfra: socket (which implementation)")
                                for label, _ in bridge.setup)
    assert "uname -s" in [r.command for _, r in bridge.setup]
    assert evidence.labels() == ["testinfra: socket.get_listening_sockets"]
    assert all("://" in s for s in sockets)
    assert len(local.sent) == len(bridge.setup) + len(evidence.items)  # nothing ran outside the kit's Target


def test_capture_gives_what_the_host_printed(local: LocalTarget) -> None:
    host = host_for(local, user=_me())
    with bridge_of(host).capture() as seen:
        present = host.file("/proc/self/status").contains("^Name:")
        host.run("echo printed")
    assert present and [r.stdout for r in seen] == ["", "printed\n"]


def test_sudo_becomes_users_without_sudo(local: LocalTarget) -> None:
    backend = KitBackend(local)  # runs as root (as on every lab Target)
    assert backend.get_sudo_command("id -un", None) == "id -un"  # already root
    assert backend.get_sudo_command("id -un", "root") == "id -un"
    assert backend.get_sudo_command("id -un", "ubuntu") == "runuser -u ubuntu -- /bin/sh -c 'id -un'"
    as_ubuntu = KitBackend(local, user="ubuntu")  # a bridge below root still uses testinfra's sudo
    assert as_ubuntu.get_sudo_command("id -un", None) == "sudo /bin/sh -c 'id -un'"
    assert as_ubuntu.get_sudo_command("id -un", "ubuntu") == "id -un"
    host = host_for(local, user=_me())
    with host.sudo(_me()):
        assert host.check_output("id -un") == _me()
    if os.geteuid() == 0:
        with host.sudo("nobody"):
            assert host.check_output("id -un") == "nobody"


def test_a_host_on_another_backend_is_refused() -> None:
    with pytest.raises(TypeError, match="does not run its queries through the kit"):
        bridge_of(testinfra.get_host("local://"))


SUITE = '''
import pytest
from harness.suites.conftest import host, kit_host  # noqa: F401 - the fixtures under test
from tests.test_testinfra_bridge import LocalTarget

TARGET = LocalTarget()


@pytest.fixture(scope="session")
def target():
    return TARGET


@pytest.mark.check("demo.reads-the-host", claim="testinfra queries are this check's evidence")
def test_reads(host, check):
    assert host.file("/proc/self/status").contains("^Name:")
    assert not host.file("/nonexistent/kit").exists


def test_without_a_check(host):
    assert host.file("/proc/self/status").exists  # recorded nowhere: no check, no recorder


@pytest.mark.check("demo.after", claim="the next check starts with evidence of its own")
def test_after(host, check):
    host.run("echo after")
    assert len(TARGET.sent) >= 4
'''


def test_host_fixture_records_into_the_running_check(tmp_path: Path) -> None:
    (tmp_path / "test_demo.py").write_text(SUITE)
    out = tmp_path / "checks.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "test_demo.py", "-p", "harness.pytest_plugin",
                           "--checks-out", str(out), "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                           "--rootdir", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    results = {r["id"]: r for r in json.loads(out.read_text())}
    reads = results["demo.reads-the-host"]["evidence"]
    assert [(e["label"], e["status"]) for e in reads] == [
        ("testinfra: file('/proc/self/status').contains", 0), ("testinfra: file('/nonexistent/kit').exists", 1)]
    assert [e["command"] for e in results["demo.after"]["evidence"]] == ["echo after"]


def test_suites_load_their_conftest_as_the_kit_runs_them(tmp_path: Path) -> None:
    """harness/run.py runs each suite with `--rootdir harness/suites -c /dev/null` from the run's own folder:
    the suites' `host` must be harness/suites/conftest.py's, not pytest-testinfra's own fixture."""
    suites = REPO / "harness" / "suites"
    for suite, test in (("test_service.py", "test_unit_enabled"), ("test_mounts.py", "test_stdb_is_data_volume")):
        proc = subprocess.run([sys.executable, "-m", "pytest", str(suites / suite), "--fixtures-per-test", "-q",
                               "-k", test, "-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "--rootdir",
                               str(suites), "-c", os.devnull, "-o", "addopts="], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        used = [line for line in proc.stdout.splitlines() if line.startswith(("host ", "kit_host "))]
        assert len(used) == 2 and all("harness/suites/conftest.py" in line for line in used), proc.stdout[-3000:]


# ---------------------------------------------------------------- lab: a systemd container of the base image


class _Logged:
    """A DockerTarget whose every `run` result is kept (what the container was asked, in order)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.backend = target.backend
        self.name = target.name
        self.hostname = target.hostname
        self.sent: list[CommandResult] = []

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0) -> CommandResult:
        result = self.target.run(command, user=user, timeout=timeout)
        self.sent.append(result)
        return result


@pytest.fixture
def lab_container() -> Any:
    """ONE plain systemd container of the kit's base image, labelled like a run's (so `clean` removes it if
    this test dies) and removed at the end."""
    from harness.lab import runs
    from harness.lab.docker import LABEL_BOOT, LABEL_PID, LABEL_ROLE, LABEL_RUN, LABEL_START, docker
    from harness.lab.docker_target import DockerTarget
    from harness.lab.image import ensure_base_image

    try:
        from harness.backends.docker import SYSTEMD_FLAGS
    except ImportError:  # before the backends split
        from harness.lab.lab import SYSTEMD_FLAGS  # type: ignore[no-redef]

    image = ensure_base_image(progress=lambda _m: None)
    run_id = uuid.uuid4().hex[:8]
    name = f"stdbc-{run_id}-bridge"
    labels = {LABEL_RUN: run_id, LABEL_PID: str(os.getpid()), LABEL_BOOT: runs.host_boot_id(),
              LABEL_START: runs.process_start(os.getpid()), LABEL_ROLE: "bridge-test"}
    docker("run", "-d", "--name", name, "--hostname", "stdb-bridge", *[a for k, v in labels.items()
                                                                        for a in ("--label", f"{k}={v}")],
           *SYSTEMD_FLAGS, image.tag, "/lib/systemd/systemd", timeout=120, what="start the bridge test container")
    try:
        target = DockerTarget(name, "stdb-bridge", "")
        target.wait_running(timeout=90)
        yield target
    finally:
        docker("rm", "-f", "-v", name, check=False, timeout=60)


@pytest.mark.lab
def test_bridge_answers_on_a_lab_container(lab_container: Any) -> None:
    target = _Logged(lab_container)
    evidence = Evidence()
    host = host_for(target, evidence)
    assert host.file("/etc/os-release").contains("Ubuntu")
    assert host.system_info.distribution == "ubuntu"

    ssh = host.service("ssh.socket")
    active = lab_container.run("systemctl is-active ssh.socket").stdout.strip() == "active"
    assert ssh.is_enabled and ssh.is_running == active
    assert not host.service("stdbc-no-such-unit").is_running
    # the service suite judges the word systemd printed; testinfra refuses is-enabled's status 4 (no such unit)
    from harness.suites.test_service import _printed

    assert _printed(host, lambda: ssh.is_enabled) == (True, "enabled")
    assert _printed(host, lambda: host.service("stdbc-no-such-unit").is_enabled) == (False, "not-found")

    ubuntu = host.user("ubuntu")
    assert ubuntu.exists and ubuntu.home == "/home/ubuntu" and ubuntu.shell == "/bin/bash"
    assert "sudo" in ubuntu.groups

    sockets = host.socket.get_listening_sockets()
    assert "unix:///run/systemd/private" in sockets, sockets
    assert ("tcp://0.0.0.0:22" in sockets) == active, sockets  # ssh.socket listens on every address

    root = host.mount_point("/")
    assert root.exists and root.filesystem == "overlay"
    assert host.process.filter(pid=1)[0].user == "root"
    assert host.file("/home/ubuntu").user == "ubuntu"

    # `command -v` probes and sudo-wrapped queries, as root (docker exec -u root) and as ubuntu with sudo
    assert host.exists("systemctl") and host.find_command("ss").endswith("/ss")
    with host.sudo("ubuntu"):
        assert host.check_output("id -un") == "ubuntu"
    as_ubuntu = host_for(target, user="ubuntu")
    assert as_ubuntu.check_output("id -un") == "ubuntu"
    with as_ubuntu.sudo():
        assert as_ubuntu.check_output("id -un") == "root" and as_ubuntu.file("/etc/shadow").mode == 0o640

    # every command the container was asked is either module setup or evidence, with its exit status
    setup = bridge_of(host).setup
    asked = [(r.command, r.exit_status) for r in target.sent if r.user == "root"]
    kept = sorted([(r.command, r.exit_status) for _, r in setup + evidence.items])
    assert sorted(asked) == kept
    statuses = {label: r.exit_status for label, r in evidence.items}
    assert statuses["testinfra: service('stdbc-no-such-unit').is_running"] != 0
    assert "testinfra: file('/etc/os-release').contains" in statuses
    assert "testinfra: socket.get_listening_sockets" in statuses
