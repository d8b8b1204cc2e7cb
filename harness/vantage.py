"""The remote vantage point: the machine the network-facing suites look at the target from.

Why an interface: "from remote" used to mean the lab's client container (docker exec, the domain in its
/etc/hosts, the lab CA mounted at /lab/ca). Hosts that already exist are judged from the kit's own machine or
from a machine named with `--vantage ssh://user@host[:port]`, where nothing resolves the lab's domain and
nothing trusts the lab's CAs unless the kit says so. So the suites talk to a `Vantage` (run a command there,
start a long-lived agent there, where the agents and the CA bundle are there) and build every connection
argument through the helpers below (`curl_args`, `openssl_connect_args`, `agent_flags`): name pinning
(domain -> address) and trust are decided in one place, never concatenated by a suite.

The run state says which vantage and which site (`state["vantage"]`, `state["site"]`); a state without them
(a run flow older than that contract) means today's lab client container, the lab's domain and target IP,
and trust through the client's system store (`fallback_trust`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness.errors import LabError
from harness.run_state import RunState
from harness.targets.base import CommandResult

AGENTS = Path(__file__).resolve().parent / "agents"
LAB_AGENTS = "/lab/agents"  # where the lab client container has harness/agents mounted
LAB_CA_DIR = "/lab/ca"  # where the lab client container has the lab's CA folder mounted
LAB_WORKDIR = "/tmp/stdbc-vantage"  # the kit's scratch folder inside the lab client container
# tried in order on the vantage; the first readable one is the system store the extra bundle is added to
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
BUNDLE_NAME = "ca-bundle.pem"
KILL_GRACE = 5.0  # seconds a timed-out local process group gets after SIGKILL to release its pipes
SSH_CONNECT_TIMEOUT = 10
SSH_SLACK = 20.0  # seconds beyond a command's own bound for the ssh connection itself


@dataclass(frozen=True)
class Site:
    """The site under test as the vantage must reach it.

    `address`: the IP the vantage connects to for `domain` ("" = resolve the domain by DNS as usual).
    `ca_file`: a PEM bundle on the kit's machine to trust in addition to the system store ("" = system only).
    `declared`: False when derived from an older run state (no `site` key): then the suites still call the
    old trust step (`fallback_trust`), which puts Pebble's root into the lab client's system store.
    """

    domain: str
    url: str
    address: str = ""
    ca_file: str = ""
    declared: bool = True

    @property
    def connect_host(self) -> str:
        """What a TCP connection to the site is opened to: the pinned address, else the name itself."""
        return self.address or self.domain


def _as_dict(state: RunState | dict[str, Any]) -> dict[str, Any]:
    return state.to_dict() if isinstance(state, RunState) else state


def site_from_state(state: RunState | dict[str, Any]) -> Site:
    """The `site` of the run state, or (older states) the lab's domain and target IP."""
    state = _as_dict(state)
    site = state.get("site")
    if site:
        domain = str(site["domain"])
        return Site(domain=domain, url=str(site.get("url") or f"https://{domain}"),
                    address=str(site.get("address") or ""), ca_file=str(site.get("ca_file") or ""))
    lab = _lab_services_state(state)
    domain = str(lab.get("domain") or "")
    if not domain:
        raise LabError("the run state names no site: no `site` and no lab domain", hint="written by the run flow")
    return Site(domain=domain, url=f"https://{domain}", address=str((lab.get("ips") or {}).get("target") or ""),
                declared=False)


# ---------------------------------------------------------------- the interface


class Vantage(ABC):
    """A machine the suites run commands on to look at the target from outside.

    `run` has the Target signature `check.run` uses, so a vantage is evidence like any host. `user` is honoured
    where the kit can choose it (the lab client container); elsewhere commands run as the connecting user and
    the result says which.
    """

    kind: str = ""
    python: str = "python3"  # the interpreter the agents run with on that machine
    is_kit_machine: bool = False  # the vantage is the machine pytest runs on

    def __init__(self, extra_ca: str = "") -> None:
        self.extra_ca = extra_ca  # a PEM file on the kit's machine to trust in addition to the system store
        self._agents: dict[str, str] = {}
        self._ca: str | None = None

    @abstractmethod
    def run(self, command: str, *, user: str = "root", timeout: float = 60.0,
            stdin: bytes | None = None) -> CommandResult:
        """Run `command` through bash on the vantage, bounded by `timeout` seconds."""

    @abstractmethod
    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        """The local argv that starts `argv` on the vantage with stdin/stdout connected (a long-lived agent)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for evidence: which machine the observations were made from."""

    def agent_path(self, name: str) -> str:
        """Where harness/agents/NAME is on the vantage (copied there once when it is not already)."""
        if name not in self._agents:
            self._agents[name] = self._place_agent(name)
        return self._agents[name]

    def ca_path(self) -> str:
        """The trust bundle as a path on the vantage ("" = system store only): the vantage's system bundle plus
        the extra one, in one file, because curl's --cacert, openssl's -CAfile and Python's cafile each
        replace the system store rather than add to it. Built once."""
        if self._ca is None:
            self._ca = self._build_bundle() if self.extra_ca else ""
        return self._ca

    def close(self) -> None:
        """Release what the vantage holds (connections, scratch folders); what was placed there is forgotten."""
        self._agents.clear()
        self._ca = None

    def sdk_client(self) -> list[str]:
        """The argv prefix that runs the official SDK client agent (sdk_client.mjs) on this vantage, up to its
        `--sdk DIR`. NotImplementedError: this kind of vantage has no SDK placed (not-applicable there);
        SdkUnavailable: it should have, and the kit's dependency is missing (an error)."""
        raise NotImplementedError(f"the official SDK client is not placed on {self.describe()} (it runs on the lab's "
                                  f"client and operator containers and on this machine)")

    # ---- hooks
    def _place_agent(self, name: str) -> str:
        path = f"{self._workdir()}/agents/{name}"
        self._put(path, (AGENTS / name).read_bytes())
        return path

    def _extra_ca_on_vantage(self) -> str:
        path = f"{self._workdir()}/extra-ca.pem"
        self._put(path, Path(self.extra_ca).read_bytes())
        return path

    def _build_bundle(self) -> str:
        extra = self._extra_ca_on_vantage()
        bundle = f"{self._workdir()}/{BUNDLE_NAME}"
        systems = " ".join(shlex.quote(p) for p in SYSTEM_BUNDLES)
        script = (f"mkdir -p {shlex.quote(self._workdir())} && {{ for f in {systems}; do "
                  f"if [ -r \"$f\" ]; then cat \"$f\"; echo; break; fi; done; cat {shlex.quote(extra)}; }} "
                  f"> {shlex.quote(bundle)}.$$ && mv {shlex.quote(bundle)}.$$ {shlex.quote(bundle)}")
        res = self.run(script, timeout=30)
        if not res.ok:
            raise LabError(f"cannot build the CA bundle on {self.describe()}: "
                           f"{(res.stderr or res.stdout).strip()[-200:]}")
        return bundle

    def _workdir(self) -> str:
        raise NotImplementedError

    def _put(self, path: str, content: bytes) -> None:
        script = f"mkdir -p \"$(dirname -- {shlex.quote(path)})\" && cat > {shlex.quote(path)}"
        res = self.run(script, timeout=30, stdin=content)
        if not res.ok:
            raise LabError(f"cannot write {path} on {self.describe()}: {(res.stderr or res.stdout).strip()[-200:]}")

    def __enter__(self) -> Vantage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- implementations


def lab_sdk_client(host: Any) -> list[str]:
    """The SDK client on a lab container where the lab mounted the bundle and this machine's node (/lab/sdk)."""
    from harness.sdk_bundle import LAB_NODE, LAB_SDK_DIR, node_flags_for
    from harness.sdk_checks import SdkUnavailable

    res = host.run(f"{LAB_NODE} --version && test -d {LAB_SDK_DIR}/node_modules/spacetimedb", timeout=30)
    if not res.ok:
        raise SdkUnavailable("the lab mounted no official SDK bundle on this container (Node.js 20+ or npm was "
                             "missing when the lab came up: see bootstrap)")
    return [LAB_NODE, *node_flags_for(res.stdout.strip()), f"{LAB_AGENTS}/sdk_client.mjs", "--sdk", LAB_SDK_DIR]


class LabClientVantage(Vantage):
    """The lab's client container, reached with docker exec (agents and the lab CA folder are mounted)."""

    kind = "lab-client"

    def __init__(self, container: str, *, extra_ca: str = "", ca_dir_host: str = "") -> None:
        super().__init__(extra_ca)
        from harness.lab.docker_target import DockerTarget

        self.container = container
        self.ca_dir_host = ca_dir_host
        self._host = DockerTarget(container, "client", "")

    def run(self, command: str, *, user: str = "root", timeout: float = 60.0,
            stdin: bytes | None = None) -> CommandResult:
        return self._host.run(command, user=user, timeout=timeout, stdin=stdin)

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        return ["docker", "exec", "-i", "-u", user, self.container, *argv]

    def describe(self) -> str:
        return f"lab client container {self.container}"

    def sdk_client(self) -> list[str]:
        return lab_sdk_client(self._host)

    def _place_agent(self, name: str) -> str:
        return f"{LAB_AGENTS}/{name}"

    def _extra_ca_on_vantage(self) -> str:
        if self.ca_dir_host:  # the lab's CA folder is mounted at /lab/ca: no copy needed
            try:
                relative = Path(self.extra_ca).resolve().relative_to(Path(self.ca_dir_host).resolve())
                return f"{LAB_CA_DIR}/{relative.as_posix()}"
            except ValueError:
                pass
        return super()._extra_ca_on_vantage()

    def _workdir(self) -> str:
        return LAB_WORKDIR


def _run_argv(argv: list[str], *, command: str, timeout: float, user: str, host: str,
              stdin: bytes | None = None) -> CommandResult:
    """Run argv on this machine in its own process group, bounded: on timeout the whole group is killed (a
    pipeline's children would otherwise keep the output pipes open)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:  # something left the group and holds the pipes: stop reading
            proc.kill()
            out, err = b"", b"(output abandoned after the timeout)"
        status = 124
    return CommandResult(command=command, exit_status=status, stdout=out.decode(errors="replace"),
                         stderr=err.decode(errors="replace"), duration=time.monotonic() - started,
                         user=user, host=host, timed_out=timed_out)


def _login_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "")


class LocalVantage(Vantage):
    """The machine the kit runs on: plain subprocesses, each bounded (no container, no /etc/hosts edits)."""

    kind = "local"
    is_kit_machine = True

    def __init__(self, *, extra_ca: str = "") -> None:
        super().__init__(extra_ca)
        self.python = sys.executable or "python3"
        self.hostname = socket.gethostname()
        self._tmp: str | None = None

    def run(self, command: str, *, user: str = "root", timeout: float = 60.0,
            stdin: bytes | None = None) -> CommandResult:
        return _run_argv(["bash", "-c", command], command=command, timeout=timeout, user=_login_user(),
                         host=self.hostname, stdin=stdin)

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        return list(argv)

    def describe(self) -> str:
        return f"this machine ({self.hostname})"

    def sdk_client(self) -> list[str]:
        from harness.errors import KitError
        from harness.sdk_bundle import ensure_sdk
        from harness.sdk_checks import SdkUnavailable

        try:
            bundle = ensure_sdk()
        except KitError as exc:
            raise SdkUnavailable(str(exc)) from None
        return [str(bundle.node), *bundle.node_flags(), str(AGENTS / "sdk_client.mjs"), "--sdk", str(bundle.directory)]

    def _place_agent(self, name: str) -> str:
        return str(AGENTS / name)

    def _extra_ca_on_vantage(self) -> str:
        return str(Path(self.extra_ca).resolve())

    def _workdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="stdbc-vantage-")
        return self._tmp

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        super().close()


# the URL schemes a vantage point other than this machine can have (the vantage points' own registry)
VANTAGE_SCHEMES = ("ssh",)
# the one folder the kit may create (and remove) on an ssh vantage point: mktemp's name, nothing else
SCRATCH = re.compile(r"/tmp/stdbc-vantage-[A-Za-z0-9]{6}")
VANTAGE_TRANSCRIPT = "vantage-transcript.jsonl"


class SshVantage(Vantage):
    """Another machine, reached with the plain `ssh` client: BatchMode (never a prompt), one ControlMaster
    connection reused by every command, the identity file and known_hosts the run state names."""

    kind = "ssh"

    def __init__(self, url: str, *, identity_file: str = "", known_hosts: str = "", extra_ca: str = "",
                 transcript: str = "") -> None:
        super().__init__(extra_ca)
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise LabError(f"not an ssh vantage URL: {url!r}", hint="ssh://user@host[:port]")
        self.url = url
        self.user = parts.username or ""
        self.host = parts.hostname
        self.port = parts.port
        self.identity_file = identity_file
        self.known_hosts = known_hosts
        # short: a socket path has ~100 bytes, and $TMPDIR may be long
        self._control_dir = tempfile.mkdtemp(prefix="stdbc-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self._remote_tmp: str | None = None
        self.transcript = transcript  # a JSON line per command sent to this machine, as for an ssh target

    def _record(self, command: str, result: CommandResult | None, *, purpose: str = "") -> None:
        if not self.transcript:
            return
        entry: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "host": self.host,
                                 "user": self.user or "(ssh login)", "command": command, "env": {}}
        if result is not None:
            entry.update(exit_status=result.exit_status, duration=round(result.duration, 3),
                         timed_out=result.timed_out)
        if purpose:
            entry["purpose"] = purpose
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write per line: whole lines from parallel suite processes
        finally:
            os.close(fd)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
                   "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
                   "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/cm-%C",
                   "-o", "ControlPersist=120"]
        if self.port:
            options += ["-p", str(self.port)]
        if self.identity_file:
            options += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        return options

    def ssh_argv(self, remote_command: str) -> list[str]:
        return ["ssh", *self.ssh_options(), self.destination, remote_command]

    def run(self, command: str, *, user: str = "root", timeout: float = 60.0,
            stdin: bytes | None = None) -> CommandResult:
        bound = max(1, int(timeout))
        # bounded on the vantage too: a killed ssh client alone would leave the command running there
        remote = f"timeout -k 5 {bound} bash -c {shlex.quote(command)}"
        result = _run_argv(self.ssh_argv(remote), command=command, timeout=timeout + SSH_SLACK,
                           user=self.user or "(ssh login)", host=self.host, stdin=stdin)
        self._record(command, result)
        return result

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        self._record(shlex.join(argv), None, purpose="long-lived agent")
        return self.ssh_argv(shlex.join(argv))

    def _put(self, path: str, content: bytes) -> None:
        """Files go only into this run's scratch folder on the vantage (removed by `close`)."""
        scratch = self._workdir()
        if not path.startswith(scratch + "/") or "/../" in path:
            raise LabError(f"refused to write {path} on {self.url}: the kit writes only under its scratch folder "
                           f"{scratch}")
        super()._put(path, content)

    def describe(self) -> str:
        return self.url

    def _workdir(self) -> str:
        if self._remote_tmp is None:
            res = self.run("mktemp -d /tmp/stdbc-vantage-XXXXXX", timeout=30)
            path = res.stdout.strip()
            if not res.ok or not SCRATCH.fullmatch(path):
                said = (res.stderr or res.stdout).strip()[-200:]
                raise LabError(f"cannot make a scratch folder on {self.url}: {said}")
            self._remote_tmp = path
        return self._remote_tmp

    def close(self) -> None:
        if self._remote_tmp is not None and SCRATCH.fullmatch(self._remote_tmp):
            self.run(f"rm -rf {shlex.quote(self._remote_tmp)}", timeout=30)
            self._remote_tmp = None
        super().close()
        _run_argv(["ssh", "-o", f"ControlPath={self._control_dir}/cm-%C", "-O", "exit", self.destination],
                  command="ssh -O exit", timeout=15, user="", host=self.host)
        shutil.rmtree(self._control_dir, ignore_errors=True)


def vantage_from_state(state: RunState | dict[str, Any]) -> Vantage:
    """The vantage the run state names, or (older states) the lab's client container."""
    state = _as_dict(state)
    site = state.get("site") or {}
    extra_ca = str(site.get("ca_file") or "")
    spec = state.get("vantage")
    if not spec:
        containers = _lab_services_state(state).get("containers") or {}
        if "client" not in containers:
            raise LabError("the run state names no vantage and the lab has no client container")
        return LabClientVantage(containers["client"], extra_ca=extra_ca)
    kind = spec.get("kind")
    if kind == "lab-client":
        return LabClientVantage(spec["container"], extra_ca=extra_ca, ca_dir_host=str(spec.get("ca_dir_host") or ""))
    if kind == "local":
        return LocalVantage(extra_ca=extra_ca)
    if kind == "ssh":
        workdir = state.get("workdir")
        return SshVantage(spec["url"], identity_file=str(spec.get("identity_file") or ""),
                          known_hosts=str(spec.get("known_hosts") or ""), extra_ca=extra_ca,
                          transcript=str(Path(workdir) / VANTAGE_TRANSCRIPT) if workdir else "")
    raise LabError(f"unknown vantage kind {kind!r} in the run state", hint="lab-client, local or ssh")


def fallback_trust(state: RunState | dict[str, Any]) -> str:
    """Today's trust step for a run state without `site`: Pebble's issuing root added to the lab client's
    system store (lab.trust_acme_root_on). Returns the PEM; "" when the state declares a site (its ca_file
    carries the trust) or the lab has no ACME CA."""
    state = _as_dict(state)
    if state.get("site"):
        return ""
    from dataclasses import fields

    from harness.lab.services import LabServices, ServicesState

    known = {f.name for f in fields(ServicesState)}
    services = {k: v for k, v in _lab_services_state(state).items() if k in known}
    return LabServices.from_state(services).trust_acme_root_on("client")


def _lab_services_state(state: dict[str, Any]) -> dict[str, Any]:
    """The lab's services part of the run state: `lab.services` (a testbed's state), or `lab` itself (the
    single-lab layout: containers, ips and domain at its top level)."""
    lab = state.get("lab") or {}
    services = lab.get("services")
    return services if isinstance(services, dict) else lab


# ---------------------------------------------------------------- connection arguments


def curl_args(site: Site, vantage: Vantage) -> str:
    """curl options that reach `site` from `vantage`: the domain pinned to its address on both web ports,
    and the combined trust bundle (never --cacert with the extra bundle alone: that drops the system store)."""
    args: list[str] = []
    if site.address:
        args += ["--resolve", f"{site.domain}:443:{site.address}", "--resolve", f"{site.domain}:80:{site.address}"]
    ca = vantage.ca_path()
    if ca:
        args += ["--cacert", ca]
    return shlex.join(args)


def openssl_connect_args(site: Site, vantage: Vantage) -> str:
    """`openssl s_client` options: TCP to the address (or the name), SNI the domain, the combined bundle."""
    args = ["-connect", f"{_host_port(site.connect_host)}:443", "-servername", site.domain]
    ca = vantage.ca_path()
    if ca:
        args += ["-CAfile", ca]
    return shlex.join(args)


def agent_flags(site: Site, vantage: Vantage) -> list[str]:
    """Flags of the request agents (ws_subscribe.py, http_probe.py): --connect ADDR keeps the URL's name for
    Host and SNI but opens the TCP connection to ADDR; --cafile F verifies against F."""
    flags: list[str] = []
    if site.address:
        flags += ["--connect", site.address]
    ca = vantage.ca_path()
    if ca:
        flags += ["--cafile", ca]
    return flags


def agent_command(vantage: Vantage, name: str, args: list[str]) -> str:
    """The shell command that runs agent NAME on the vantage with `args` (each quoted)."""
    return shlex.join([vantage.python, vantage.agent_path(name), *args])


def _host_port(host: str) -> str:
    return f"[{host}]" if ":" in host else host
