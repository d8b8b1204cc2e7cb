"""Helpers for lab tests: what a run left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def leftovers(run_id: str) -> list[str]:
    """Every docker container/network, loop device and temp dir that still carries `run_id`."""
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
    return found


# marks of every vm-backend lab test module (`pytestmark = VM_LAB`)
VM_LAB = [
    pytest.mark.lab,
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the vm backend needs root (tap devices, image build)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "ssh")),
                       reason="needs qemu-system-x86, qemu-utils, debootstrap, openssh-client"),
    pytest.mark.skipif(os.environ.get("STDB_SKIP_VM") == "1", reason="STDB_SKIP_VM=1"),
]
