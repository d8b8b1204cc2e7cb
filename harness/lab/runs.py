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


def process_start(pid: int) -> str:
    """The start time of `pid` (clock ticks since boot; empty when it is gone)."""
    return _start_time(pid)


def register(run_id: str) -> Path:
    """Record that this process owns `run_id` (pid, process start time, host boot id)."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    path = REGISTRY / f"{run_id}.json"
    pid = os.getpid()
    previous = owner(run_id) or {}
    helpers = _helpers(previous) if previous.get("pid") == pid else []
    _write(path, {"run_id": run_id, "pid": pid, "start": _start_time(pid), "boot": host_boot_id(),
                  "helpers": helpers})
    return path


def _write(path: Path, record: dict[str, object]) -> None:
    """Atomically: a concurrent reader (another run's sweep) sees the old record or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _helpers(record: dict[str, object]) -> list[dict[str, object]]:
    found = record.get("helpers")
    return [h for h in found if isinstance(h, dict)] if isinstance(found, list) else []


def add_helper(run_id: str, pid: int, what: str) -> None:
    """Record a helper process this run started on the host (e.g. the moto server, in a session of its own):
    the dead-run sweep stops it when the run died without stopping it (SIGKILL, crash)."""
    record = owner(run_id)
    if record is None:
        return
    helpers = _helpers(record)
    helpers.append({"pid": pid, "start": _start_time(pid), "what": what})
    record["helpers"] = helpers
    _write(REGISTRY / f"{run_id}.json", record)


def stop_helpers(run_id: str) -> list[str]:
    """Kill the recorded helper processes of `run_id` that still run (same pid AND start time). For dead runs."""
    import signal

    record = owner(run_id) or {}
    stopped = []
    for helper in _helpers(record):
        try:
            pid = int(str(helper.get("pid", 0)))
        except ValueError:
            continue
        if pid > 0 and helper.get("start") and _start_time(pid) == helper.get("start"):
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            stopped.append(f"helper process {pid} ({helper.get('what', '?')})")
    return stopped


def keep(run_id: str, lab: dict[str, object]) -> None:
    """`lab up`: the run's lab outlives this process (until `lab down RUN_ID`, `clean --all` or a reboot of this
    machine); `lab` is what `lab list` shows and `lab down` needs."""
    record = owner(run_id) or {"run_id": run_id, "pid": os.getpid(), "start": _start_time(os.getpid()),
                                "boot": host_boot_id(), "helpers": []}
    record["kept"] = True
    record["lab"] = lab
    _write(REGISTRY / f"{run_id}.json", record)


def kept() -> list[dict[str, object]]:
    """The records of labs kept up on this machine boot."""
    found = []
    for run_id in registered_ids():
        record = owner(run_id)
        if record and record.get("kept") and record.get("boot") == host_boot_id():
            found.append(record)
    return found


def unregister(run_id: str) -> None:
    (REGISTRY / f"{run_id}.json").unlink(missing_ok=True)


def owner(run_id: str) -> dict[str, object] | None:
    try:
        record = json.loads((REGISTRY / f"{run_id}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def alive(run_id: str, pid: str | int | None = None, boot: str | None = None, start: str | None = None) -> bool:
    """True when the process that owns `run_id` still runs on this host boot (the registry's record, else the
    given pid, boot id and process start time, e.g. from a resource's labels)."""
    record = owner(run_id)
    if record is not None and record.get("kept"):
        return record.get("boot") == host_boot_id()  # a kept lab lives until `lab down` or a reboot
    if record is not None:
        recorded = record.get("pid")
        pid = recorded if isinstance(recorded, str | int) else None
        boot = str(record.get("boot", ""))
        start = str(record.get("start", ""))
    else:
        start = start or ""
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
