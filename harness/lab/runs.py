"""Which runs are alive: every run registers its owner process, so a later run can sweep dead ones."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "stdbc-runs"


def host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return ""


def register(run_id: str) -> Path:
    """Record that this process owns `run_id` (pid, process start time, host boot id)."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    path = REGISTRY / f"{run_id}.json"
    pid = os.getpid()
    path.write_text(json.dumps({"run_id": run_id, "pid": pid, "start": _start_time(pid), "boot": host_boot_id()}))
    return path


def unregister(run_id: str) -> None:
    (REGISTRY / f"{run_id}.json").unlink(missing_ok=True)


def owner(run_id: str) -> dict[str, object] | None:
    try:
        return json.loads((REGISTRY / f"{run_id}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def alive(run_id: str, pid: str | int | None = None, boot: str | None = None) -> bool:
    """True when the process that owns `run_id` still runs on this host boot."""
    record = owner(run_id)
    if record is not None:
        pid, boot = record.get("pid"), str(record.get("boot", ""))
        start = str(record.get("start", ""))
    else:
        start = ""
    if not pid:
        return False
    if boot and boot != host_boot_id():
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return not start or _start_time(int(pid)) == start


def registered_ids() -> list[str]:
    if not REGISTRY.is_dir():
        return []
    return [p.stem for p in REGISTRY.glob("*.json")]
