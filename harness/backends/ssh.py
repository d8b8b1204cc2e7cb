"""Backend `ssh://user@host[:port]`: a host that already exists. Nothing is built or applied; it is only judged.

Everything goes through ONE OpenSSH master connection (ControlMaster, its socket in the run's folder), opened by
`up()` and re-used by every command of every process of the run: the suites' pytest processes re-attach with
`from_state()` and their commands ride the same connection. The host key is verified (StrictHostKeyChecking=yes;
`accept-new` only with --accept-new-host-key, and then the report says a first key was trusted, with its
fingerprint). Commands run as the login user, or as root / another user through `sudo -n` (never a password
prompt), each starting in that user's HOME like the lab targets.

Read-only by default, by construction: without --allow-mutation the host is sent only argvs that match the
read-only catalogue (harness/backends/ssh_catalogue.py), each quoted word by word (no `bash -c`, no pipes or
redirections on the host); a check's command text is split by harness/backends/readonly_script.py into such
argvs plus text processing done here. A command outside the catalogue is not sent, is written to the transcript
with refused=true and raises MutationRefused. Every command sent is appended to the transcript with its user
and environment (one JSON line each, safe across processes), and the number of master connections opened is
counted, so the report shows exactly what the kit did to someone's server.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.backends import TargetUrl, parse_target, readonly_script
from harness.backends.base import Capability, HostAccess, Progress, TargetBackend
from harness.backends.ssh_catalogue import MutationRefused, env_refusal, match
from harness.errors import LabError, UsageError
from harness.targets.base import CommandResult

if TYPE_CHECKING:
    from collections.abc import Iterator

    from harness.lab.services import LabServices

CONNECT_TIMEOUT = 10.0
CONTROL_PERSIST = 600  # seconds the master stays up with no command; `down()` closes it at the end of the run
SSH_SLACK = 20.0  # beyond a command's own bound (enforced on the host with `timeout`), for ssh itself
MAX_SOCKET_PATH = 88  # sun_path is 108 bytes and ssh appends ".XXXXXXXXXXXXXXXX" while it creates the socket
TRANSCRIPT = "transcript.jsonl"
COUNTER = "connections"
SUDO_DENIED = re.compile(r"^sudo: (a password is required|a terminal is required.*|.*is not in the sudoers file.*|"
                         r"sorry, user .* may not run sudo.*|.*is not allowed to execute.*)", re.MULTILINE)


def control_path_for(run_dir: Path) -> Path:
    """The master's socket: in the run folder when that path is short enough, else in a short private /tmp folder
    named after the run folder (the same in every process of the run)."""
    candidate = run_dir / "cm"
    if len(str(candidate)) <= MAX_SOCKET_PATH:
        return candidate
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"stdbc-ssh-{digest}" / "cm"


def remote_command(command: str, *, user: str, login_user: str, timeout: float,
                   env: dict[str, str] | None = None) -> str:
    """What ssh hands to the login shell: `command` through `bash -c` as `user` in that user's HOME, bounded on
    the host by `timeout` (a killed ssh client alone would leave the command running there)."""
    bound = f"timeout -k 5 {max(1, math.ceil(timeout))} "
    env_prefix = ("env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " ") if env else ""
    if user == login_user:
        return f"cd ~ 2>/dev/null || cd /; exec {bound}{env_prefix}bash -c {shlex.quote(command)}"
    sudo = "sudo -n -H" if user == "root" else f"sudo -n -u {shlex.quote(user)} -H"
    start_home = shlex.quote('cd ~ 2>/dev/null || cd /; exec bash -c "$0"')
    return f"exec {sudo} {bound}{env_prefix}bash -c {start_home} {shlex.quote(command)}"


def remote_argv(argv: list[str], *, user: str, login_user: str, timeout: float,
                env: dict[str, str] | None = None) -> str:
    """What ssh hands to the login shell for one catalogue command: its words, each quoted, bounded on the host by
    `timeout`, as `user` through `sudo -n -u USER --` (so a sudoers rule can name the exact command)."""
    words = ["timeout", "-k", "5", str(max(1, math.ceil(timeout)))]
    if user != login_user:
        words += ["sudo", "-n", "-u", user, "--"]
    if env:
        words += ["env", *(f"{k}={v}" for k, v in env.items())]
    return "exec " + shlex.join([*words, *argv])


def connect_error(said: str, *, host: str, port: int, known_hosts: Path, connect_timeout: float,
                  identity_file: Path | None, user: str) -> LabError:
    """ssh's own words for a failed connection, as one line that says what is wrong and what to do."""
    where = f"{host}:{port}"
    text = said.replace("\r", "")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested strict" in text:
        offending = re.search(r"Offending (\S+) key in (\S+?):(\d+)", text)
        line = f"{offending.group(2)}:{offending.group(3)}" if offending else str(known_hosts)
        sent = re.search(r"key sent by the remote host is\s+(SHA256:\S+?)\.?\s*$", text, re.MULTILINE)
        return LabError(f"the host key of {where} has CHANGED: it does not match known_hosts line {line}"
                        + (f" (the host sent {sent.group(1)})" if sent else ""),
                        hint=f"if the host was rebuilt, check the new key and remove that line "
                             f"(ssh-keygen -f {known_hosts} -R {_key_pattern(host, port)}); else do not connect")
    if "host key is known for" in text or "Host key verification failed" in text:
        return LabError(f"the host key of {where} is not in {known_hosts}",
                        hint="add it to known_hosts (ssh-keyscan, after checking the fingerprint) or pass "
                             "--accept-new-host-key to trust the first key (the report says so)")
    if "Connection refused" in text:
        return LabError(f"cannot reach {where}: connection refused (nothing listens there: is sshd running, "
                        "is the port right?)")
    if "No route to host" in text:
        return LabError(f"cannot reach {where}: no route to host (check the address and the network)")
    if "timed out" in text.lower():
        return LabError(f"cannot reach {where}: the connection timed out after {connect_timeout:.0f}s (a firewall "
                        "dropping packets, or the host is down)")
    if "Could not resolve hostname" in text:
        return LabError(f"cannot resolve the host name {host!r}", hint="check the target URL")
    if "Network is unreachable" in text:
        return LabError(f"cannot reach {where}: the network is unreachable")
    if "Permission denied" in text or "Too many authentication failures" in text:
        key = f"the key {identity_file}" if identity_file else "your ssh keys / agent"
        return LabError(f"{user}@{where} refused the login ({_last_line(text)})",
                        hint=f"check that {key} is in ~{user}/.ssh/authorized_keys on the host (--identity-file)")
    return LabError(f"ssh to {user}@{where} failed: {_last_line(text) or 'no message'}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _key_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SshChannel:
    """The ssh command line for one host, its master connection, the transcript and the connection counter.

    Plain data plus files in `run_dir`, so any process of the run can rebuild it and share the master."""

    def __init__(self, url: TargetUrl, *, run_dir: Path, identity_file: Path | None, known_hosts: Path,
                 accept_new_host_key: bool, allow_mutation: bool, connect_timeout: float = CONNECT_TIMEOUT,
                 control_persist: int = CONTROL_PERSIST) -> None:
        self.url = url
        self.user = url.user
        self.host = url.host
        self.port = url.port or 22
        self.run_dir = run_dir
        self.identity_file = identity_file
        self.known_hosts = known_hosts
        self.accept_new_host_key = accept_new_host_key
        self.allow_mutation = allow_mutation
        self.connect_timeout = connect_timeout
        self.control_persist = control_persist
        self.control_path = control_path_for(run_dir)

    @property
    def destination(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def transcript_path(self) -> Path:
        return self.run_dir / TRANSCRIPT

    # ---- files --------------------------------------------------------------------------------------------
    def prepare_dirs(self) -> None:
        for folder in {self.run_dir, self.control_path.parent}:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                info = folder.stat()
            except OSError as exc:
                raise LabError(f"cannot create the ssh run folder {folder}: {exc.strerror}") from None
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise LabError(f"the ssh control folder {folder} is not private to this user",
                               hint=f"remove it (rm -rf {folder}) and run again")

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        self.prepare_dirs()
        with open(self.run_dir / name, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, entry: dict[str, Any]) -> None:
        """Append one JSON line to the transcript (under a lock: whole lines, also from parallel processes)."""
        line = (json.dumps({"time": _now(), "host": self.host, **entry}, ensure_ascii=False) + "\n").encode()
        with self._locked("transcript.lock"):
            fd = os.open(self.transcript_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.transcript_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def connections(self) -> int:
        try:
            return int((self.run_dir / COUNTER).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _count_connection(self) -> None:
        counter = self.run_dir / COUNTER
        counter.write_text(f"{self.connections() + 1}\n")

    # ---- ssh ----------------------------------------------------------------------------------------------
    def options(self, *, master: str = "auto") -> list[str]:
        strict = "accept-new" if self.accept_new_host_key else "yes"
        options = ["-p", str(self.port), "-o", "BatchMode=yes",
                   "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
                   "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
                   "-o", f"StrictHostKeyChecking={strict}",
                   "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
                   "-o", f"ControlMaster={master}", "-o", f"ControlPath={self.control_path}",
                   "-o", f"ControlPersist={self.control_persist}"]
        if self.identity_file is not None:
            options += ["-i", str(self.identity_file), "-o", "IdentitiesOnly=yes"]
        return options

    def master_alive(self) -> bool:
        """A live master accepts on its socket; a stale socket file (the master died) refuses."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(self.control_path))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def ensure_master(self) -> bool:
        """Open the master connection unless one is up (one opener at a time across processes). True if it opened
        one now. A failure is one LabError line saying why (unreachable, host key, login)."""
        if self.master_alive():
            return False
        with self._locked("master.lock"):
            if self.master_alive():
                return False
            self.control_path.unlink(missing_ok=True)  # a stale socket would make the new master give up on it
            log = self.run_dir / "master.log"
            offset = log.stat().st_size if log.exists() else 0
            argv = ["ssh", *self.options(master="yes"), "-N", "-f", self.destination]
            try:
                # stderr to a file, not a pipe: the backgrounded master keeps it open for as long as it lives
                with open(log, "ab") as err:
                    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                          timeout=self.connect_timeout + 30)
            except FileNotFoundError:
                raise LabError("the OpenSSH client is not installed", hint="apt-get install openssh-client") from None
            except subprocess.TimeoutExpired:
                raise LabError(f"ssh to {self.where}: no login within {self.connect_timeout + 30:.0f}s") from None
            said = log.read_bytes()[offset:].decode(errors="replace")
            if proc.returncode != 0 or not self.master_alive():
                raise connect_error(said or f"exit {proc.returncode}", host=self.host, port=self.port,
                                    known_hosts=self.known_hosts, connect_timeout=self.connect_timeout,
                                    identity_file=self.identity_file, user=self.user)
            self._count_connection()
            return True

    def execute(self, remote: str, *, timeout: float, stdin: bytes | None = None) -> tuple[int, bytes, bytes, bool]:
        """Run one remote command line over the master: (exit status, stdout, stderr, timed out); 255 = ssh."""
        self.ensure_master()
        argv = ["ssh", *self.options(), "-T", self.destination, "--", remote]
        try:
            proc = subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise LabError("the OpenSSH client is not installed", hint="apt-get install openssh-client") from None
        except subprocess.TimeoutExpired as exc:
            return 124, exc.stdout or b"", exc.stderr or b"", True
        return proc.returncode, proc.stdout, proc.stderr, False

    def exit_master(self) -> None:
        if not self.control_path.exists():
            return
        try:
            subprocess.run(["ssh", "-o", f"ControlPath={self.control_path}", "-O", "exit", self.destination],
                           capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass

    # ---- host keys ----------------------------------------------------------------------------------------
    def known_fingerprints(self) -> list[str]:
        """Fingerprints known_hosts holds for this host ("SHA256:... (ED25519)")."""
        if not self.known_hosts.exists():
            return []
        try:
            proc = subprocess.run(["ssh-keygen", "-l", "-F", _key_pattern(self.host, self.port), "-f",
                                   str(self.known_hosts)], capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return []
        found = []
        for line in proc.stdout.splitlines():
            parts = line.split()
            if line.startswith("#") or len(parts) < 3:
                continue
            found.append(f"{parts[2]} ({parts[1]})")
        return found


class SshTarget:
    """The Target protocol over an SshChannel, with the read-only guard in front of everything it sends."""

    backend = "ssh"

    def __init__(self, channel: SshChannel) -> None:
        self.channel = channel
        self.name = channel.host
        self.hostname = channel.host

    # ---- guard and transcript -----------------------------------------------------------------------------
    def _refuse(self, command: str, user: str, reason: str) -> MutationRefused:
        self.channel.record({"user": user, "command": command, "exit_status": None, "duration": 0.0,
                             "timed_out": False, "refused": True, "reason": reason})
        return MutationRefused(command, reason, host=self.channel.host)

    @property
    def runs_shell_text(self) -> bool:
        """Whether a command text reaches a shell on the host (only with --allow-mutation; read-only, it is split
        into catalogue commands)."""
        return self.channel.allow_mutation

    def refusal(self, command: str, env: dict[str, str] | None = None) -> str | None:
        """Why the gate refuses `command` on this connection (None: it may be sent)."""
        if self.channel.allow_mutation:
            return None
        return readonly_script.refusal(command) or env_refusal(env)

    def _guard(self, command: str, user: str, env: dict[str, str] | None = None) -> None:
        reason = self.refusal(command, env)
        if reason:
            raise self._refuse(command, user, reason)

    def _send(self, command: str, *, user: str, timeout: float, stdin: bytes | None = None,
              env: dict[str, str] | None = None, purpose: str = "") -> tuple[int, bytes, bytes, bool, float]:
        """A shell command line, through `bash -c` on the host: only with --allow-mutation."""
        if not self.channel.allow_mutation:
            raise self._refuse(command, user, "a shell command line is sent only with --allow-mutation")
        remote = remote_command(command, user=user, login_user=self.channel.user, timeout=timeout, env=env)
        sent = self._execute(remote, {"command": command}, user=user, timeout=timeout, stdin=stdin, env=env,
                             purpose=purpose)
        self._sudo_refused(command, user, sent[0], sent[2])
        return sent

    def send_argv(self, argv: list[str], *, user: str, timeout: float, env: dict[str, str] | None = None,
                  text: str = "") -> tuple[int, bytes, bytes, bool, float]:
        """One catalogue command, sent as its quoted words (the gate checks it here, at the point of sending)."""
        found = match(argv)
        reason = found if isinstance(found, str) else env_refusal(env)
        if reason and not self.channel.allow_mutation:
            raise self._refuse(shlex.join(argv), user, reason)
        remote = remote_argv(argv, user=user, login_user=self.channel.user, timeout=timeout, env=env)
        entry: dict[str, Any] = {"command": shlex.join(argv), "argv": argv}
        if not isinstance(found, str):
            entry["entry"] = found.name
        if text and text != entry["command"]:
            entry["text"] = text
        return self._execute(remote, entry, user=user, timeout=timeout, env=env)

    def _execute(self, remote: str, entry: dict[str, Any], *, user: str, timeout: float, stdin: bytes | None = None,
                 env: dict[str, str] | None = None, purpose: str = "") -> tuple[int, bytes, bytes, bool, float]:
        started = time.monotonic()
        status, out, err, timed_out = self.channel.execute(remote, timeout=timeout + SSH_SLACK, stdin=stdin)
        duration = time.monotonic() - started
        timed_out = timed_out or (status == 124 and duration >= timeout - 1)
        entry = {"user": user, **entry, "env": dict(env or {}), "exit_status": status, "duration": round(duration, 3),
                 "timed_out": timed_out, "refused": False}
        if purpose:
            entry["purpose"] = purpose
        self.channel.record(entry)
        return status, out, err, timed_out, duration

    def _sudo_refused(self, command: str, user: str, status: int, err: bytes) -> None:
        """A shell line sudo would not run as `user` (--allow-mutation): one LabError line that says why. (A
        catalogue command sudo refuses is an ordinary failed command: the host's sudoers may allow only part of
        the catalogue, and the connect check has already said whether sudo works at all.)"""
        if status == 1 and user != self.channel.user:
            denied = SUDO_DENIED.search(err.decode(errors="replace"))
            if denied:
                shown = " ".join(command.split())
                raise LabError(f"{self.channel.where}: sudo refused to run `{shown[:120]}` as {user} "
                               f"({denied.group(0)})",
                               hint=f"give {self.channel.user} passwordless sudo (NOPASSWD), or connect as a user "
                                    "that has it")

    # ---- Target protocol ----------------------------------------------------------------------------------
    def run(self, command: str, *, user: str = "root", timeout: float = 600.0,
            stdin: bytes | None = None, env: dict[str, str] | None = None) -> CommandResult:
        self._guard(command, user, env)
        if self.channel.allow_mutation:
            status, out, err, timed_out, duration = self._send(command, user=user, timeout=timeout, stdin=stdin,
                                                               env=env)
            return CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                                 stderr=err.decode(errors="replace"), duration=duration, user=user,
                                 host=self.hostname, timed_out=timed_out)
        if stdin:
            raise self._refuse(command, user, "input to a command is sent only with --allow-mutation")
        started = time.monotonic()

        def send(argv: list[str], who: str, bound: float) -> tuple[int, str, str, bool]:
            status, out, err, timed_out, _ = self.send_argv(argv, user=who, timeout=bound, env=env, text=command)
            return status, out.decode(errors="replace"), err.decode(errors="replace"), timed_out

        done = readonly_script.run(command, send, user=user, timeout=timeout)
        return CommandResult(command=command, exit_status=done.status, stdout=done.out, stderr=done.err,
                             duration=time.monotonic() - started, user=user, host=self.hostname,
                             timed_out=done.timed_out)

    def read_file(self, path: str) -> bytes:
        status, out, err, timed_out, _ = self.send_argv(["cat", "--", path], user="root", timeout=120)
        if status != 0 or timed_out:
            message = err.decode(errors="replace").strip()
            if "No such file" in message:
                raise FileNotFoundError(path)
            raise LabError(f"{self.name}: cannot read {path}: {message or 'timed out'}")
        return out

    def write_file(self, path: str, content: bytes, *, mode: int = 0o644, owner: str = "root") -> None:
        command = (f'set -e; t=$(mktemp); trap \'rm -f "$t"\' EXIT; cat > "$t"; '
                   f'install -D -m {mode:04o} -o {shlex.quote(owner)} -g "$(id -gn {shlex.quote(owner)})" '
                   f'"$t" {shlex.quote(path)}')
        if not self.channel.allow_mutation:
            raise self._refuse(command, "root", f"writing {path} changes the host")
        status, _, err, timed_out, _ = self._send(command, user="root", timeout=120, stdin=content,
                                                  purpose=f"write_file {path} ({len(content)} bytes)")
        if status != 0 or timed_out:
            raise LabError(f"{self.name}: cannot write {path}: {err.decode(errors='replace').strip() or 'timed out'}")

    def address(self) -> str:
        return self.channel.host

    def boot_id(self) -> str:
        return self.read_file("/proc/sys/kernel/random/boot_id").decode().strip()

    def reboot(self, timeout: float = 300.0) -> None:
        """`systemctl reboot`, then back when a new connection sees a new boot id and systemd has settled."""
        if not self.channel.allow_mutation:
            raise self._refuse("systemctl reboot", "root", "rebooting changes the host")
        deadline = time.monotonic() + timeout
        before = self.boot_id()
        self._send("systemctl reboot", user="root", timeout=30, purpose="reboot")
        self.channel.exit_master()  # the old connection dies with the host: do not wait for keep-alives to say so
        last = ""
        while time.monotonic() < deadline:
            time.sleep(3.0)
            try:
                now = self.boot_id()
            except (LabError, FileNotFoundError) as exc:
                last = str(exc)
                continue
            if now and now != before:
                remaining = max(10.0, deadline - time.monotonic())
                state = self.run("systemctl is-system-running --wait", timeout=remaining).stdout.strip()
                if state not in ("running", "degraded"):
                    raise LabError(f"{self.name}: after the reboot systemd is {state or 'unknown'}")
                return
        raise LabError(f"{self.name}: not back with a new boot id within {timeout:.0f}s (last: {last or 'same boot'})")

    def testinfra_host(self) -> Any:
        from harness.targets.testinfra_bridge import host_for  # lazy: only suites need it

        return host_for(self)


class SshBackend(TargetBackend):
    scheme = "ssh"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.COMMANDS, Capability.FILES,
                                                               Capability.MUTATION, Capability.REBOOT})
    limitations: ClassVar[dict[Capability, str]] = {
        Capability.REBOOT: "rebooting a host the kit did not build needs --allow-mutation",
        Capability.BUILDS_HOST: "the ssh backend judges a host that already exists: it builds nothing and applies "
                                "no runbook step",
        Capability.RESTART: "the ssh backend has no container to restart (a real reboot needs --allow-mutation)",
        Capability.VOLUME_DETACH: "the ssh backend reaches an existing host over ssh only: it cannot power it off "
                                  "or detach its volumes",
        Capability.VOLUME_HOTPLUG: "the ssh backend cannot attach volumes to an existing host",
        Capability.VOLUME_SNAPSHOT: "the ssh backend cannot snapshot an existing host's volume",
        Capability.RECOVERY_HOST: "the ssh backend has no second, fresh host for a restore drill",
        Capability.LAB_NETWORK: "an existing host is not on the kit's lab network (no lab client, ACME CA or "
                                "operator machine)",
    }

    def __init__(self, url: TargetUrl, *, run_dir: Path, identity_file: Path | None = None,
                 known_hosts: Path | None = None, accept_new_host_key: bool = False, allow_mutation: bool = False,
                 connect_timeout: float = CONNECT_TIMEOUT, control_persist: int = CONTROL_PERSIST,
                 host_key: dict[str, Any] | None = None) -> None:
        if url.scheme != "ssh":
            raise UsageError(f"the ssh backend needs an ssh:// target, not {url}", hint="ssh://user@host[:port]")
        if not url.user:
            raise UsageError(f"the target {url} names no user", hint=f"give ssh://USER@{url.host}"
                                                                      f"{':' + str(url.port) if url.port else ''}")
        if identity_file is not None and not identity_file.is_file():
            raise UsageError(f"the ssh identity file {identity_file} does not exist",
                             hint="give the path of the private key (--identity-file)")
        self.url = url
        self.channel = SshChannel(url, run_dir=run_dir, identity_file=identity_file,
                                  known_hosts=known_hosts or Path.home() / ".ssh" / "known_hosts",
                                  accept_new_host_key=accept_new_host_key, allow_mutation=allow_mutation,
                                  connect_timeout=connect_timeout, control_persist=control_persist)
        self.host_key: dict[str, Any] = dict(host_key or {})
        self._target: SshTarget | None = None

    @classmethod
    def from_options(cls, target: str | TargetUrl, *, run_dir: Path, identity_file: Path | None = None,
                     known_hosts: Path | None = None, accept_new_host_key: bool = False,
                     allow_mutation: bool = False) -> SshBackend:
        url = parse_target(target) if isinstance(target, str) else target
        return cls(url, run_dir=run_dir, identity_file=identity_file, known_hosts=known_hosts,
                   accept_new_host_key=accept_new_host_key, allow_mutation=allow_mutation)

    @classmethod
    def for_run(cls, run_id: str, url: TargetUrl, access: HostAccess, workdir: Path) -> SshBackend:
        return cls(url, run_dir=workdir / "ssh", identity_file=access.identity_file, known_hosts=access.known_hosts,
                   accept_new_host_key=access.accept_new_host_key, allow_mutation=access.allow_mutation)

    @classmethod
    def preflight(cls) -> None:
        for tool in ("ssh", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise LabError(f"the OpenSSH client ({tool}) is not installed", hint="apt-get install openssh-client")

    # ---- capabilities -------------------------------------------------------------------------------------
    def effective_capabilities(self) -> frozenset[Capability]:
        if self.channel.allow_mutation:
            return self.capabilities
        return self.capabilities - {Capability.MUTATION, Capability.REBOOT}

    # ---- state --------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        c = self.channel
        return {"scheme": self.scheme, "url": str(self.url), "run_dir": str(c.run_dir),
                "identity_file": str(c.identity_file) if c.identity_file else None,
                "known_hosts": str(c.known_hosts), "accept_new_host_key": c.accept_new_host_key,
                "allow_mutation": c.allow_mutation, "connect_timeout": c.connect_timeout,
                "control_persist": c.control_persist, "control_path": str(c.control_path),
                "host_key": self.host_key}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SshBackend:
        identity = state.get("identity_file")
        return cls(parse_target(state["url"]), run_dir=Path(state["run_dir"]),
                   identity_file=Path(identity) if identity else None, known_hosts=Path(state["known_hosts"]),
                   accept_new_host_key=bool(state.get("accept_new_host_key")),
                   allow_mutation=bool(state.get("allow_mutation")),
                   connect_timeout=float(state.get("connect_timeout", CONNECT_TIMEOUT)),
                   control_persist=int(state.get("control_persist", CONTROL_PERSIST)),
                   host_key=state.get("host_key"))

    @property
    def target(self) -> SshTarget:
        if self._target is None:
            self._target = SshTarget(self.channel)
        return self._target

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def up(self, lab: LabServices | None, progress: Progress) -> None:
        """Connect (host key verified), then check that root is reachable through `sudo -n` and PID 1 is systemd."""
        c = self.channel
        c.prepare_dirs()
        known_before = c.known_fingerprints()
        c.ensure_master()
        known_after = c.known_fingerprints()
        accepted = c.accept_new_host_key and not known_before and bool(known_after)
        self.host_key = {"fingerprints": known_after, "accepted_new": accepted, "known_hosts": str(c.known_hosts)}
        pid1 = self.target.run("cat /proc/1/comm", user=c.user, timeout=30)
        said = f"pid1={pid1.stdout.strip()}\n" if pid1.ok else ""
        if c.user == "root":
            said += "sudo-exit=0\n"
        else:
            # sent as it is (`true` in a command text runs on this machine): does `sudo -n` work for this login?
            status, _, err, _, _ = self.target.send_argv(["true"], user="root", timeout=30)
            said += f"{err.decode(errors='replace')}sudo-exit={status}\n"
        check_host(said, where=c.where, user=c.user, status=pid1.exit_status, stderr=pid1.stderr)
        if not c.allow_mutation:
            self.gate_self_test()
        key = ", ".join(known_after) or "?"
        progress(f"ssh {c.where}: connected (host key {key}{', TRUSTED NOW for the first time' if accepted else ''}"
                 f"), sudo -n works, PID 1 is systemd; {'mutation ALLOWED' if c.allow_mutation else 'read-only'}")

    def gate_self_test(self) -> None:
        """Before anything else on a read-only host: commands that would write (a harmless marker under /tmp) or
        print a secret must be refused by the gate, before sending. When one is not, the run stops here: the
        kit's promise of read-only does not hold on this machine."""
        marker = f"/tmp/stdbc-gate-probe-{secrets.token_hex(4)}"
        for probe in GATE_PROBES:
            command = probe.format(marker=marker)
            if self.target.refusal(command):
                continue
            raise LabError(f"{self.channel.where}: the read-only gate let `{command}` through: the run stops before "
                           "sending anything else", hint="a defect of the kit: report it; use --allow-mutation only "
                           "on a host you may change")

    def down(self) -> None:
        self.close()

    def close(self) -> None:
        """End the master connection (idempotent), and drop the short /tmp socket folder if one was used."""
        self.channel.exit_master()
        folder = self.channel.control_path.parent
        if folder != self.channel.run_dir:
            shutil.rmtree(folder, ignore_errors=True)

    def reboot(self, timeout: float = 600.0) -> None:
        self.require(Capability.REBOOT)
        self.target.reboot(timeout)

    # ---- report -------------------------------------------------------------------------------------------
    def facts(self) -> dict[str, Any]:
        c = self.channel
        entries = c.entries()
        return {"ssh": {"host": c.host, "port": c.port, "user": c.user,
                        "host_key_fingerprints": self.host_key.get("fingerprints", []),
                        "host_key_accepted_new": bool(self.host_key.get("accepted_new")),
                        "known_hosts": str(c.known_hosts), "mutation_allowed": c.allow_mutation,
                        "ssh_connections": c.connections(),
                        "commands_sent": sum(1 for e in entries if not e.get("refused")),
                        "commands_refused": sum(1 for e in entries if e.get("refused"))}}

    def export_transcript(self, report_dir: Path) -> dict[str, Any]:
        """Copy the transcript of every command sent (and refused) into the report folder."""
        report_dir.mkdir(parents=True, exist_ok=True)
        dest = report_dir / "host-transcript.jsonl"
        source = self.channel.transcript_path
        from harness.redact import redact_text

        # what the host printed can hold secrets (a key, a token, a hash): redacted as every report file is
        dest.write_text(redact_text(source.read_text(errors="replace")) if source.exists() else "")
        facts = self.facts()["ssh"]
        return {"file": dest.name, "commands_sent": facts["commands_sent"],
                "commands_refused": facts["commands_refused"], "ssh_connections": facts["ssh_connections"]}


# what the gate must refuse on every read-only connection, before anything else is sent (`gate_self_test`)
GATE_PROBES = ("touch {marker}", "echo x > {marker}", "cat /etc/shadow", "sudo -n cat /etc/shadow")


def check_host(output: str, *, where: str, user: str, status: int = 0, stderr: str = "") -> None:
    """The connect check's verdict: PID 1 must be systemd and `sudo -n` must work (else one LabError line)."""
    values = dict(line.partition("=")[::2] for line in output.splitlines() if "=" in line)
    if "pid1" not in values:
        raise LabError(f"{where}: the connect check did not run (exit {status}: {_last_line(stderr) or 'no output'})")
    pid1 = values.get("pid1", "").strip()
    if pid1 != "systemd":
        raise LabError(f"{where}: PID 1 is {pid1 or 'unknown'!r}, not systemd",
                       hint="the kit judges systemd units: point it at a host booted with systemd")
    if values.get("sudo-exit", "").strip() != "0":
        said = next((line for line in output.splitlines() if line.startswith("sudo:")), "sudo -n true failed")
        raise LabError(f"{where}: {user} has no passwordless sudo ({said.strip()})",
                       hint=f"the kit reads the host as root through `sudo -n`: give {user} a NOPASSWD sudoers rule, "
                            "or connect as a user that has one")
