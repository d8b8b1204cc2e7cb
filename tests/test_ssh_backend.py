"""The `ssh` backend for hosts that already exist.

Fast tests (no lab): bad input gives one line, refused commands are never sent, the state digest parses and
diffs. Lab tests (`lab`): ONE systemd container from the kit's base image, reached over real ssh, proves one
master connection for many commands and processes, the guard in front of a real host (its digest unchanged),
--allow-mutation, host-key checking (unknown, accept-new, changed) and a login without sudo.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.backends import parse_target
from harness.backends.base import Capability, HostAccess, NotCapable
from harness.backends.ssh import SshBackend, check_host, connect_error, control_path_for, remote_command
from harness.backends.ssh_catalogue import MutationRefused
from harness.backends.ssh_digest import digest_diff, fingerprint, state_digest
from harness.errors import LabError, UsageError
from harness.targets.base import CommandResult

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(tmp_path: Path, url: str = "", **kw: object) -> SshBackend:
    return SshBackend.from_options(url or f"ssh://ubuntu@127.0.0.1:{_closed_port()}", run_dir=tmp_path / "run",
                                   known_hosts=tmp_path / "known_hosts", **kw)  # type: ignore[arg-type]


# =============================================================================================================
# fast
# =============================================================================================================

def test_bad_input_is_one_usage_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as no_user:
        SshBackend.from_options("ssh://db1.example:2222", run_dir=tmp_path)
    assert "names no user" in no_user.value.one_line() and "ssh://USER@db1.example:2222" in no_user.value.one_line()
    with pytest.raises(UsageError) as no_key:
        SshBackend.from_options("ssh://ops@db1", run_dir=tmp_path, identity_file=tmp_path / "missing_key")
    assert "missing_key does not exist" in no_key.value.one_line()
    with pytest.raises(UsageError):
        SshBackend.from_options("ssh://ops@", run_dir=tmp_path)  # parse_target: no host
    with pytest.raises(UsageError):
        SshBackend(parse_target("docker://"), run_dir=tmp_path)
    for error in (no_user.value, no_key.value):
        assert "\n" not in error.one_line() and error.exit_code == 2


@needs_ssh
def test_unreachable_host_says_connection_refused_with_host_and_port(tmp_path: Path) -> None:
    port = _closed_port()
    backend = _backend(tmp_path, f"ssh://ubuntu@127.0.0.1:{port}")
    with pytest.raises(LabError) as error:
        backend.up(None, lambda _: None)
    line = error.value.one_line()
    assert f"127.0.0.1:{port}" in line and "connection refused" in line and "\n" not in line
    assert backend.channel.connections() == 0


@pytest.mark.parametrize(("said", "expected"), [
    ("ssh: connect to host 10.0.0.5 port 22: Connection refused", "connection refused"),
    ("ssh: connect to host 10.0.0.5 port 22: No route to host", "no route to host"),
    ("ssh: connect to host 10.0.0.5 port 22: Connection timed out", "timed out after 10s"),
    ("Connection timed out during banner exchange", "timed out"),
    ("ssh: Could not resolve hostname db1.invalid: Name or service not known", "cannot resolve"),
    ("No ED25519 host key is known for 10.0.0.5 and you have requested strict checking.\r\n"
     "Host key verification failed.", "--accept-new-host-key"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nThe fingerprint for the ED25519 key sent by the "
     "remote host is\nSHA256:abc.\nOffending ED25519 key in /home/o/.ssh/known_hosts:7\n  remove with:\n"
     "Host key for 10.0.0.5 has changed and you have requested strict checking.\nHost key verification failed.",
     "known_hosts line /home/o/.ssh/known_hosts:7"),
    ("ops@10.0.0.5: Permission denied (publickey,password).", "refused the login"),
])
def test_connection_failures_are_classified(said: str, expected: str) -> None:
    error = connect_error(said, host="10.0.0.5", port=22, known_hosts=Path("/home/o/.ssh/known_hosts"),
                          connect_timeout=10, identity_file=None, user="ops")
    line = error.one_line()
    assert expected in line and "\n" not in line
    assert "10.0.0.5" in line


def test_host_check_wants_systemd_and_sudo() -> None:
    check_host("pid1=systemd\nsudo-exit=0\n", where="ops@h:22", user="ops")
    with pytest.raises(LabError, match="PID 1 is 'init', not systemd"):
        check_host("pid1=init\nsudo-exit=0\n", where="ops@h:22", user="ops")
    with pytest.raises(LabError, match="no passwordless sudo .sudo: a password is required"):
        check_host("pid1=systemd\nsudo: a password is required\nsudo-exit=1\n", where="ops@h:22", user="ops")
    with pytest.raises(LabError, match="did not run"):
        check_host("", where="ops@h:22", user="ops", status=127, stderr="bash: not found")


def test_refused_commands_are_never_sent(tmp_path: Path) -> None:
    """Nothing listens on the port: a command that reached ssh would fail with a LabError, not MutationRefused."""
    backend = _backend(tmp_path)
    target = backend.target
    for command in ("systemctl restart nginx", "rm -rf /stdb", "echo x > /etc/fstab", "spacetime publish db"):
        with pytest.raises(MutationRefused) as error:
            target.run(command)
        assert "--allow-mutation" in error.value.one_line() and command.split()[0] in error.value.one_line()
    with pytest.raises(MutationRefused):
        target.write_file("/etc/x", b"x")
    with pytest.raises(MutationRefused):
        target.reboot()
    with pytest.raises(NotCapable):
        backend.reboot()
    entries = backend.channel.entries()
    assert len(entries) == 6 and all(e["refused"] and e["exit_status"] is None for e in entries)
    assert backend.channel.connections() == 0 and not (tmp_path / "run" / "master.log").exists()
    facts = backend.facts()["ssh"]
    assert facts["commands_refused"] == 6 and facts["commands_sent"] == 0 and facts["mutation_allowed"] is False


def test_capabilities_follow_allow_mutation(tmp_path: Path) -> None:
    read_only = _backend(tmp_path)
    assert read_only.has(Capability.COMMANDS) and read_only.has(Capability.FILES)
    assert not read_only.has(Capability.MUTATION) and not read_only.has(Capability.REBOOT)
    assert "--allow-mutation" in read_only.missing(Capability.MUTATION)
    assert "--allow-mutation" in read_only.missing(Capability.REBOOT)
    assert "volume" in read_only.missing(Capability.VOLUME_SNAPSHOT)
    mutating = _backend(tmp_path, allow_mutation=True)
    assert mutating.has(Capability.MUTATION) and mutating.has(Capability.REBOOT)
    assert not mutating.has(Capability.BUILDS_HOST)


def test_state_reattaches_to_the_same_connection(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    access = HostAccess(identity_file=key, known_hosts=tmp_path / "kh", accept_new_host_key=True, allow_mutation=True)
    backend = SshBackend.for_run("r1", parse_target("ssh://ops@db1.example:2222"), access, tmp_path)
    state = json.loads(json.dumps(backend.state()))
    assert state["scheme"] == "ssh"
    again = SshBackend.from_state(state)
    assert again.state() == backend.state()
    assert again.channel.options() == backend.channel.options()
    assert f"ControlPath={tmp_path / 'ssh' / 'cm'}" in backend.channel.options()
    deep = tmp_path / ("d" * 100)
    short = control_path_for(deep)
    assert len(str(short)) <= 88 and short == control_path_for(deep)


def test_remote_command_runs_bash_as_the_user_in_home() -> None:
    assert remote_command("id", user="ops", login_user="ops", timeout=30).startswith("cd ~ 2>/dev/null || cd /; exec "
                                                                                     "timeout -k 5 30 bash -c id")
    as_root = remote_command("id", user="root", login_user="ops", timeout=30)
    assert as_root.startswith("exec sudo -n -H timeout -k 5 30 bash -c ")
    as_other = remote_command("id", user="spacetimedb", login_user="ops", timeout=5.5, env={"A": "b c"})
    assert "sudo -n -u spacetimedb -H timeout -k 5 6 env 'A=b c' bash -c" in as_other


@dataclass
class _FakeTarget:
    """Answers each digest command from `answers` (by the command's first words); every command must be in the
    read-only catalogue, as on an ssh host."""

    answers: dict[str, str]
    name: str = "fake"
    backend: str = "fake"
    hostname: str = "fake"

    def run(self, command: str, **kw: object) -> CommandResult:
        from harness.backends.readonly_script import refusal

        assert refusal(command) is None, (command, refusal(command))
        for prefix, output in self.answers.items():
            if command.startswith(prefix):
                return CommandResult(command, 0, output, "", 0.1)
        return CommandResult(command, 0, "", "", 0.1)


def _meta(path: str, kind: str = "f", mode: str = "0644", size: str = "120", mtime: str = "1700000000.5",
          ctime: str = "1700000000.5", link: str = "") -> str:
    return f"{kind}\t{mode}\troot:root\t{size}\t{mtime}\t{ctime}\0{link}\0{path}\0"


def _digest_answers(conf_sha: str = "a" * 64, data_mtime: str = "1700000000.5", active: str = "active",
                    conf_ctime: str = "1700000000.5") -> dict[str, str]:
    return {
        "find /etc/nginx": _meta("/etc/nginx", "d", "0755", "4096")
        + _meta("/etc/nginx/nginx.conf", ctime=conf_ctime)
        + _meta("/etc/letsencrypt/live/x/cert.pem", "l", "0777", "30", link="../../archive/x/cert1.pem")
        + _meta("/etc/nginx/a\tname\nwith bytes"),
        "sha256sum": f"{conf_sha}  /etc/nginx/nginx.conf\0{'c' * 64}  /etc/nginx/a\tname\nwith bytes\0",
        "find /stdb": _meta("/stdb/data.bin", mtime=data_mtime),
        "systemctl show": f"Id=nginx.service\nLoadState=loaded\nActiveState={active}\nSubState=running\n"
                          "MainPID=10\nNRestarts=0\n\nId=certbot.timer\nLoadState=not-found\nActiveState=inactive\n",
        "systemctl list-unit-files": "nginx.service enabled enabled\n",
        "findmnt": "/stdb /dev/nvme1n1 ext4 rw,relatime\n",
        "iptables": "-P INPUT ACCEPT\n",
        "nft": "table inet x { counter packets 10 bytes 999 }\n",
        "cat /proc/sys/kernel/random/boot_id": "1b2c\n",
    }


def test_state_digest_parses_and_diffs() -> None:
    before = state_digest(_FakeTarget(_digest_answers()))  # type: ignore[arg-type]
    assert before["complete"] and before["boot_id"] == "1b2c", before.get("error")
    assert before["files"]["/etc/nginx/nginx.conf"]["sha256"] == "a" * 64
    assert before["files"]["/etc/nginx/a\tname\nwith bytes"]["sha256"] == "c" * 64  # a tab and a newline: one name
    assert before["files"]["/etc/letsencrypt/live/x/cert.pem"]["link"] == "../../archive/x/cert1.pem"
    assert before["units"]["nginx.service"]["ActiveState"] == "active"
    assert before["units"]["certbot.timer"]["LoadState"] == "not-found"
    assert "the journal and /var/log" in before["left_out"]
    same = state_digest(_FakeTarget(_digest_answers()))  # type: ignore[arg-type]
    assert digest_diff(before, same) == [] and fingerprint(before) == fingerprint(same)
    counted = _digest_answers()
    counted["nft"] = "table inet x { counter packets 99 bytes 12345 }\n"  # traffic moves counters, not rules
    assert digest_diff(before, state_digest(_FakeTarget(counted))) == []  # type: ignore[arg-type]
    after = state_digest(_FakeTarget(_digest_answers("b" * 64, "1700000099.0", "failed")))  # type: ignore[arg-type]
    changes = digest_diff(before, after)
    assert fingerprint(before) != fingerprint(after)
    assert any("/etc/nginx/nginx.conf" in c and "sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb" in c for c in changes)
    assert any(c.startswith("/stdb changed: /stdb/data.bin: mtime") for c in changes), changes
    assert any("unit nginx.service: ActiveState active -> failed" in c for c in changes)
    rewritten = state_digest(_FakeTarget(_digest_answers(conf_ctime="1700000777.0")))  # type: ignore[arg-type]
    assert digest_diff(before, rewritten) == ["file changed: /etc/nginx/nginx.conf: ctime 1700000000.5 -> "
                                              "1700000777.0"]
    silent = _digest_answers()
    del silent["cat /proc/sys/kernel/random/boot_id"]
    cut = state_digest(_FakeTarget(silent))  # type: ignore[arg-type]
    assert not cut["complete"] and any("incomplete" in c and "boot id" in c for c in digest_diff(before, cut))


# =============================================================================================================
# lab: one systemd container from the kit's base image, reached over ssh
# =============================================================================================================

@dataclass
class Host:
    container: str
    ip: str
    key: Path
    known_hosts: Path
    host_key_pub: Path
    workdir: Path

    def backend(self, run_dir: str, user: str = "ubuntu", **kw: object) -> SshBackend:
        options: dict[str, object] = {"known_hosts": self.known_hosts, **kw}
        return SshBackend.from_options(f"ssh://{user}@{self.ip}", run_dir=self.workdir / run_dir,
                                       identity_file=self.key, **options)  # type: ignore[arg-type]

    def exec(self, script: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["docker", "exec", *(["-i"] if stdin is not None else []), self.container, "bash",
                               "-c", script], input=stdin, capture_output=True, timeout=90)


_SETUP = r"""
set -e
key=$(cat)
for u in ubuntu nosudo; do
  id "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
  install -d -m 700 -o "$u" -g "$u" "/home/$u/.ssh"
  printf '%s\n' "$key" > "/home/$u/.ssh/authorized_keys"
  chown "$u:$u" "/home/$u/.ssh/authorized_keys"; chmod 600 "/home/$u/.ssh/authorized_keys"
done
mkdir -p /etc/nginx/conf.d /stdb
printf 'events {}\n' > /etc/nginx/nginx.conf
printf 'data\n' > /stdb/data.bin
systemctl is-active ssh.socket >/dev/null || systemctl start ssh.socket
for i in $(seq 60); do [ -s /etc/ssh/ssh_host_ed25519_key.pub ] && break; sleep 0.5; done
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    from harness.backends.docker import SYSTEMD_FLAGS
    from harness.lab import runs
    from harness.lab.docker import LABEL_BOOT, LABEL_PID, LABEL_ROLE, LABEL_RUN, LABEL_START
    from harness.lab.image import ensure_base_image

    image = ensure_base_image(progress=lambda _: None).tag
    workdir = tmp_path_factory.mktemp("ssh-backend")
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stdbc-ssh-test", "-f", str(key)],
                   check=True, timeout=30)
    token = secrets.token_hex(4)
    name = f"stdbc-sshtest-{token}"
    labels = {LABEL_RUN: f"sshtest-{token}", LABEL_PID: str(os.getpid()), LABEL_BOOT: runs.host_boot_id(),
              LABEL_START: runs.process_start(os.getpid()), LABEL_ROLE: "ssh-backend-test"}
    argv = ["docker", "run", "-d", "--name", name, "--hostname", "stdbc-existing"]
    for label, value in labels.items():
        argv += ["--label", f"{label}={value}"]
    try:
        subprocess.run([*argv, *SYSTEMD_FLAGS, image, "/lib/systemd/systemd"], check=True, capture_output=True,
                       timeout=120)
        ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             name], check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        subprocess.run(["docker", "exec", name, "timeout", "90", "systemctl", "is-system-running", "--wait"],
                       capture_output=True, timeout=120)
        host = Host(name, ip, key, workdir / "known_hosts", workdir / "host_key.pub", workdir)
        setup = host.exec(_SETUP, stdin=key.with_suffix(".pub").read_bytes())
        assert setup.returncode == 0, setup.stderr.decode()
        public = host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.decode().split()
        host.host_key_pub.write_text(" ".join(public[:2]) + "\n")
        host.known_hosts.write_text(f"{ip} {public[0]} {public[1]}\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection((ip, 22), timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        yield host
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)


_REATTACH = """
import json, sys
from harness.backends import backend_from_state
backend = backend_from_state(json.loads(sys.argv[1]))
print(json.dumps([backend.target.run(c).stdout.strip() for c in ("uname -n", "id -un", "stat -c %s /stdb/data.bin")]))
"""


@pytest.mark.lab
def test_read_only_commands_share_one_master_connection(host: Host) -> None:
    backend = host.backend("one-master")
    messages: list[str] = []
    try:
        backend.up(None, messages.append)
        assert "sudo -n works" in messages[0] and "read-only" in messages[0]
        target = backend.target
        for user in ("root", "ubuntu", "nobody"):
            result = target.run("id -un", user=user)
            assert result.ok and result.stdout.split()[0] == user, result
        assert target.run("cat /etc/nginx/nope", user="root").exit_status == 1
        with pytest.raises(MutationRefused):  # input to a command is for --allow-mutation only
            target.run("cat /etc/fstab", stdin=b"through stdin")
        for _ in range(15):
            assert target.run("systemctl is-active ssh.service; uname -r").ok
        assert target.read_file("/etc/nginx/nginx.conf") == b"events {}\n"
        with pytest.raises(FileNotFoundError):
            target.read_file("/etc/nginx/nope")
        assert len(target.boot_id()) == 36
        # another process of the run (the suites' pytest processes) re-attaches to the same master
        proc = subprocess.run([sys.executable, "-c", _REATTACH, json.dumps(backend.state())], capture_output=True,
                              text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == ["stdbc-existing", "root", "5"]
        assert backend.channel.connections() == 1
        facts = backend.facts()["ssh"]
        assert facts["ssh_connections"] == 1 and facts["commands_refused"] == 1  # the one with input
        assert facts["commands_sent"] == len(backend.channel.entries()) - 1 >= 24
        assert facts["host_key_accepted_new"] is False and facts["host_key_fingerprints"][0].startswith("SHA256:")
        exported = backend.export_transcript(host.workdir / "report")
        assert exported["ssh_connections"] == 1
        assert (host.workdir / "report" / exported["file"]).read_text().count("\n") == facts["commands_sent"] + 1
    finally:
        backend.down()
    assert not backend.channel.master_alive()


@pytest.mark.lab
def test_the_guard_refuses_and_never_sends_and_the_host_is_unchanged(host: Host) -> None:
    backend = host.backend("guard")
    try:
        backend.up(None, lambda _: None)
        target = backend.target
        before = state_digest(target)
        assert before["complete"] and before["files"]["/etc/nginx/nginx.conf"]["sha256"]
        assert "/stdb/data.bin" in before["stdb"]["entries"]
        assert before["units"]["ssh.service"]["ActiveState"] == "active"
        mutations = ["touch /etc/systemd/system/stdbc-marker", "systemctl stop ssh.service",
                     "echo x > /etc/nginx/nginx.conf", "rm -f /stdb/data.bin",
                     "sed -i s/events/x/ /etc/nginx/nginx.conf",
                     "kill -9 1", "python3 -c 'open(\"/stdb/x\", \"w\")'"]
        for command in mutations:
            with pytest.raises(MutationRefused):
                target.run(command)
        with pytest.raises(MutationRefused):
            target.write_file("/etc/nginx/conf.d/stdbc.conf", b"server {}\n")
        after = state_digest(target)
        assert digest_diff(before, after) == [] and fingerprint(before) == fingerprint(after)
        refused = [e for e in backend.channel.entries() if e["refused"]]
        assert [e["command"] for e in refused][:len(mutations)] == mutations and len(refused) == len(mutations) + 1
        assert backend.channel.connections() == 1
        seen = host.exec("test -e /etc/systemd/system/stdbc-marker && echo yes; cat /stdb/data.bin")
        assert seen.stdout.decode() == "data\n"
    finally:
        backend.down()


@pytest.mark.lab
def test_allow_mutation_lets_changes_through(host: Host) -> None:
    backend = host.backend("mutation", allow_mutation=True)
    try:
        backend.up(None, lambda _: None)
        assert backend.has(Capability.MUTATION) and backend.has(Capability.REBOOT)
        target = backend.target
        before = state_digest(target)
        assert target.run("touch /etc/systemd/system/stdbc-marker").ok
        target.write_file("/etc/nginx/conf.d/stdbc.conf", b"server {}\n", mode=0o600)
        after = state_digest(target)
        changes = digest_diff(before, after)
        assert any("file added: /etc/systemd/system/stdbc-marker" in c for c in changes), changes
        assert any("file added: /etc/nginx/conf.d/stdbc.conf (f, 0600 root:root)" in c for c in changes), changes
        assert target.read_file("/etc/nginx/conf.d/stdbc.conf") == b"server {}\n"
        assert not any(e["refused"] for e in backend.channel.entries())
        target.run("rm -f /etc/systemd/system/stdbc-marker /etc/nginx/conf.d/stdbc.conf")
    finally:
        backend.down()


@pytest.mark.lab
def test_host_keys_unknown_refused_accept_new_trusted_changed_named(host: Host) -> None:
    empty = host.workdir / "empty_known_hosts"
    empty.write_text("")
    strict = host.backend("unknown-key", known_hosts=empty)
    with pytest.raises(LabError) as unknown:
        strict.up(None, lambda _: None)
    line = unknown.value.one_line()
    assert f"{host.ip}:22 is not in {empty}" in line and "--accept-new-host-key" in line
    assert strict.channel.connections() == 0 and empty.read_text() == ""

    fresh = host.workdir / "fresh" / "known_hosts"
    fresh.parent.mkdir()
    trusting = host.backend("accept-new", known_hosts=fresh, accept_new_host_key=True)
    try:
        trusting.up(None, lambda _: None)
        facts = trusting.facts()["ssh"]
    finally:
        trusting.down()
    expected = subprocess.run(["ssh-keygen", "-l", "-f", str(host.host_key_pub)], capture_output=True, text=True,
                              timeout=30).stdout.split()[1]
    assert facts["host_key_accepted_new"] is True and facts["host_key_fingerprints"] == [f"{expected} (ED25519)"]
    again = host.backend("accept-new-again", known_hosts=fresh, accept_new_host_key=True)
    try:
        again.up(None, lambda _: None)
        assert again.facts()["ssh"]["host_key_accepted_new"] is False  # known by now: nothing new trusted
    finally:
        again.down()

    other = host.workdir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    wrong = host.workdir / "wrong_known_hosts"
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"# the host as it was\n{host.ip} {kind} {blob}\n")
    for accept_new in (False, True):  # accept-new never trusts a CHANGED key
        changed = host.backend(f"changed-{accept_new}", known_hosts=wrong, accept_new_host_key=accept_new)
        with pytest.raises(LabError) as error:
            changed.up(None, lambda _: None)
        assert "CHANGED" in error.value.one_line() and f"known_hosts line {wrong}:2" in error.value.one_line()


@pytest.mark.lab
def test_a_login_without_sudo_is_one_line(host: Host) -> None:
    backend = host.backend("no-sudo", user="nosudo")
    try:
        with pytest.raises(LabError) as error:
            backend.up(None, lambda _: None)
        line = error.value.one_line()
        assert "nosudo has no passwordless sudo" in line and "a password is required" in line and "\n" not in line
        refused = backend.target.run("cat /etc/fstab", user="root")  # sudo's refusal: a failed command
        assert not refused.ok and "sudo: a password is required" in refused.stderr
        assert backend.target.run("id -un", user="nosudo").stdout.strip() == "nosudo"
    finally:
        backend.down()


@pytest.mark.lab
def test_the_digest_reads_the_same_through_docker_exec(host: Host) -> None:
    """state_digest only uses target.run: the docker target of the same host gives the same digest."""
    from harness.lab.docker_target import DockerTarget

    backend = host.backend("digest")
    try:
        backend.up(None, lambda _: None)
        over_ssh = state_digest(backend.target)
    finally:
        backend.down()
    over_docker = state_digest(DockerTarget(host.container, "stdbc-existing", host.ip))
    assert digest_diff(over_ssh, over_docker) == []


@pytest.mark.lab
def test_testinfra_queries_pass_the_guard(host: Host) -> None:
    """The suites query through testinfra (harness.targets.testinfra_bridge): its commands are read-only."""
    backend = host.backend("testinfra")
    try:
        backend.up(None, lambda _: None)
        infra = backend.target.testinfra_host()
        conf = infra.file("/etc/nginx/nginx.conf")
        assert conf.exists and conf.is_file and conf.user == "root" and conf.mode == 0o644
        assert conf.content_string == "events {}\n"
        assert infra.file("/stdb").is_directory
        assert infra.service("ssh").is_running
        assert infra.package("openssh-server").is_installed
        assert infra.user("ubuntu").exists and infra.group("sudo").exists
        assert infra.socket("tcp://22").is_listening
        assert infra.mount_point("/").exists
        assert infra.run("uname -r").rc == 0
        refused = [e for e in backend.channel.entries() if e["refused"]]
        assert not refused, refused
    finally:
        backend.down()


def test_the_gate_tests_itself_and_a_gate_that_lets_a_write_through_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 item 7: before anything else on a read-only host, writes and secret reads must be refused."""
    from harness.backends import readonly_script
    from harness.backends import ssh as ssh_module

    backend = _backend(tmp_path)
    for probe in ssh_module.GATE_PROBES:
        assert readonly_script.refusal(probe.format(marker="/tmp/stdbc-gate-probe-x")), probe
    backend.gate_self_test()  # the real gate refuses every probe: nothing raised, nothing sent
    monkeypatch.setattr(readonly_script, "refusal", lambda command: None if command.startswith("touch ") else "no")
    with pytest.raises(LabError, match="let `touch /tmp/stdbc-gate-probe-"):
        backend.gate_self_test()


# each kind of change an operator means by "the host changed", made by hand (docker exec) between two digests
# taken over ssh, and the words the digest's difference must contain; the undo puts the host back
CHANGES = [
    ("a user added", "useradd stdbc-digest-x", "userdel stdbc-digest-x", ["file changed: /etc/passwd",
                                                                          "file changed: /etc/shadow"]),
    ("a password hash", "cp -p /etc/shadow /tmp/shadow.bak && usermod -p '$6$x$y' ubuntu",
     "cp -p /tmp/shadow.bak /etc/shadow", ["file changed: /etc/shadow"]),
    ("a group added", "groupadd stdbc-digest-g", "groupdel stdbc-digest-g", ["file changed: /etc/group"]),
    ("a sudoers drop-in", "echo 'nobody ALL=(root) NOPASSWD: /usr/bin/true' > /etc/sudoers.d/stdbc-x && "
     "chmod 440 /etc/sudoers.d/stdbc-x",
     "rm /etc/sudoers.d/stdbc-x", ["file added: /etc/sudoers.d/stdbc-x"]),
    ("an authorized key", "cp -p /home/ubuntu/.ssh/authorized_keys /tmp/ak && echo '# x' >> "
     "/home/ubuntu/.ssh/authorized_keys", "cp -p /tmp/ak /home/ubuntu/.ssh/authorized_keys",
     ["file changed: /home/ubuntu/.ssh/authorized_keys"]),
    ("a crontab", "echo '* * * * * root true' > /etc/cron.d/stdbc-x", "rm /etc/cron.d/stdbc-x",
     ["file added: /etc/cron.d/stdbc-x"]),
    ("a timer enabled", "printf '[Timer]\\nOnCalendar=daily\\n[Install]\\nWantedBy=timers.target\\n' > "
     "/etc/systemd/system/stdbc-x.timer && printf '[Service]\\nExecStart=/bin/true\\n' > "
     "/etc/systemd/system/stdbc-x.service && systemctl daemon-reload && systemctl enable stdbc-x.timer",
     "systemctl disable stdbc-x.timer; rm /etc/systemd/system/stdbc-x.*; systemctl daemon-reload",
     ["file added: /etc/systemd/system/stdbc-x.timer", "unit file new: stdbc-x.timer"]),
    ("sshd's configuration", "cp -p /etc/ssh/sshd_config /tmp/sshd && echo '# x' >> /etc/ssh/sshd_config",
     "cp -p /tmp/sshd /etc/ssh/sshd_config", ["file changed: /etc/ssh/sshd_config"]),
    ("ufw's configuration", "cp -p /etc/default/ufw /tmp/ufw && echo '# x' >> /etc/default/ufw",
     "cp -p /tmp/ufw /etc/default/ufw", ["file changed: /etc/default/ufw"]),
    ("a live packet-filter rule", "iptables -A INPUT -s 192.0.2.1 -j DROP", "iptables -D INPUT -s 192.0.2.1 -j DROP",
     ["the live packet filter's rules changed"]),
    ("a program added", "cp /usr/bin/true /usr/local/bin/stdbc-x", "rm /usr/local/bin/stdbc-x",
     ["file added: /usr/local/bin/stdbc-x"]),
    ("a program replaced in place", "chmod 755 /usr/bin/xargs", "true", ["program changed: /usr/bin/xargs: ctime"]),
    ("a mount", "mkdir -p /mnt/stdbc-x && mount -t tmpfs tmpfs /mnt/stdbc-x", "umount /mnt/stdbc-x",
     ["mount new: /mnt/stdbc-x tmpfs tmpfs"]),
    ("data under /stdb", "cp -p /stdb/data.bin /tmp/data && echo more >> /stdb/data.bin",
     "cp -p /tmp/data /stdb/data.bin", ["/stdb changed: /stdb/data.bin"]),
    ("a rewrite with its mtime put back", "cp -p /etc/nginx/nginx.conf /tmp/n && cat /tmp/n > /etc/nginx/nginx.conf "
     "&& touch -r /tmp/n /etc/nginx/nginx.conf", "true", ["file changed: /etc/nginx/nginx.conf: ctime"]),
    ("a name with a tab", "touch $'/etc/nginx/a\\tb'", "rm $'/etc/nginx/a\\tb'", ["file added: /etc/nginx/a\\tb"]),
]


@pytest.mark.lab
def test_each_kind_of_change_is_named_by_the_digest(host: Host) -> None:
    """Issue 27: every kind of change an operator means, made by hand between two digests, is named."""
    backend = host.backend("digest-changes")
    try:
        backend.up(None, lambda _: None)
        missed = {}
        for name, change, undo, expected in CHANGES:
            before = state_digest(backend.target)
            done = host.exec(change)
            assert done.returncode == 0, (name, done.stderr)
            try:
                changes = digest_diff(before, state_digest(backend.target))
            finally:
                host.exec(undo)
            lacking = [words for words in expected if not any(words in line for line in changes)]
            if lacking:
                missed[name] = (lacking, changes[:6])
        assert not missed, missed
        assert not any(e["refused"] for e in backend.channel.entries())
    finally:
        backend.down()


def _logins_accepted(host: Host) -> int:
    """Connections the host's sshd accepted, counted from its own journal (the kit's client cannot lie)."""
    out = host.exec("journalctl -q -o cat | grep -c 'Accepted publickey for ubuntu' || true").stdout.decode()
    return int(out.strip() or "0")


@pytest.mark.lab
def test_the_vm_endpoint_carries_many_commands_over_one_master_and_survives_its_death(host: Host,
                                                                                    tmp_path: Path) -> None:
    """The vm backend's ssh plumbing (harness/vm/ssh.py) against a real sshd: one master connection for many
    commands; commands still run when the master is gone (ended, or killed with a stale socket left)."""
    from harness.vm.resources import VmRecord, release
    from harness.vm.ssh import SshEndpoint, ssh_run

    shutil.copy(host.key, tmp_path / "key")
    (tmp_path / "key").chmod(0o600)
    endpoint = SshEndpoint(host=host.ip, port=22, user="ubuntu", key=tmp_path / "key",
                           control_path=tmp_path / "ssh.ctl")
    before = _logins_accepted(host)
    try:
        assert endpoint.start_master() and endpoint.master_alive()
        for i in range(8):
            status, out, err, timed_out = ssh_run(endpoint, f"echo {i}; id -un", timeout=60)
            assert (status, out.decode().split(), timed_out) == (0, [str(i), "ubuntu"], False), err
        assert _logins_accepted(host) == before + 1  # the master, and nothing else
        check = subprocess.run(["ssh", *endpoint.mux_options("no"), "-O", "check", "ubuntu@" + host.ip],
                               capture_output=True, text=True, timeout=10)
        master_pid = int(check.stderr.split("pid=")[1].split(")")[0])
        os.kill(master_pid, 9)  # the master dies as with its guest: the socket file stays behind
        deadline = time.monotonic() + 10
        while Path(f"/proc/{master_pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "ssh.ctl").exists() and not endpoint.master_alive()
        status, out, err, _ = ssh_run(endpoint, "id -un", timeout=60)
        assert status == 0 and out.decode().strip() == "ubuntu", err
        assert _logins_accepted(host) == before + 2  # that one connected by itself
        assert endpoint.start_master()  # the stale socket is replaced
        endpoint.stop_master()
        assert not endpoint.master_alive() and not (tmp_path / "ssh.ctl").exists()
        status, out, err, _ = ssh_run(endpoint, "id -un", timeout=60)
        assert status == 0 and out.decode().strip() == "ubuntu", err
        # releasing the VM's resources (teardown, `clean` of a dead run) ends its master too
        assert endpoint.start_master()
        removed = release(VmRecord(run_id="sshtest", name="target", workdir=str(tmp_path)))
        assert f"ssh master {tmp_path / 'ssh.ctl'}" in removed and not endpoint.master_alive()
    finally:
        endpoint.stop_master()
