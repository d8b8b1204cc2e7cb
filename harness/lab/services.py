"""The lab's shared services, one set per run on its own docker network, every resource labelled with the run id.

Hosts (all from the base image; the target itself is the backend's, see harness/backends/):
- client    the remote vantage point for route and TLS checks (never the target's loopback).
- mirror    answers as https://install.spacetimedb.com with the lab CA (stand-in runs only).
- acme      Pebble (ACME CA) + pebble-challtestsrv as its DNS, which answers every name with the target.
- operator  the operator's own machine (the runbook's "on your local machine" steps).
The lab CA issues the mirror's and Pebble's API certificates; the target's address on the lab network is
fixed per run (HOST_OCTETS), so every service knows it before the target exists.

Adaptations (declared in the report): the target trusts the lab CA system-wide; certbot's prompts are
answered by /etc/letsencrypt/cli.ini pointing at Pebble; DNS for the domain and the install URL come
from the lab.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.errors import LabError
from harness.lab import runs
from harness.lab.ca import LabCA
from harness.lab.docker import (
    LABEL_BOOT,
    LABEL_PID,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_START,
    docker,
    docker_text,
    require_engine,
)
from harness.lab.docker_target import DockerTarget
from harness.targets.base import Target

Progress = Callable[[str], None]

MIRROR_HOST = "install.spacetimedb.com"
ACME_HOST = "acme.lab.test"
TARGET_HOSTNAME = "stdb-target"
RECOVERY_HOSTNAME = "stdb-recovery"
DATA_DEVICE = "/dev/nvme1n1"
CA_TIMEOUT = 300.0  # update-ca-certificates rehashes every root: minutes in a TCG guest on a loaded host
DOWN_WAIT = 120.0  # seconds down() waits for an interrupted up()'s workers (their hosts are gone by then)
READY_TIMEOUT = 60.0  # seconds the lab's services (mirror, Pebble, the target's sshd) get to listen after start
INTERRUPTED_SETTLE = 3.0  # seconds down() waits before its last look when the bring-up was cut short
SWEEP_ROUNDS = 8  # down(): rounds of remove-and-look-again (a `docker run` cut short can land a moment later)
HOST_OCTETS = {"target": 10, "client": 20, "mirror": 30, "acme": 40, "operator": 50, "recovery": 60}
OPERATOR_PROJECT = "/home/ubuntu/spacetime-module"
LAB_CA_ON_TARGET = "/usr/local/share/ca-certificates/stdb-conformance-lab-ca.crt"
# What `update-ca-certificates` does for one new local CA, without re-reading every root (24 s in a TCG guest):
# the .pem link in /etc/ssl/certs, its subject-hash link, and the PEM appended to the bundle. It leaves exactly
# what update-ca-certificates leaves (tests/test_lab_ca_trust.py); falls back to it where the links clash.
TRUST_ONE_CA = f"""set -e
src={LAB_CA_ON_TARGET}; certs=/etc/ssl/certs; pem=$(basename "$src" .crt).pem
hash=$(openssl x509 -hash -noout -in "$src")
if [ -e "$certs/$pem" ] || [ -e "$certs/$hash.0" ] || ! [ -f "$certs/ca-certificates.crt" ]; then
  exec update-ca-certificates
fi
ln -s "$src" "$certs/$pem"
ln -s "$pem" "$certs/$hash.0"
cat "$src" >> "$certs/ca-certificates.crt"
"""
VANTAGE_CA = "vantage-ca.pem"  # in the CA folder: lab CA + Pebble's issuing root, for the remote vantage point


@dataclass
class LabOptions:
    mirror_dir: Path | None = None  # stand-in release tree; None = the real install URL
    image: str = ""
    domain: str = "stdb.lab.test"
    data_volume: bool = True
    acme: bool = True
    operator: bool = True
    # a run from a checkpoint (harness.checkpoint): the lab CA and operator key the checkpointed host was
    # prepared with (files lab-ca.key, lab-ca.crt, operator-key, operator-key.pub), reused instead of new ones,
    # and the target's own preparation (trust, authorized key) is already in its file system
    identity: Path | None = None


@dataclass
class Adaptation:
    id: str
    summary: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "summary": self.summary, "detail": self.detail}


@dataclass
class ServicesState:
    run_id: str
    network: str = ""
    subnet: str = ""
    workdir: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # role -> container name
    ips: dict[str, str] = field(default_factory=dict)
    domain: str = ""
    acme_directory: str = ""
    certbot_configured: bool = False  # on the run's target
    certbot_hosts: list[str] = field(default_factory=list)  # every host answered so far (the target, recovery hosts)
    readiness: dict[str, Any] = field(default_factory=dict)  # bounded waits for the lab's services (and bounds)
    image: str = ""


class LabServices:
    """Network, CA, mirror, ACME CA, remote client and operator machine of one run. A context manager:
    leaving it removes everything it created (also after an interrupted `open()`)."""

    def __init__(self, run_id: str, options: LabOptions) -> None:
        self.run_id = run_id
        self.options = options
        self.s = ServicesState(run_id=run_id, domain=options.domain, image=options.image)
        self.adaptations: list[Adaptation] = []
        self.ca: LabCA | None = None
        self._closing = threading.Event()  # set by down(): workers still bringing hosts up start nothing new
        self._inflight: list[Future[Any]] = []  # parallel work, waited for by down() (an interrupted up)

    def __enter__(self) -> LabServices:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # ---- re-attach from another process (the suites run in pytest subprocesses) -------------------
    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LabServices:
        services = cls(state["run_id"], LabOptions(domain=state.get("domain", ""), image=state.get("image", "")))
        services.s = ServicesState(**state)
        return services

    def state(self) -> dict[str, Any]:
        return dict(self.s.__dict__)

    @property
    def domain(self) -> str:
        return self.s.domain

    @property
    def workdir(self) -> Path:
        return Path(self.s.workdir)

    @property
    def mirror_tree(self) -> Path:
        """The release tree this lab's mirror serves (its own copy, in the lab's folder)."""
        return self.workdir / "mirror"

    @property
    def target_ip(self) -> str:
        return self.s.ips["target"]

    @property
    def client(self) -> DockerTarget:
        return DockerTarget(self.s.containers["client"], "client", self.s.ips["client"])

    def has(self, role: str) -> bool:
        return role in self.s.containers

    def host(self, role: str) -> DockerTarget:
        return DockerTarget(self.s.containers[role], role, self.s.ips[role])

    @property
    def ca_cert_path(self) -> Path:
        return self.workdir / "ca" / "lab-ca.crt"

    def labels(self, role: str) -> list[str]:
        return ["--label", f"{LABEL_RUN}={self.run_id}", "--label", f"{LABEL_PID}={os.getpid()}",
                "--label", f"{LABEL_BOOT}={runs.host_boot_id()}",
                "--label", f"{LABEL_START}={runs.process_start(os.getpid())}", "--label", f"{LABEL_ROLE}={role}"]

    def bridge(self) -> str:
        """The Linux bridge of the lab network (a VM's tap joins it)."""
        return "br-" + docker_text("network", "inspect", "-f", "{{.Id}}", self.s.network)[:12]

    def gateway(self) -> str:
        return self.s.subnet.rsplit(".", 1)[0] + ".1"

    # ---- up ----------------------------------------------------------------------------------------
    def open(self, progress: Progress = print) -> None:
        """Network and certificates: what the target's backend needs before it starts."""
        require_engine()
        from harness.lab.cleanup import sweep_dead

        swept = sweep_dead(progress=lambda _m: None)
        if swept:
            progress(f"removed leftovers of dead runs: {', '.join(swept)}")
        runs.register(self.run_id)
        self.s.workdir = tempfile.mkdtemp(prefix=f"stdbc-{self.run_id}-lab-")
        self._network(progress)
        self._certificates()

    def start_hosts(self, progress: Progress = print) -> None:
        """The service hosts, concurrently (each `docker run` is ~0.35 s)."""
        starters: list[Callable[[Progress], None]] = []
        if self.options.mirror_dir is not None:
            starters.append(self._mirror)
        if self.options.acme:
            starters.append(self._acme)
        starters.append(self._client)
        if self.options.operator:
            starters.append(self._operator_host)
        in_parallel([functools.partial(f, progress) for f in starters], track=self._inflight)

    def run_container(self, role: str, argv: list[str], progress: Progress) -> str:
        """Start a labelled container of this lab on its network at the role's address (backends use it for
        their containers too)."""
        return self._run_container(role, argv, progress)

    def track(self, calls: list[Callable[[], Any]]) -> None:
        """Run `calls` concurrently as part of this lab's bring-up (an interrupted down() waits for them)."""
        in_parallel(calls, track=self._inflight)

    def _certificates(self) -> None:
        reuse = None
        if self.options.identity is not None:
            reuse = ((self.options.identity / "lab-ca.key").read_bytes(),
                     (self.options.identity / "lab-ca.crt").read_bytes())
        self.ca = LabCA(self.workdir / "ca", self.run_id, reuse=reuse)
        self.ca.issue("mirror", [MIRROR_HOST], [self.s.ips["mirror"]])
        self.ca.issue("acme", [ACME_HOST, f"stdbc-{self.run_id}-acme", "localhost"], [self.s.ips["acme"]])
        os.chmod(self.workdir, 0o755)

    def vantage_ca(self) -> Path:
        """The bundle a remote vantage point trusts for this lab: the lab CA and Pebble's issuing root (fetched
        from the running Pebble), written into the CA folder (mounted at /lab/ca in the client)."""
        bundle = self.workdir / "ca" / VANTAGE_CA
        pem = self.ca_cert_path.read_text()
        if "acme" in self.s.containers:
            res = self.client.run(f"curl -sSf --max-time 10 --cacert /lab/ca/lab-ca.crt "
                                  f"https://{ACME_HOST}:15000/roots/0", timeout=30)
            if res.ok and "BEGIN CERTIFICATE" in res.stdout:
                pem = pem.rstrip("\n") + "\n" + res.stdout
        bundle.write_text(pem)
        bundle.chmod(0o644)
        return bundle

    def _network(self, progress: Progress) -> None:
        name = f"stdbc-{self.run_id}"
        base = zlib.crc32(self.run_id.encode()) % 200
        last = ""
        for attempt in range(12):
            octet = 20 + (base + attempt * 17) % 200
            subnet = f"10.213.{octet}.0/24"
            proc = docker("network", "create", "--driver", "bridge", "--subnet", subnet, "--gateway",
                          f"10.213.{octet}.1", *self.labels("network")[:8], name, check=False, timeout=60)
            if proc.returncode == 0:
                self.s.network, self.s.subnet = name, subnet
                prefix = subnet.rsplit(".", 1)[0]
                self.s.ips = {role: f"{prefix}.{n}" for role, n in HOST_OCTETS.items()}
                progress(f"lab network {name} ({subnet})")
                return
            last = proc.stderr.decode(errors="replace").strip()
        raise LabError(f"could not create the lab network: {last}", hint="run: stdb-conformance clean")



    def _run_container(self, role: str, argv: list[str], progress: Progress) -> str:
        name = f"stdbc-{self.run_id}-{role}"
        if self._closing.is_set():
            raise LabError(f"the lab is being removed: the {role} container is not started")
        docker("run", "-d", "--name", name, "--network", self.s.network, "--ip", self.s.ips[role],
               *self.labels(role), *argv, timeout=120, what=f"start the {role} container")
        self.s.containers[role] = name
        return name


    def _mirror(self, progress: Progress) -> None:
        assert self.options.mirror_dir is not None
        script = Path(__file__).with_name("mirror_server.py")
        # the lab's own copy, removed with the lab: a kept lab's mirror outlives the run that built the tree, and a
        # release published later (publish_latest on `mirror_tree`) changes this lab's mirror only
        shutil.copytree(self.options.mirror_dir, self.mirror_tree, dirs_exist_ok=True)
        os.chmod(self.mirror_tree, 0o755)
        self._run_container("mirror", [
            "--network-alias", MIRROR_HOST, "--hostname", "mirror",
            "-v", f"{self.mirror_tree}:/srv/mirror:ro", "-v", f"{script}:/lab/mirror_server.py:ro",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", self.options.image,
            "python3", "/lab/mirror_server.py", "/srv/mirror", "/lab/ca/mirror.crt", "/lab/ca/mirror.key", "443"],
            progress)
        progress(f"mirror: https://{MIRROR_HOST} -> {self.s.ips['mirror']} (stand-in release tree)")
        self.adaptations.append(Adaptation(
            "lab.install-mirror", f"https://{MIRROR_HOST} is answered inside the lab by the artifact mirror",
            "served over HTTPS with a certificate from the lab CA; the runbook's curl | sh runs unmodified"))

    def _acme(self, progress: Progress) -> None:
        for tool in ("pebble", "pebble-challtestsrv"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed on this machine",
                               hint="run: bash scripts/bootstrap.sh (installs the pebble package)")
        config = {"pebble": {"listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
                             "certificate": "/lab/ca/acme.crt", "privateKey": "/lab/ca/acme.key",
                             "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
                             "externalAccountBindingRequired": False}}
        (self.workdir / "pebble-config.json").write_text(json.dumps(config, indent=2))
        target_ip = self.s.ips["target"]
        script = (f"pebble-challtestsrv -defaultIPv4 {target_ip} -defaultIPv6 '' -dns01 127.0.0.1:8053 "
                  f"-http01 '' -https01 '' -tlsalpn01 '' -management 127.0.0.1:8055 "
                  f"> /tmp/challtestsrv.log 2>&1 & "
                  f"exec pebble -config /lab/pebble-config.json -dnsserver 127.0.0.1:8053")
        self._run_container("acme", [
            "--network-alias", ACME_HOST, "--hostname", "acme",
            "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0", "-e", "PEBBLE_AUTHZREUSE=100",
            "-v", f"{shutil.which('pebble')}:/usr/local/bin/pebble:ro",
            "-v", f"{shutil.which('pebble-challtestsrv')}:/usr/local/bin/pebble-challtestsrv:ro",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", "-v", f"{self.workdir / 'pebble-config.json'}:"
            "/lab/pebble-config.json:ro", self.options.image, "sh", "-c", script], progress)
        self.s.acme_directory = f"https://{ACME_HOST}:14000/dir"
        progress(f"ACME CA: Pebble at {self.s.acme_directory}; its DNS answers every name with {target_ip}")
        self.adaptations.append(Adaptation(
            "lab.acme-ca", f"Let's Encrypt is replaced by Pebble at {self.s.acme_directory}",
            f"Pebble resolves every name (the domain {self.domain} included) to the target {target_ip}"))

    def _sdk_mounts(self, progress: Progress) -> list[str]:
        """The official SDK bundle and this machine's node, read-only, for the client agents (none when this
        machine cannot provide them: the SDK checks then say why)."""
        from harness.errors import KitError
        from harness.sdk_bundle import LAB_NODE, LAB_SDK_DIR, ensure_sdk

        try:
            bundle = ensure_sdk(progress=progress)
        except KitError as exc:
            progress(f"official SDK client unavailable: {exc}")
            return []
        if not any(a.id == "lab.sdk-client" for a in self.adaptations):
            self.adaptations.append(Adaptation(
                "lab.sdk-client", f"the lab's client and operator machines run the official SDK ({bundle.describe()})",
                "mounted read-only from this machine's cache: nothing is installed on the target"))
        return ["-v", f"{bundle.node}:{LAB_NODE}:ro", "-v", f"{bundle.directory}:{LAB_SDK_DIR}:ro"]

    def _client(self, progress: Progress) -> None:
        agents = Path(__file__).resolve().parent.parent / "agents"
        self._run_container("client", [
            "--hostname", "client", "--add-host", f"{self.domain}:{self.s.ips['target']}",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", "-v", f"{agents}:/lab/agents:ro", *self._sdk_mounts(progress),
            self.options.image, "sleep", "infinity"], progress)

    def _operator_host(self, progress: Progress) -> None:
        """The operator's own machine (Step 5 "on your local machine"): a separate lab host."""
        agents = Path(__file__).resolve().parent.parent / "agents"
        self._run_container("operator", [
            "--hostname", "operator", "--add-host", f"{self.domain}:{self.s.ips['target']}",
            "--add-host", f"{TARGET_HOSTNAME}:{self.s.ips['target']}",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", "-v", f"{agents}:/lab/agents:ro", *self._sdk_mounts(progress),
            self.options.image, "sleep", "infinity"], progress)

    def prepare_operator(self, target: Target, progress: Progress) -> None:
        """Declared adaptations on the operator machine: the CLI of the implementation under test installed
        with the official install command, an ssh key the target's `ubuntu` user accepts, the module project
        to build, and trust in the lab's certificates (lab CA; Pebble's issuing root is added after certbot)."""
        operator = self.host("operator")
        operator.write_file(LAB_CA_ON_TARGET, self.ca_cert_path.read_bytes())
        operator.run("update-ca-certificates", timeout=60)
        install = operator.run("curl -sSf https://install.spacetimedb.com | sh -s -- --yes", user="ubuntu",
                               timeout=300)
        progress(f"operator: spacetime CLI install exit {install.exit_status}")
        module = Path(__file__).resolve().parents[2] / "fixtures" / "operator_module"
        docker("cp", f"{module}/.", f"{self.s.containers['operator']}:{OPERATOR_PROJECT}", timeout=60)
        operator.run(f"chown -R ubuntu:ubuntu {OPERATOR_PROJECT}", timeout=30)
        identity = self.options.identity
        if identity is not None:  # the key the checkpointed target already accepts
            operator.run("install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh", timeout=30)
            for name, mode in (("id_ed25519", 0o600), ("id_ed25519.pub", 0o644)):
                source = identity / ("operator-key" + name.removeprefix("id_ed25519"))
                operator.write_file(f"/home/ubuntu/.ssh/{name}", source.read_bytes(), mode=mode, owner="ubuntu")
        keygen = "" if identity is not None else "ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519 -C " \
                                                 "stdb-conformance-operator && "
        key = operator.run("mkdir -p ~/.ssh && chmod 700 ~/.ssh && " + keygen +
                           "printf 'Host *\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n'"
                           " > ~/.ssh/config && cat ~/.ssh/id_ed25519.pub", user="ubuntu", timeout=60)
        if not key.ok:
            raise LabError(f"operator: cannot make an ssh key: {key.stderr.strip()[-200:]}")
        if identity is None:
            target.run("install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh", timeout=30)
            target.run(f"printf '%s\n' {shlex.quote(key.stdout.strip())} >> /home/ubuntu/.ssh/authorized_keys && "
                       "chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys && "
                       "chmod 600 /home/ubuntu/.ssh/authorized_keys", timeout=30)
        self.adaptations.append(Adaptation(
            "lab.operator-machine", "Step 5's \"local machine\" is a separate lab host (operator)",
            f"CLI installed there with `curl -sSf https://install.spacetimedb.com | sh -s -- --yes` as ubuntu "
            f"(exit {install.exit_status}); commands run as ubuntu in {OPERATOR_PROJECT} with ~/.local/bin on PATH "
            f"(as a login shell has it); the module project is fixtures/operator_module"))
        self.adaptations.append(Adaptation(
            "lab.operator-ssh-key", "the operator's ssh key is in the target's /home/ubuntu/.ssh/authorized_keys",
            ("ed25519 key made per run" if identity is None else
             "the ed25519 key of the checkpoint this run started from (already in the target's authorized_keys)")
            + "; ssh config: StrictHostKeyChecking accept-new, BatchMode yes"))
        progress("operator machine prepared: CLI, ssh key, module project")

    def operator_env(self) -> dict[str, str]:
        return {"PATH": "/home/ubuntu/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def trust_acme_root_on(self, role: str) -> str:
        """Add the running Pebble's issuing root to a lab host's trust store (certificates it issued then
        validate there). Returns the PEM (empty when Pebble is not part of the lab)."""
        if "acme" not in self.s.containers:
            return ""
        host = self.host(role)
        res = host.run(f"curl -sSf --max-time 10 --cacert /lab/ca/lab-ca.crt https://{ACME_HOST}:15000/roots/0",
                       timeout=30)
        if not res.ok or "BEGIN CERTIFICATE" not in res.stdout:
            raise LabError(f"cannot fetch Pebble's root from the {role} host: {res.stderr.strip()[-200:]}")
        host.write_file("/usr/local/share/ca-certificates/stdb-conformance-acme-root.crt", res.stdout.encode())
        host.run("update-ca-certificates", timeout=60)
        return res.stdout


    def inject_fault(self, fault: str, progress: Progress) -> None:
        """A lab broken on purpose (the kit's own tests, STDBC_LAB_FAULT): `mirror-stopped` stops the artifact
        mirror after bring-up, so the runbook's install cannot download anything. Declared as an adaptation."""
        if fault != "mirror-stopped":
            raise LabError(f"unknown STDBC_LAB_FAULT {fault!r}", hint="mirror-stopped")
        name = self.s.containers.get("mirror")
        if name is None:
            raise LabError("STDBC_LAB_FAULT=mirror-stopped: this lab has no mirror (--spacetimedb real)")
        docker("stop", "-t", "1", name, timeout=60)
        self.adaptations.append(Adaptation("lab.fault-injected", "the kit's own test broke this lab on purpose: "
                                           "the artifact mirror was stopped after bring-up (STDBC_LAB_FAULT)"))
        progress("lab: fault injected on purpose: the mirror is stopped (STDBC_LAB_FAULT=mirror-stopped)")

    def wait_services(self, progress: Progress, *, target_sshd: bool) -> None:
        """Bounded readiness of what the lab's hosts serve, before anything uses it: the mirror's HTTPS (the
        operator's CLI install), Pebble's ACME and management ports, the target's sshd (Step 5's scp/ssh from
        the operator). Probed from the client like any remote host would. Every wait, its bound and how long
        it took are in the lab state (`readiness`, copied into the report's environment); a wait that expires
        is a lab error naming the bound."""
        ports = {}
        if "mirror" in self.s.containers:
            ports["mirror https"] = ("mirror", 443)
        if "acme" in self.s.containers:
            ports["pebble acme"] = ("acme", 14000)
            ports["pebble management"] = ("acme", 15000)
        if target_sshd:
            ports["target sshd"] = ("target", 22)
        if not ports or "client" not in self.s.containers:
            return
        client = self.client
        started = time.monotonic()
        pending = dict(ports)
        tries = 0
        while pending:
            tries += 1
            script = "; ".join(f"nc -z -w 2 {self.s.ips[role]} {port} && echo ready={port}@{self.s.ips[role]}"
                               for role, port in pending.values())
            res = client.run(script + "; true", timeout=30)
            waited = round(time.monotonic() - started, 1)
            for name, (role, port) in list(pending.items()):
                if f"ready={port}@{self.s.ips[role]}" in res.stdout.split():
                    self.s.readiness[name] = {"address": f"{self.s.ips[role]}:{port}", "ready": True,
                                              "waited_seconds": waited, "timeout_seconds": READY_TIMEOUT}
                    del pending[name]
            if pending and waited >= READY_TIMEOUT:
                for name, (role, port) in pending.items():
                    self.s.readiness[name] = {"address": f"{self.s.ips[role]}:{port}", "ready": False,
                                              "waited_seconds": waited, "timeout_seconds": READY_TIMEOUT}
                names = ", ".join(f"{n} ({self.s.ips[r]}:{p})" for n, (r, p) in pending.items())
                raise LabError(f"lab services not listening after the {READY_TIMEOUT:.0f}s bound: {names}",
                               hint="see the container's logs (docker logs); run again")
            if pending:
                time.sleep(0.3)
        progress(f"lab services listening ({', '.join(ports)}) after {round(time.monotonic() - started, 1)}s "
                 f"(bound {READY_TIMEOUT:.0f}s each, {tries} probe round(s))")


    def lab_names(self) -> dict[str, str]:
        """The lab's names and addresses, as a host that is not a container (a VM's /etc/hosts) needs them. From
        the options and the fixed addresses, not from the containers started so far: a VM target boots while
        the service containers start, side by side."""
        hosts = {self.domain: self.s.ips["target"], TARGET_HOSTNAME: self.s.ips["target"]}
        if self.options.mirror_dir is not None:
            hosts[MIRROR_HOST] = self.s.ips["mirror"]
        if self.options.acme:
            hosts[ACME_HOST] = self.s.ips["acme"]
        return hosts


    def install_lab_ca(self, target: Target, role: str = "target") -> None:
        """`target` trusts the lab CA system-wide (the mirror's and Pebble's API certificates chain to it):
        the run's target, and every recovery host the runbook prepares (certbot talks to Pebble over TLS)."""
        target.write_file(LAB_CA_ON_TARGET, self.ca_cert_path.read_bytes())
        res = target.run(TRUST_ONE_CA, timeout=CA_TIMEOUT)
        if not res.ok:
            why = (f"timed out after {CA_TIMEOUT:.0f} s" if res.timed_out
                   else f"exit {res.exit_status}: {(res.stderr or res.stdout).strip()[-200:]}")
            raise LabError(f"cannot install the lab CA on the {role} ({why})")

    def prepare_target(self, target: Target, progress: Progress) -> None:
        """The declared adaptations on the target: trust the lab CA; answer certbot through cli.ini. A target
        from a checkpoint already trusts this lab's CA (the checkpoint's, reused)."""
        if self.options.identity is None:
            self.install_lab_ca(target)
        self.adaptations.append(Adaptation(
            "lab.trust-lab-ca", "the target trusts the lab CA system-wide",
            f"{LAB_CA_ON_TARGET}, linked and added to the bundle as update-ca-certificates does (mirror and "
            f"Pebble API certificates chain to it)"))
        if self.options.acme:
            self.adaptations.append(Adaptation(
                "lab.certbot-cli-ini", "certbot's questions are answered by /etc/letsencrypt/cli.ini",
                f"written just before the first certbot command (after the runbook installed certbot, so the "
                f"package's own conffile is kept): {'; '.join(self.certbot_settings())}"))
        progress("target prepared: lab CA trusted")

    def certbot_settings(self) -> list[str]:
        return [f"server = {self.s.acme_directory}", "agree-tos = true", "register-unsafely-without-email = true",
                "non-interactive = true", "no-eff-email = true"]

    def adapts_before(self, step: Any, target: Target) -> bool:
        """Whether `before_step` would adapt something before this step (a checkpoint must end before it)."""
        command = getattr(step, "command", "") or ""
        host = str(getattr(target, "hostname", "") or "target")
        if not self.s.acme_directory or host in self.s.certbot_hosts:
            return False
        return bool(re.search(r"(^|[;&|]\s*|sudo\s+)certbot\b", command)) and not re.search(r"\bapt(-get)?\b",
                                                                                              command)

    def identity_files(self) -> dict[str, bytes]:
        """What a checkpoint keeps of this lab so a later lab prepares hosts the same way: the CA, and the
        operator's ssh key (read from the operator machine)."""
        assert self.ca is not None
        found = {"lab-ca.key": self.ca.key_pem, "lab-ca.crt": self.ca.pem}
        if "operator" in self.s.containers:
            operator = self.host("operator")
            found["operator-key"] = operator.read_file("/home/ubuntu/.ssh/id_ed25519")
            found["operator-key.pub"] = operator.read_file("/home/ubuntu/.ssh/id_ed25519.pub")
        return found

    def before_step(self, step: Any, target: Target) -> str | None:
        """A declared adaptation right before a step: before the runbook first runs certbot itself, the lab's
        answers are added to certbot's own config file (appended, the package's lines are kept)."""
        if not self.adapts_before(step, target):
            return None
        host = str(getattr(target, "hostname", "") or "target")
        moved = self._acme_dns_to(target)
        block = "\n# stdb-conformance lab adaptation: answer certbot's questions, use the lab's ACME CA\n"
        block += "\n".join(self.certbot_settings()) + "\n"
        res = target.run(f"mkdir -p /etc/letsencrypt && printf '%s' {shlex.quote(block)} >> /etc/letsencrypt/cli.ini",
                         timeout=30)
        if not res.ok:
            raise LabError(f"cannot write /etc/letsencrypt/cli.ini on the target: {res.stderr.strip()[-200:]}")
        self.s.certbot_configured = True
        self.s.certbot_hosts.append(host)
        return (moved + "appended the lab's ACME settings to /etc/letsencrypt/cli.ini: "
                + "; ".join(self.certbot_settings()))

    def _acme_dns_to(self, target: Target) -> str:
        """Pebble validates a challenge at the address its DNS gives for the domain: for another host than the
        run's target (a recovery host prepared by the runbook) that answer moves to that host first."""
        try:
            address = target.address()
        except Exception:  # noqa: BLE001 - a target without an address on the lab network: leave DNS as it is
            return ""
        if not address or address == self.s.ips.get("target") or "acme" not in self.s.containers:
            return ""
        body = json.dumps({"ip": address})
        res = docker("exec", self.s.containers["acme"], "curl", "-sf", "-X", "POST", "-d", body,
                     "http://127.0.0.1:8055/set-default-ipv4", timeout=30, check=False)
        if res.returncode != 0:
            said = res.stderr.decode(errors="replace")[-200:]
            raise LabError(f"cannot point the lab's ACME DNS at {address}: {said}")
        return f"the lab's ACME DNS now answers {self.domain} with this host ({address}); "


    # ---- down --------------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove everything this lab created. Idempotent; never raises for already-gone resources.

        An interrupted open()/start_hosts() may still have workers starting hosts: they start nothing new from
        now on, the containers are removed (their docker exec calls then fail fast), the workers are waited
        for (bounded), and removal by label is repeated until a round finds nothing (a `docker run` whose
        client was cut short by the signal can still be completed by the engine a moment later)."""
        self._closing.set()
        # a bring-up cut short (a worker still running or failed): a `docker run` whose client died with the
        # signal may still be completed by the engine, so the last empty round is confirmed after a longer wait
        cut_short = any(not f.done() or (not f.cancelled() and f.exception() is not None) for f in self._inflight)
        self._remove_containers(list(self.s.containers.values()))
        if self._inflight:
            from concurrent.futures import wait

            wait(self._inflight, timeout=DOWN_WAIT)
        settle = INTERRUPTED_SETTLE if cut_short else 0.5
        for _round in range(SWEEP_ROUNDS):
            leftover = self._remove_containers([])
            gone = self._remove_networks()
            if not leftover and gone:
                time.sleep(settle)
                if not self._labelled_containers() and not self._labelled_networks():
                    break
            time.sleep(1)
        tmp = Path(tempfile.gettempdir())
        for path in [Path(self.s.workdir)] if self.s.workdir else []:
            shutil.rmtree(path, ignore_errors=True)
        for path in tmp.glob(f"stdbc-{self.run_id}-lab-*"):  # a workdir made just before an interrupt
            shutil.rmtree(path, ignore_errors=True)

    def _labelled_containers(self) -> list[str]:
        try:
            found = docker("ps", "-aq", "--filter", f"label={LABEL_RUN}={self.run_id}", check=False, timeout=30)
        except LabError:
            return []
        return found.stdout.decode().split()

    def _labelled_networks(self) -> set[str]:
        try:
            names = set(docker("network", "ls", "--format", "{{.Name}}", "--filter",
                               f"label={LABEL_RUN}={self.run_id}", check=False, timeout=30).stdout.decode().split())
            if self.s.network and docker("network", "inspect", self.s.network, check=False,
                                         timeout=30).returncode == 0:
                names.add(self.s.network)
        except LabError:
            return set()
        return names

    def _remove_containers(self, names: list[str]) -> list[str]:
        """Remove `names` and every container labelled with this run; returns what was found."""
        names = sorted(set(names + self._labelled_containers()))
        if names:
            try:
                docker("rm", "-f", "-v", *names, check=False, timeout=120)
            except LabError:
                pass
        return names

    def _remove_networks(self) -> bool:
        """The lab's network by name and by label (a `network create` interrupted after the engine made it).
        True when none is left."""
        names = self._labelled_networks()
        if not names:
            return True
        try:
            return docker("network", "rm", *sorted(names), check=False, timeout=60).returncode == 0
        except LabError:
            return False


def in_parallel(calls: list[Callable[[], Any]], track: list[Future[Any]] | None = None) -> None:
    """Run `calls` concurrently; re-raise the first failure after all have finished. The futures are added to
    `track` first: an interrupt (raised in the main thread only) leaves the workers running, and the lab's
    down() waits for them."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        futures = [pool.submit(call) for call in calls]
        if track is not None:
            track.extend(futures)
    for future in futures:
        future.result()


def host_nameservers() -> list[str]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
