"""Helpers for lab tests: a run started in the background and watched, and what a run left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.lab import procs

REPO = Path(__file__).resolve().parent.parent
SERVICE_ONLY = REPO / "tests" / "profiles" / "service-only.toml"


class RunWatch:
    """The processes below a run's pid, sampled while it runs, with the TCP ports each listened on: a process
    the run started that is still alive after the run ended (same pid AND start time) is a leftover, and so is
    any port it listens on (the kit's helper servers: the moto server, ...)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (start time, command line)
        self.ports: dict[int, set[int]] = {}

    def sample(self) -> None:
        for pid, start in procs.descendants(self.pid).items():
            if pid not in self.seen:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                self.seen[pid] = (start, cmd.strip()[:160])
            self.ports.setdefault(pid, set()).update(procs.listening_ports(pid))

    def listened(self) -> set[int]:
        return {port for ports in self.ports.values() for port in ports}

    def left(self, grace: float = 10.0) -> list[str]:
        """The processes still running (given `grace` seconds to finish exiting), with their listening ports."""
        deadline = time.monotonic() + grace
        while True:
            alive = [(pid, cmd) for pid, (start, cmd) in sorted(self.seen.items())
                     if start and procs.start_time(pid) == start]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        found = []
        for pid, cmd in alive:
            ports = sorted(procs.listening_ports(pid))
            found.append(f"process {pid} still running{f' listening on {ports}' if ports else ''}: {cmd}")
        return found


class LabRun:
    """`stdb-conformance run` in the background: its merged output read line by line by a thread, its process
    tree sampled by another (RunWatch), until it ends."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.watch = RunWatch(self.proc.pid)
        self.lines: list[str] = []
        self.run_id = ""
        self._done = False  # the reader saw the end of the output
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._new:
                if line.startswith("run ") and not self.run_id:
                    self.run_id = line.split()[1].rstrip(":")
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._done = True
            self._new.notify_all()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self.watch.sample()
            time.sleep(0.3)

    def wait_for(self, text: str, timeout: float, *, after: int = 0) -> int:
        """Wait (bounded) for an output line starting with `text` (from line `after` on); its index."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for i in range(after, len(self.lines)):
                    if self.lines[i].startswith(text):
                        return i
                if self._done:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._new.wait(min(remaining, 1.0))
        self.kill()
        pytest.fail(f"no line starting with {text!r} within {timeout:.0f}s (run {self.run_id or '?'}); "
                    f"last lines:\n" + "\n".join(self.lines[-15:]))

    def send(self, sig: int) -> None:
        self.watch.sample()
        self.proc.send_signal(sig)

    def finish(self, timeout: float) -> int:
        """Wait (bounded) for the run to end; its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run did not end within {timeout:.0f}s; last lines:\n" + "\n".join(self.lines[-15:]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def start_run(runbook: Path, report_dir: Path, *, profile: Path | str = SERVICE_ONLY, suites: str = "service",
              env: dict[str, str] | None = None) -> LabRun:
    return LabRun(["--runbook", str(runbook), "--profile", str(profile), "--suites", suites,
                   "--report-dir", str(report_dir)], env=env)


def _processes_holding(run_id: str) -> list[str]:
    """Processes whose command line, working directory or open files name one of the run's temp paths (an
    orphan of the run still holding its files, e.g. a helper server logging into the run's folder)."""
    needle = f"stdbc-{run_id}-"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            paths = [cmd]
            paths.append(os.readlink(entry / "cwd"))
            paths += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(needle in p for p in paths):
            found.append(f"process {entry.name} holds the run's files: {cmd.strip()[:120]}")
    return found


def leftovers(run_id: str, watch: RunWatch | None = None) -> list[str]:
    """Every docker container/network, loop device, temp dir, tap device and qemu process that still carries
    `run_id`, every process holding the run's files, and (given the run's `watch`) every process the run started
    that still runs, with the ports it listens on."""
    found: list[str] = []
    for args in (["ps", "-a", "--format", "{{.Names}}"], ["network", "ls", "--format", "{{.Name}}"]):
        out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=30).stdout
        found += [f"docker {name}" for name in out.split() if run_id in name]
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=stdb-conformance.run-id={run_id}"],
                         capture_output=True, text=True, timeout=30).stdout
    found += [f"container {cid}" for cid in out.split()]
    losetup = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, timeout=30).stdout
    if losetup.strip():
        for dev in json.loads(losetup).get("loopdevices", []):
            if run_id in (dev.get("back-file") or ""):
                found.append(f"loop {dev['name']}")
    found += [f"dir {p}" for p in Path(tempfile.gettempdir()).glob(f"stdbc-{run_id}-*")]
    found += [f"tap {p.name}" for p in Path("/sys/class/net").glob(f"stdbc{run_id[:8]}t*")]
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, timeout=30).stdout
    found += [f"process {line.strip()[:120]}" for line in ps.splitlines()
              if f"stdbc-{run_id}-" in line and "qemu" in line]
    found += [p for p in _processes_holding(run_id) if not any(p.split()[1] in f for f in found)]
    if watch is not None:
        found += watch.left()
    registry = Path(tempfile.gettempdir()) / "stdbc-runs" / f"{run_id}.json"
    if registry.exists():
        found.append(f"registry {registry}")
    return found


def interrupted_cleanly(run: LabRun, report_dir: Path, *, timeout: float = 180) -> dict:
    """After a signal: the run ends with 130, its report says interrupted, and nothing of it is left."""
    code = run.finish(timeout)
    assert code == 130, f"exit {code}; last lines:\n" + "\n".join(run.lines[-20:])
    assert "Traceback" not in run.output, run.output[-3000:]
    report = json.loads((report_dir / "conformance.json").read_text())
    assert report["interrupted"] is True and report["verdict"] != "pass", (report["interrupted"], report["verdict"])
    assert report["run_id"] == run.run_id
    left = leftovers(run.run_id, run.watch)
    assert not left, left
    return report


SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


# marks of every vm-backend lab test module (`pytestmark = VM_LAB`)
VM_LAB = [
    pytest.mark.lab,
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the vm backend needs root (tap devices, image build)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "ssh")),
                       reason="needs qemu-system-x86, qemu-utils, debootstrap, openssh-client"),
    pytest.mark.skipif(os.environ.get("STDB_SKIP_VM") == "1", reason="STDB_SKIP_VM=1"),
]
