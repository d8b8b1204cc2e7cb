"""A thin, bounded wrapper over the docker CLI; every failure becomes a one-line LabError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from harness.errors import LabError

LABEL_RUN = "stdb-conformance.run-id"
LABEL_PID = "stdb-conformance.pid"
LABEL_BOOT = "stdb-conformance.host-boot"
LABEL_START = "stdb-conformance.pid-start"  # the owner's start time: tells its pid from a later reuse
LABEL_ROLE = "stdb-conformance.role"


def docker(*args: str, timeout: float = 120.0, check: bool = True, input: bytes | None = None,
           what: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run `docker ARGS` with a time bound. Raises LabError (one line) when it fails and `check` is set."""
    if shutil.which("docker") is None:
        raise LabError("the docker client is not installed", hint="run: bash scripts/bootstrap.sh")
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"docker {args[0]} timed out after {timeout:.0f}s{': ' + what if what else ''}") from exc
    if check and proc.returncode != 0:
        message = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        detail = message[-1] if message else f"exit {proc.returncode}"
        raise LabError(f"docker {args[0]} failed{' (' + what + ')' if what else ''}: {detail}")
    return proc


def docker_text(*args: str, timeout: float = 120.0, what: str = "") -> str:
    return docker(*args, timeout=timeout, what=what).stdout.decode(errors="replace").strip()


def require_engine() -> None:
    """Fail with a one-line fix when the docker engine is not reachable."""
    if shutil.which("docker") is None:
        raise LabError("the docker client is not installed", hint="run: bash scripts/bootstrap.sh")
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise LabError("the docker engine did not answer `docker info` within 30s",
                       hint="check dockerd (bash scripts/bootstrap.sh starts it) and DOCKER_HOST") from None
    if proc.returncode != 0:
        said = [line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise LabError("the docker engine is not running" + (f": {said[-1].strip()[:200]}" if said else ""),
                       hint="start it (bash scripts/bootstrap.sh starts dockerd) and run again"
                            + (f"; DOCKER_HOST={os.environ['DOCKER_HOST']}" if os.environ.get("DOCKER_HOST") else ""))


def inspect(kind: str, name: str) -> dict[str, Any] | None:
    proc = docker(kind, "inspect", name, check=False, timeout=30)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or b"[]")
    return data[0] if data else None


def labelled(kind: str, label: str = LABEL_RUN) -> list[dict[str, str]]:
    """Containers or networks carrying `label`: [{name, run_id, pid, boot}]."""
    if kind == "container":
        out = docker_text("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}", timeout=30)
    else:
        out = docker_text("network", "ls", "--filter", f"label={label}", "--format", "{{.Name}}", timeout=30)
    found = []
    for name in out.splitlines():
        data = inspect(kind if kind == "network" else "container", name) or {}
        labels = (data.get("Config") or {}).get("Labels") if kind == "container" else data.get("Labels")
        labels = labels or {}
        found.append({"name": name, "run_id": labels.get(LABEL_RUN, ""), "pid": labels.get(LABEL_PID, ""),
                      "boot": labels.get(LABEL_BOOT, ""), "start": labels.get(LABEL_START, "")})
    return found
