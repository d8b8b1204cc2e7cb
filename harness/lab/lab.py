"""One lab per run, on its own docker network, every resource labelled with the run id.

Hosts (all from the base image):
- target  (`stdb-target`, alias = the profile's domain): systemd as PID 1; the runbook is applied here.
          The data volume is a loop device attached as /dev/nvme1n1.
- client  the remote vantage point for route and TLS checks (never the target's loopback).
- mirror  answers as https://install.spacetimedb.com with the lab CA (stand-in runs only).
- acme    Pebble (ACME CA) + pebble-challtestsrv as its DNS, which answers every name with the target.

Adaptations (declared in the report): the target trusts the lab CA system-wide; certbot's prompts are
answered by /etc/letsencrypt/cli.ini pointing at Pebble; DNS for the domain and the install URL come
from the lab; the EBS data volume is a loop device.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
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
from harness.targets.docker_target import DockerTarget

Progress = Callable[[str], None]

MIRROR_HOST = "install.spacetimedb.com"
ACME_HOST = "acme.lab.test"
TARGET_HOSTNAME = "stdb-target"
RECOVERY_HOSTNAME = "stdb-recovery"
DATA_DEVICE = "/dev/nvme1n1"
DATA_SIZE_MB = 1024
CA_TIMEOUT = 300.0  # update-ca-certificates rehashes every root: minutes in a TCG guest on a loaded host
DOWN_WAIT = 120.0  # seconds down() waits for an interrupted up()'s workers (their hosts are gone by then)
READY_TIMEOUT = 60.0  # seconds the lab's services (mirror, Pebble, the target's sshd) get to listen after start
HOST_OCTETS = {"target": 10, "client": 20, "mirror": 30, "acme": 40, "operator": 50, "recovery": 60}
OPERATOR_PROJECT = "/home/ubuntu/spacetime-module"
LAB_CA_ON_TARGET = "/usr/local/share/ca-certificates/stdb-conformance-lab-ca.crt"
SYSTEMD_FLAGS = ["--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
                 "--security-opt", "apparmor=unconfined", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                 "--tmpfs", "/run", "--tmpfs", "/run/lock", "-e", "container=docker", "--stop-signal", "SIGRTMIN+3"]


@dataclass
class LabOptions:
    mirror_dir: Path | None = None  # stand-in release tree; None = the real install URL
    image: str = ""
    domain: str = "stdb.lab.test"
    backend: str = "docker"
    data_volume: bool = True
    acme: bool = True
    operator: bool = True


@dataclass
class Adaptation:
    id: str
    summary: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "summary": self.summary, "detail": self.detail}


@dataclass
class LabState:
    run_id: str
    network: str = ""
    subnet: str = ""
    workdir: str = ""
    containers: dict[str, str] = field(default_factory=dict)  # role -> container name
    ips: dict[str, str] = field(default_factory=dict)
    loop_device: str = ""
    domain: str = ""
    acme_directory: str = ""
    backend: str = "docker"
    vm: dict[str, Any] = field(default_factory=dict)
    certbot_configured: bool = False
    extra_loop_devices: list[str] = field(default_factory=list)
    recovery_vm: dict[str, Any] = field(default_factory=dict)  # vm: the restore drill's recovery host
    readiness: dict[str, Any] = field(default_factory=dict)  # bounded waits for the lab's services (and bounds)


class Lab:
    def __init__(self, run_id: str, options: LabOptions) -> None:
        self.run_id = run_id
        self.options = options
        self.s = LabState(run_id=run_id, domain=options.domain, backend=options.backend)
        self.adaptations: list[Adaptation] = []
        self.ca: LabCA | None = None
        self._vm: Any = None
        self._recovery_vm: Any = None
        self._attach_before: int | None = None  # vm: plan index of the step right after the console attach
        self._closing = threading.Event()  # set by down(): workers still bringing hosts up start nothing new
        self._inflight: list[Future[Any]] = []  # up()'s parallel work, waited for by down() (an interrupted up)

    def follow_plan(self, plan: Any) -> None:
        """vm backend: the runbook's console step that creates and attaches the data volume is performed by
        the backend (a new disk hot-plugged as /dev/nvme1n1) right before the next step that runs."""
        seen_attach = False
        for step in plan.steps:
            if step.phase != "apply":
                continue
            if step.kind.value == "console" and re.search(r"\battach", step.raw or "", re.I) \
                    and re.search(r"volume", step.raw or "", re.I):
                seen_attach = True
            elif seen_attach and step.runs:
                self._attach_before = step.index
                return

    # ---- re-attach from another process (the suites run in pytest subprocesses) -------------------
    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Lab:
        lab = cls(state["run_id"], LabOptions(domain=state.get("domain", ""), backend=state.get("backend", "docker")))
        lab.s = LabState(**state)
        return lab

    def state(self) -> dict[str, Any]:
        return dict(self.s.__dict__)

    @property
    def domain(self) -> str:
        return self.s.domain

    @property
    def workdir(self) -> Path:
        return Path(self.s.workdir)

    @property
    def target(self) -> Any:
        if self.s.backend == "vm":
            if self._vm is None:
                from harness.vm.lab_target import VmHandle

                self._vm = VmHandle.from_state(self.s.vm)
            return self._vm.target
        return DockerTarget(self.s.containers["target"], TARGET_HOSTNAME, self.s.ips["target"])

    @property
    def client(self) -> DockerTarget:
        return DockerTarget(self.s.containers["client"], "client", self.s.ips["client"])

    def host(self, role: str) -> DockerTarget:
        return DockerTarget(self.s.containers[role], role, self.s.ips[role])

    @property
    def ca_cert_path(self) -> Path:
        return self.workdir / "ca" / "lab-ca.crt"

    def labels(self, role: str) -> list[str]:
        return ["--label", f"{LABEL_RUN}={self.run_id}", "--label", f"{LABEL_PID}={os.getpid()}",
                "--label", f"{LABEL_BOOT}={runs.host_boot_id()}",
                "--label", f"{LABEL_START}={runs.process_start(os.getpid())}", "--label", f"{LABEL_ROLE}={role}"]

    # ---- up ----------------------------------------------------------------------------------------
    def up(self, progress: Progress = print) -> None:
        require_engine()
        from harness.lab.cleanup import sweep_dead

        swept = sweep_dead(progress=lambda _m: None)
        if swept:
            progress(f"removed leftovers of dead runs: {', '.join(swept)}")
        runs.register(self.run_id)
        self.s.workdir = tempfile.mkdtemp(prefix=f"stdbc-{self.run_id}-lab-")
        self._network(progress)
        self._certificates()
        if self.options.data_volume and self.options.backend == "docker":
            self._loop_device(progress)
        # the hosts start concurrently (each `docker run` is ~0.35 s), then target and operator are prepared
        # side by side (update-ca-certificates and the CLI install dominate)
        starters: list[Callable[[Progress], None]] = []
        if self.options.mirror_dir is not None:
            starters.append(self._mirror)
        if self.options.acme:
            starters.append(self._acme)
        starters.append(self._client)
        if self.options.operator:
            starters.append(self._operator_host)
        if self.options.backend != "vm":
            starters.append(self._target)
        _in_parallel([functools.partial(f, progress) for f in starters], track=self._inflight)
        if self.options.backend == "vm":
            self._vm_target(progress)
        self._wait_services(progress)
        preparers = [lambda: self._prepare_target(progress)]
        if self.options.operator:
            preparers.append(lambda: self._prepare_operator(progress))
        _in_parallel(preparers, track=self._inflight)

    def _wait_services(self, progress: Progress) -> None:
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
        if self.s.backend == "docker" and "target" in self.s.containers:
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

    def _certificates(self) -> None:
        self.ca = LabCA(self.workdir / "ca", self.run_id)
        self.ca.issue("mirror", [MIRROR_HOST], [self.s.ips["mirror"]])
        self.ca.issue("acme", [ACME_HOST, f"stdbc-{self.run_id}-acme", "localhost"], [self.s.ips["acme"]])
        os.chmod(self.workdir, 0o755)

    def _loop_device(self, progress: Progress) -> None:
        backing = self.workdir / "data-volume.img"
        with open(backing, "wb") as handle:
            handle.truncate(DATA_SIZE_MB * 1024 * 1024)
        proc = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            raise LabError(f"cannot attach a loop device for the data volume: {proc.stderr.strip()}",
                           hint="the docker backend needs root and loop devices (modprobe loop)")
        self.s.loop_device = proc.stdout.strip()
        progress(f"data volume: {DATA_SIZE_MB} MiB loop device {self.s.loop_device} -> {DATA_DEVICE} on the target")
        self.adaptations.append(Adaptation(
            "lab.data-volume", f"the EBS data volume is a {DATA_SIZE_MB} MiB loop device seen as {DATA_DEVICE}",
            f"{self.s.loop_device} backed by {backing}"))

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
        self._run_container("mirror", [
            "--network-alias", MIRROR_HOST, "--hostname", "mirror",
            "-v", f"{self.options.mirror_dir}:/srv/mirror:ro", "-v", f"{script}:/lab/mirror_server.py:ro",
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

    def _client(self, progress: Progress) -> None:
        agents = Path(__file__).resolve().parent.parent / "agents"
        self._run_container("client", [
            "--hostname", "client", "--add-host", f"{self.domain}:{self.s.ips['target']}",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", "-v", f"{agents}:/lab/agents:ro",
            self.options.image, "sleep", "infinity"], progress)

    def _operator_host(self, progress: Progress) -> None:
        """The operator's own machine (Step 5 "on your local machine"): a separate lab host."""
        agents = Path(__file__).resolve().parent.parent / "agents"
        self._run_container("operator", [
            "--hostname", "operator", "--add-host", f"{self.domain}:{self.s.ips['target']}",
            "--add-host", f"{TARGET_HOSTNAME}:{self.s.ips['target']}",
            "-v", f"{self.workdir / 'ca'}:/lab/ca:ro", "-v", f"{agents}:/lab/agents:ro",
            self.options.image, "sleep", "infinity"], progress)

    def _prepare_operator(self, progress: Progress) -> None:
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
        key = operator.run("mkdir -p ~/.ssh && chmod 700 ~/.ssh && ssh-keygen -q -t ed25519 -N '' "
                           "-f ~/.ssh/id_ed25519 -C stdb-conformance-operator && "
                           "printf 'Host *\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  ConnectTimeout 10\n'"
                           " > ~/.ssh/config && cat ~/.ssh/id_ed25519.pub", user="ubuntu", timeout=60)
        if not key.ok:
            raise LabError(f"operator: cannot make an ssh key: {key.stderr.strip()[-200:]}")
        target = self.target
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
            "ed25519 key made per run; ssh config: StrictHostKeyChecking accept-new, BatchMode yes"))
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

    def _target(self, progress: Progress) -> None:
        argv = ["--hostname", TARGET_HOSTNAME, "--network-alias", self.domain, *SYSTEMD_FLAGS]
        if self.s.loop_device:
            argv += ["--device", f"{self.s.loop_device}:{DATA_DEVICE}"]
        self._run_container("target", [*argv, self.options.image, "/lib/systemd/systemd"], progress)
        target = self.target
        state = target.wait_running(timeout=90)
        progress(f"target {self.s.containers['target']} ({self.s.ips['target']}, {self.domain}): systemd {state}")
        sshd = target.run("systemctl is-active ssh.socket ssh.service", timeout=15)
        if "active" not in sshd.stdout.split():
            # images built before the ssh-hostkeys ordering fix (harness/lab/image.py) lose ssh.socket's start
            # job at some boots: start it, and say so
            started = target.run("systemctl start ssh.socket", timeout=30)
            self.s.readiness["target ssh.socket"] = {"after_boot": " ".join(sshd.stdout.split()),
                                                     "started_by_kit": started.ok}
            self.adaptations.append(Adaptation(
                "lab.ssh-socket-started", "ssh.socket was not active after the target booted; the kit started it",
                f"systemctl is-active ssh.socket ssh.service: {' '.join(sshd.stdout.split())}; "
                f"systemctl start ssh.socket: exit {started.exit_status}"))
            progress(f"target: ssh.socket was not active after boot; started it (exit {started.exit_status})")

    def _lab_names(self) -> dict[str, str]:
        hosts = {self.domain: self.s.ips["target"], TARGET_HOSTNAME: self.s.ips["target"]}
        if "mirror" in self.s.containers:
            hosts[MIRROR_HOST] = self.s.ips["mirror"]
        if "acme" in self.s.containers:
            hosts[ACME_HOST] = self.s.ips["acme"]
        return hosts

    def _start_vm(self, role: str, hostname: str, progress: Progress) -> Any:
        from harness.vm.lab_target import start_vm_target

        network_id = docker_text("network", "inspect", "-f", "{{.Id}}", self.s.network)
        return start_vm_target(
            run_id=self.run_id, workdir=self.workdir, bridge=f"br-{network_id[:12]}", ip=self.s.ips[role],
            prefix=24, gateway=self.s.subnet.rsplit(".", 1)[0] + ".1", hostname=hostname,
            hosts=self._lab_names(), nameservers=_host_nameservers(), ca_pem=self.ca_cert_path.read_bytes(),
            files={}, progress=progress, name=role)

    def _vm_target(self, progress: Progress) -> None:
        self._vm = self._start_vm("target", TARGET_HOSTNAME, progress)
        self.s.vm = self._vm.state()

    def _prepare_target(self, progress: Progress) -> None:
        """The declared adaptations on the target: trust the lab CA; answer certbot through cli.ini."""
        target = self.target
        target.write_file(LAB_CA_ON_TARGET, self.ca_cert_path.read_bytes())
        res = target.run("update-ca-certificates", timeout=CA_TIMEOUT)
        if not res.ok:
            why = (f"timed out after {CA_TIMEOUT:.0f} s" if res.timed_out
                   else f"exit {res.exit_status}: {(res.stderr or res.stdout).strip()[-200:]}")
            raise LabError(f"cannot install the lab CA on the target (update-ca-certificates {why})")
        self.adaptations.append(Adaptation(
            "lab.trust-lab-ca", "the target trusts the lab CA system-wide",
            f"{LAB_CA_ON_TARGET} + update-ca-certificates (mirror and Pebble API certificates chain to it)"))
        if self.options.acme:
            self.adaptations.append(Adaptation(
                "lab.certbot-cli-ini", "certbot's questions are answered by /etc/letsencrypt/cli.ini",
                f"written just before the first certbot command (after the runbook installed certbot, so the "
                f"package's own conffile is kept): {'; '.join(self.certbot_settings())}"))
        progress("target prepared: lab CA trusted")

    def certbot_settings(self) -> list[str]:
        return [f"server = {self.s.acme_directory}", "agree-tos = true", "register-unsafely-without-email = true",
                "non-interactive = true", "no-eff-email = true"]

    def before_step(self, step: Any, target: Any) -> str | None:
        """Declared adaptations right before a step: on the vm backend, the console step's volume is created
        and attached before the step after it; before the runbook first runs certbot itself, the lab's answers
        are added to certbot's own config file (appended, the package's lines are kept)."""
        if self._attach_before is not None and step.index == self._attach_before and self.s.backend == "vm":
            return self.attach_new_data_volume()
        command = getattr(step, "command", "") or ""
        if not self.s.acme_directory or self.s.certbot_configured:
            return None
        if not re.search(r"(^|[;&|]\s*|sudo\s+)certbot\b", command) or re.search(r"\bapt(-get)?\b", command):
            return None
        block = "\n# stdb-conformance lab adaptation: answer certbot's questions, use the lab's ACME CA\n"
        block += "\n".join(self.certbot_settings()) + "\n"
        res = target.run(f"mkdir -p /etc/letsencrypt && printf '%s' {shlex.quote(block)} >> /etc/letsencrypt/cli.ini",
                         timeout=30)
        if not res.ok:
            raise LabError(f"cannot write /etc/letsencrypt/cli.ini on the target: {res.stderr.strip()[-200:]}")
        self.s.certbot_configured = True
        return "appended the lab's ACME settings to /etc/letsencrypt/cli.ini: " + "; ".join(self.certbot_settings())

    # ---- volumes and a recovery host (restore drills) -----------------------------------------------
    @property
    def vm(self) -> Any:
        """The VmHandle of the vm backend's target (owning process only for QMP work)."""
        if self.s.backend != "vm":
            raise LabError("this lab's target is not a VM")
        self.target  # noqa: B018 - attaches from state when needed
        return self._vm

    def attach_new_data_volume(self) -> str:
        """vm: the console steps "create a gp3 volume, attach it" done by the backend: a new empty disk
        hot-plugged into the running target as /dev/nvme1n1."""
        handle = self.vm
        disk = handle.new_volume("data-volume")
        how = handle.vm.attach_data_disk(disk)
        self.s.vm = handle.state()
        self.adaptations.append(Adaptation(
            "lab.vm-data-volume", "the console steps (create a gp3 volume, attach it) are performed by the vm "
            "backend: a new empty disk attached to the running target as /dev/nvme1n1",
            f"{disk.name}, virtual size {_virtual_size(disk)} (the runbook's 200 GB is checked in the AWS plan), "
            f"attached by {how}; NVMe serial stdbc-data"))
        return f"created a new volume {disk.name} and attached it to the target VM ({how}) as /dev/nvme1n1"

    def data_volume_file(self) -> Path:
        return self.workdir / "data-volume.img"

    def snapshot_data_volume(self, dest: Path, *, freeze: str = "/stdb") -> dict[str, Any]:
        """Point-in-time copy of the target's data volume, with no service stop. On docker the file system
        mounted at `freeze` is frozen (fsfreeze) for the copy: file-system consistent, which is stronger
        than an EBS snapshot's crash consistency. Returns what was done, for the report."""
        target = self.target
        frozen = target.run(f"fsfreeze --freeze {shlex.quote(freeze)}", timeout=60) if freeze else None
        try:
            proc = subprocess.run(["cp", "--sparse=always", str(self.data_volume_file()), str(dest)],
                                  capture_output=True, text=True, timeout=600)
        finally:
            if frozen is not None and frozen.ok:
                target.run(f"fsfreeze --unfreeze {shlex.quote(freeze)}", timeout=60)
        if proc.returncode != 0:
            raise LabError(f"cannot copy the data volume: {proc.stderr.strip()}")
        return {"method": "fsfreeze + copy of the volume's backing file" if frozen is not None and frozen.ok
                else "copy of the volume's backing file (no freeze: crash-consistent at best)",
                "consistency": "filesystem-frozen" if frozen is not None and frozen.ok else "unfrozen-copy",
                "source": str(self.data_volume_file()), "snapshot": str(dest)}

    def add_recovery_host(self, volume_file: Path | None, progress: Progress = print) -> DockerTarget:
        """A second, fresh Ubuntu host on the lab network (like the target before the runbook ran), with
        `volume_file` (e.g. a snapshot copy) attached as /dev/nvme1n1."""
        if "recovery" in self.s.containers:
            raise LabError("this lab already has a recovery host")
        argv = ["--hostname", "stdb-recovery", *SYSTEMD_FLAGS]
        if volume_file is not None:
            proc = subprocess.run(["losetup", "--find", "--show", str(volume_file)], capture_output=True,
                                  text=True, timeout=30)
            if proc.returncode != 0:
                raise LabError(f"cannot attach the restored volume: {proc.stderr.strip()}")
            self.s.extra_loop_devices.append(proc.stdout.strip())
            argv += ["--device", f"{proc.stdout.strip()}:{DATA_DEVICE}"]
        image = docker_text("inspect", "-f", "{{.Config.Image}}", self.s.containers["client"])
        self._run_container("recovery", [*argv, image, "/lib/systemd/systemd"], progress)
        host = self.host("recovery")
        host.hostname = "stdb-recovery"
        host.wait_running(timeout=90)
        host.write_file(LAB_CA_ON_TARGET, self.ca_cert_path.read_bytes())
        host.run("update-ca-certificates", timeout=60)
        return host

    def add_recovery_vm(self, progress: Progress = print) -> Any:
        """vm: a second, fresh Ubuntu 24.04 VM from the same image on the lab network (the restore drill's
        recovery host, like the target before the runbook ran; lab names and lab CA as on the target).
        Owned by this process; released by `down()` and by the dead-run sweep (its VM record)."""
        if self.s.backend != "vm":
            raise LabError("a recovery VM needs the vm backend")
        if self._recovery_vm is not None:
            raise LabError("this lab already has a recovery VM")
        self._recovery_vm = self._start_vm("recovery", RECOVERY_HOSTNAME, progress)
        self.s.recovery_vm = self._recovery_vm.state()
        return self._recovery_vm

    def release_recovery_vm(self) -> None:
        """Power the recovery VM off and remove its resources (its disks live in the lab's workdir)."""
        if self._recovery_vm is not None:
            self._recovery_vm.down()
            self._recovery_vm = None
        elif self.s.recovery_vm:
            from harness.vm.lab_target import VmHandle

            VmHandle.from_state(self.s.recovery_vm).down()
        self.s.recovery_vm = {}

    # ---- down --------------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove everything this lab created. Idempotent; never raises for already-gone resources."""
        try:
            self.release_recovery_vm()
        except Exception:  # noqa: BLE001 - the sweep below still runs
            pass
        if self.s.backend == "vm" and (self._vm is not None or self.s.vm):
            try:
                if self._vm is None:
                    from harness.vm.lab_target import VmHandle

                    self._vm = VmHandle.from_state(self.s.vm)
                self._vm.down()
            except Exception:  # noqa: BLE001 - the sweep below still runs
                pass
        # An interrupted up() may still have workers starting hosts: they start nothing new from now on, the
        # containers are removed (their docker exec calls then fail fast), the workers are waited for (bounded)
        # and whatever they created meanwhile is removed by a second sweep by label.
        self._closing.set()
        self._remove_containers(list(self.s.containers.values()))
        if self._inflight:
            from concurrent.futures import wait

            wait(self._inflight, timeout=DOWN_WAIT)
            self._remove_containers([])
        self._remove_networks()
        self._detach_loop_devices()
        tmp = Path(tempfile.gettempdir())
        for path in [Path(self.s.workdir)] if self.s.workdir else []:
            shutil.rmtree(path, ignore_errors=True)
        for path in tmp.glob(f"stdbc-{self.run_id}-lab-*"):  # a workdir made just before an interrupt
            shutil.rmtree(path, ignore_errors=True)
        runs.unregister(self.run_id)

    def _remove_containers(self, names: list[str]) -> None:
        try:
            found = docker("ps", "-aq", "--filter", f"label={LABEL_RUN}={self.run_id}", check=False, timeout=30)
            names = names + found.stdout.decode().split()
            if names:
                docker("rm", "-f", "-v", *sorted(set(names)), check=False, timeout=120)
        except LabError:
            pass

    def _remove_networks(self) -> None:
        """The lab's network by name and by label (a `network create` interrupted after the engine made it)."""
        for _attempt in range(5):  # endpoints of just-removed containers can linger a moment
            try:
                names = set(docker("network", "ls", "--format", "{{.Name}}", "--filter",
                                   f"label={LABEL_RUN}={self.run_id}", check=False, timeout=30).stdout.decode().split())
                if self.s.network and docker("network", "inspect", self.s.network, check=False,
                                             timeout=30).returncode == 0:
                    names.add(self.s.network)
                if not names or docker("network", "rm", *sorted(names), check=False, timeout=60).returncode == 0:
                    return
            except LabError:
                return
            time.sleep(1)

    def _detach_loop_devices(self) -> None:
        """The loop devices this lab attached: recorded ones, and any whose backing file is one of this run's
        (a `losetup --find --show` interrupted before its answer was recorded)."""
        devices = {d for d in [self.s.loop_device, *self.s.extra_loop_devices] if d}
        try:
            proc = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, timeout=30)
            for dev in (json.loads(proc.stdout).get("loopdevices", []) if proc.stdout.strip() else []):
                if f"/stdbc-{self.run_id}-" in (dev.get("back-file") or ""):
                    devices.add(dev["name"])
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        for device in sorted(devices):
            try:
                subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass


def _in_parallel(calls: list[Callable[[], Any]], track: list[Future[Any]] | None = None) -> None:
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


def _virtual_size(disk: Path) -> str:
    proc = subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True, text=True,
                          timeout=30)
    try:
        size = json.loads(proc.stdout)["virtual-size"]
    except (ValueError, KeyError):
        return "unknown"
    return f"{size / 2**30:.0f} GiB"


def _host_nameservers() -> list[str]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
