"""Remove lab resources of dead runs (or of every run with --all): containers, networks, loop
devices, temp dirs and registry entries, all found by the run id they carry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness.lab import runs
from harness.lab.docker import docker, labelled

Progress = Callable[[str], None]
_RUN_DIR = re.compile(r"^stdbc-([0-9a-f]{8})-")


def _dead(run_id: str, pid: str = "", boot: str = "", start: str = "") -> bool:
    """A run is dead when its owner process is gone. A run id nobody registered and no label describes
    (e.g. another tool's temp dir) is never judged dead: only --all removes it."""
    if runs.owner(run_id) is None and not pid:
        return False
    return not runs.alive(run_id, pid or None, boot or None, start or None)


def sweep_dead(progress: Progress = print, all_runs: bool = False) -> list[str]:
    removed: list[str] = []
    # VMs first: their markers live in the temp dirs removed below (qemu must die before its dir goes)
    from harness.vm.resources import cleanup_dead_vm_resources

    removed += cleanup_dead_vm_resources(all_runs=all_runs)
    try:
        docker_ok = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):  # no docker client, or an engine that does not answer
        docker_ok = False
    if docker_ok:
        for item in labelled("container"):
            if all_runs or _dead(item["run_id"], item["pid"], item["boot"], item.get("start", "")):
                docker("rm", "-f", "-v", item["name"], check=False, timeout=60)
                removed.append(f"container {item['name']}")
        for item in labelled("network"):
            if all_runs or _dead(item["run_id"], item["pid"], item["boot"], item.get("start", "")):
                docker("network", "rm", item["name"], check=False, timeout=60)
                removed.append(f"network {item['name']}")
    removed += _loop_devices(all_runs)
    tmp = Path(tempfile.gettempdir())
    for path in sorted(tmp.glob("stdbc-*")):
        match = _RUN_DIR.match(path.name)
        if match and path.is_dir() and (all_runs or _dead(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"dir {path}")
    for run_id in runs.registered_ids():
        if all_runs or _dead(run_id):
            removed += runs.stop_helpers(run_id)
            runs.unregister(run_id)
    for line in removed:
        progress(f"removed {line}")
    return removed


def _loop_devices(all_runs: bool) -> list[str]:
    try:
        proc = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True, timeout=30)
        devices = json.loads(proc.stdout).get("loopdevices", []) if proc.returncode == 0 and proc.stdout.strip() \
            else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    removed = []
    for dev in devices:
        backing = dev.get("back-file") or ""
        match = re.search(r"/stdbc-([0-9a-f]{8})-", backing)
        if match and (all_runs or _dead(match.group(1))):
            subprocess.run(["losetup", "-d", dev["name"]], capture_output=True, timeout=30)
            removed.append(f"loop device {dev['name']} ({backing})")
    return removed


def clean(all_runs: bool = False, progress: Progress = print) -> list[str]:
    from harness.lab.docker import require_engine

    try:
        require_engine()
    except Exception as exc:  # noqa: BLE001 - still clean loop devices and dirs
        progress(f"note: {exc}; cleaning what does not need docker")
    removed = sweep_dead(progress=progress, all_runs=all_runs)
    if not removed:
        progress("nothing to clean")
    return removed
