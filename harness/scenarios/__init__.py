"""Scenario generators: what the run does to the lab before a suite judges it.

As in Jepsen, the generator acts and records a history; the suite's checks judge the recorded history
and never act themselves. Generators run in the process that owns the lab, the only one that may reboot
a VM, attach or detach its disks and snapshot them. A generator never raises for what it observed: a
reboot that never came back is part of the history (with the error), and the checks judge it.

Registered generators (suite -> module with `generate(lab, state, progress) -> dict`):
- mounts          harness.scenarios.reboot        reboot, boot without the data volume, re-attach
- backup_restore  harness.scenarios.restore_drill seed, write, snapshot, restore, verify (when present)
- upgrade         harness.scenarios.upgrade       the upgrade rehearsal: observe, update, observe, go back, observe
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.run_state import RunState
from harness.targets.base import Target

if TYPE_CHECKING:
    from harness.testbed import Testbed
from harness.errors import LabError

GENERATORS = {"mounts": "harness.scenarios.reboot", "backup_restore": "harness.scenarios.restore_drill",
              "upgrade": "harness.scenarios.upgrade"}

Progress = Callable[[str], None]

# The data volume's device this boot: the NVMe disk whose serial is the lab's data serial (NVMe names follow
# the probe order and can swap across boots, as on EC2 Nitro), else the runbook's /dev/nvme1n1 (docker).
DATA_DEVICE_SH = ('d=/dev/nvme1n1; for s in /sys/block/nvme*n1; do [ -r "$s/device/serial" ] && '
                  '[ "$(tr -d \' \' < "$s/device/serial")" = stdbc-data ] && d="/dev/${s##*/}"; done; echo "$d"')


DATA_SERIAL = "stdbc-data"


def data_device(target: Target) -> str:
    """The data volume's device on `target`: the NVMe disk with the lab's data serial, else /dev/nvme1n1 (one
    `lsblk` query, in the read-only catalogue: it runs on a host the kit did not build too)."""
    res = target.run("lsblk -dn -o NAME,SERIAL", timeout=30)
    for line in res.stdout.splitlines() if res.ok else []:
        name, _, serial = line.strip().partition(" ")
        if name.startswith("nvme") and serial.strip() == DATA_SERIAL:
            return f"/dev/{name}"
    return "/dev/nvme1n1"


def generate(suite: str, *, lab: Testbed, state_path: Path, timer: Any, progress: Progress) -> Path | None:
    """Run `suite`'s generator (if it has one), save its history next to the state and point the state at it."""
    module_name = GENERATORS.get(suite)
    if module_name is None:
        return None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a broken generator is reported by the suite, not a traceback
        module, broken = None, f"the {suite} scenario could not be loaded: {type(exc).__name__}: {exc}"
    state = RunState.load(state_path)
    with timer.phase(f"scenario:{suite}"):
        started = time.monotonic()
        try:
            if module is None:
                raise LabError(broken)
            history = module.generate(lab, state, progress)
        except LabError as exc:
            history = {"applicable": True, "error": exc.one_line(), "events": []}
        except Exception as exc:  # noqa: BLE001 - an internal error: recorded, the run goes on to its report
            history = {"applicable": True, "events": [],
                       "error": f"internal error in the {suite} scenario: {type(exc).__name__}: {exc}"}
            progress(f"scenario {suite}: {history['error']}")
        history["seconds"] = round(time.monotonic() - started, 1)
    path = Path(state.workdir) / f"history-{suite}.json"
    path.write_text(json.dumps(history, indent=2, default=str))
    state.histories[suite] = str(path)
    state.lab = lab.state()
    state.save(state_path)
    return path


def load_history(state: RunState, suite: str) -> dict[str, Any] | None:
    """`suite`'s recorded history as its generator left it (judge it with the scenario's own judge)."""
    path = history_path(state, suite)
    return json.loads(path.read_text()) if path is not None else None


def history_path(state: RunState, suite: str) -> Path | None:
    """Where `suite`'s history is (the files it names are relative to its folder); None when none was recorded."""
    name = state.histories.get(suite)
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else Path(state.workdir) / name
    return path if path.exists() else None


def summarize(suite: str, history: dict[str, Any], base: Path) -> dict[str, Any]:
    """What the report shows of a scenario beyond its events: the scenario module's `summarize(history, base)`
    (judging what it recorded), else the history's own `summary`."""
    module_name = GENERATORS.get(suite)
    try:
        module = importlib.import_module(module_name) if module_name else None
    except Exception:  # noqa: BLE001 - a broken scenario module was reported when it ran
        module = None
    hook = getattr(module, "summarize", None)
    return hook(history, base) if hook is not None else dict(history.get("summary") or {})


def observe(target: Target, probes: dict[str, str], *, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Run every probe in one round trip; {name: {"command", "status", "output"}} (output = stdout+stderr,
    stripped). A probe's output need not end with a newline (`curl -w '%{http_code}'`): one is added before the
    exit line."""
    marker = "--stdbc-probe--"
    script = "; ".join(f"echo {marker}{name}; ({command}) 2>&1; s=$?; echo; echo \"{marker}exit=$s\""
                       for name, command in probes.items())
    res = target.run(script, timeout=timeout)
    found: dict[str, dict[str, Any]] = {name: {"command": command, "status": None, "output": ""}
                                        for name, command in probes.items()}
    name = ""
    lines: list[str] = []
    for line in res.stdout.splitlines():
        if line.startswith(marker + "exit=") and name:
            found[name]["output"] = "\n".join(lines).strip()
            found[name]["status"] = int(line.rsplit("=", 1)[1] or -1)
            name, lines = "", []
        elif line.startswith(marker):
            name, lines = line[len(marker):], []
        elif name:
            lines.append(line)
    if res.timed_out or res.exit_status == 255:
        for entry in found.values():
            if entry["status"] is None:
                entry["output"] = f"(no answer: {res.stderr.strip()[-200:] or 'timed out'})"
    return found
