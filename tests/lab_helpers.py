"""Helpers for lab tests: what a run left behind."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path


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
