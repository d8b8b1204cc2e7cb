"""Reboot scenario for the `mounts` suite (vm backend): what the host does across real reboots.

History (each event: its name, the guest's boot id and what the probes saw):
1. `before`    the host as the runbook left it; then the kit writes a marker file into /stdb and, when the
               server answers, a marker row into the probe database (data written before the reboot).
2. `rebooted`  after a guest `systemctl reboot` (boot id must change), with the remote client's view of
               nginx and TLS.
3. `detached`  after a clean poweroff, the data volume detached (like detaching the EBS volume) and a cold
               boot: does the boot reach multi-user (nofail)? what did the service do on the root disk's
               /stdb?
4. `reattached` after a poweroff, the volume attached again and a cold boot: the host is back for the
               suites that follow.
Not applicable where the backend cannot reboot its host (capability `reboot`; e.g. a container cannot
reboot with its block-device fstab entries), or may not change it (existing hosts without --allow-mutation).
Without `volume-detach` (an existing host) steps 3-4 are skipped, and the history says why.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.backends.base import Capability
from harness.errors import LabError
from harness.run_state import RunState
from harness.scenarios import DATA_DEVICE_SH, observe
from harness.targets.base import Target
from harness.time_ledger import spend

if TYPE_CHECKING:
    from harness.testbed import Testbed

Progress = Callable[[str], None]
MARKER_FILE = "/stdb/.stdbc-reboot-marker"
SERVICE = "spacetimedb"
DETACHED_BOOT_TIMEOUT = 180.0  # ssh is up ~35 s into a TCG boot; emergency mode never brings it

PROBES = {
    "boot_id": "cat /proc/sys/kernel/random/boot_id",
    "system_state": "timeout 150 systemctl is-system-running --wait",
    "multi_user": "systemctl is-active multi-user.target",
    "stdb_mount": "findmnt -n -o SOURCE,UUID,FSTYPE,OPTIONS --mountpoint /stdb",
    "data_device": DATA_DEVICE_SH,
    "volume_blkid": f"blkid -o export $({DATA_DEVICE_SH})",
    "fstab": "cat /etc/fstab",
    "stdb_owner": "stat -c '%U:%G %a' /stdb",
    "stdb_listing": "ls -la /stdb",
    "marker": f"cat {MARKER_FILE}",
    "service_active": f"systemctl is-active {SERVICE}",
    "service_show": f"systemctl show {SERVICE} -p ActiveState -p SubState -p NRestarts -p ExecMainStatus -p MainPID",
    "service_journal": f"journalctl -b -u {SERVICE} --no-pager | tail -15",
    # bounded wait (60 tries) while the unit is up: a server that has just (re)started may not listen yet
    "ping": "for i in $(seq 60); do c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "
            "http://127.0.0.1:3000/v1/ping); [ \"$c\" = 200 ] && break; "
            f"case $(systemctl is-active {SERVICE}) in active|activating) sleep 1;; *) break;; esac; done; echo $c",
    "nginx_active": "systemctl is-active nginx",
    "lsblk": "lsblk -o NAME,SERIAL,SIZE,FSTYPE,MOUNTPOINTS",
    "boot_timing": "systemd-analyze time",
    "failed_units": "systemctl --failed --no-legend --plain",
    "written_this_boot": "find /stdb -xdev -newermt \"@$(( $(date +%s) - $(cut -d. -f1 /proc/uptime) ))\" "
                         "-not -path /stdb 2>/dev/null | head -40",
}


def generate(lab: Testbed, state: RunState, progress: Progress) -> dict[str, Any]:
    why_not = lab.backend.missing(Capability.MUTATION, Capability.REBOOT)
    if why_not:
        return {"applicable": False, "reason": why_not, "events": []}
    history: dict[str, Any] = {"applicable": True, "events": [], "token": secrets.token_hex(8)}
    try:
        _scenario(lab, state, history, progress)
    except LabError as exc:
        history["error"] = exc.one_line()
        progress(f"reboot scenario: {history['error']}")
        _recover(lab, history, progress)
    return history


def _event(history: dict[str, Any], name: str, target: Target, *, booted: bool = True, **extra: Any
           ) -> dict[str, Any]:
    if booted:
        # the guest finishing its boot (jobs such as a device the fstab waits for) is boot time, not the kit's
        # probing: wait for it first, then probe (the probe `system_state` then answers at once)
        with spend("boots"):
            target.run(PROBES["system_state"], timeout=180)
    event = {"name": name, "at": time.time(), "probes": observe(target, PROBES, timeout=240), **extra}
    event["boot_id"] = event["probes"]["boot_id"]["output"].strip()
    history["events"].append(event)
    return event


def _scenario(lab: Testbed, state: RunState, history: dict[str, Any], progress: Progress) -> None:
    backend, target = lab.backend, lab.target
    before = _event(history, "before", target, booted=False)
    history["writes"] = _write_markers(target, state, history["token"], before)
    progress("reboot scenario: guest reboot ...")
    started = time.monotonic()
    with spend("boots"):
        backend.reboot(timeout=600)
    rebooted = _event(history, "rebooted", target, seconds=round(time.monotonic() - started, 1),
                      remote=_remote_view(lab, state), database=_read_marker_row(target, history["writes"]))
    progress(f"reboot scenario: back in {rebooted['seconds']:.0f}s (boot id {rebooted['boot_id'][:8]})")

    if not backend.has(Capability.VOLUME_DETACH):
        history["detached_skipped"] = backend.missing(Capability.VOLUME_DETACH)
        return
    if not backend.has_volume():
        history["detached_skipped"] = "the target has no data disk attached (no volume steps in this plan)"
        return
    progress("reboot scenario: poweroff, detach the data volume, cold boot ...")
    with spend("boots"):
        backend.power_off()
    started = time.monotonic()
    try:
        with spend("boots"):
            backend.boot(with_volume=False, timeout=DETACHED_BOOT_TIMEOUT)
        _event(history, "detached", target, seconds=round(time.monotonic() - started, 1), reached_ssh=True)
    except LabError as exc:
        history["events"].append({"name": "detached", "at": time.time(), "reached_ssh": False,
                                  "seconds": round(time.monotonic() - started, 1), "error": exc.one_line(),
                                  "serial_tail": backend.serial_tail(25), "probes": {}, "boot_id": ""})
        progress(f"reboot scenario: no ssh {DETACHED_BOOT_TIMEOUT:.0f}s into the boot without the volume")
        with spend("boots"):
            backend.power_off(hard=True)
    progress("reboot scenario: poweroff, attach the volume again, cold boot ...")
    with spend("boots"):
        if backend.running():
            backend.power_off()
    started = time.monotonic()
    with spend("boots"):
        backend.boot(with_volume=True)
    _event(history, "reattached", target, seconds=round(time.monotonic() - started, 1))


def _write_markers(target: Target, state: RunState, token: str, before: dict[str, Any]) -> dict[str, Any]:
    """Data written before the reboot: a file on /stdb (as the service user) and, when the server answers,
    a row inserted through a reducer call into the kit's probe database."""
    writes: dict[str, Any] = {"file": MARKER_FILE, "file_content": token}
    res = target.run(f"printf '%s\\n' {token} > {MARKER_FILE} && sync", user="spacetimedb", timeout=60)
    writes["file_written_by"] = "spacetimedb" if res.ok else ""
    if not res.ok:
        res = target.run(f"printf '%s\\n' {token} > {MARKER_FILE} && sync", timeout=60)
        writes["file_written_by"] = "root" if res.ok else ""
    writes["file_write"] = res.to_dict()
    if before["probes"]["ping"]["output"] != "200":
        writes["row"] = None
        writes["row_reason"] = "the server did not answer /v1/ping before the reboot: no row written"
        return writes
    try:
        from fixtures.conformance_db import PROBE_DB, ProbeUnavailable, cli, ensure_probe_database

        recorder = _Recorder()
        ensure_probe_database(target, state, recorder)
        row = f"stdbc-reboot-{token}"
        res = target.run(f"{cli()} call -s local {PROBE_DB} add_probe {shlex.quote(chr(34) + row + chr(34))}",
                         timeout=60)
        writes["row"] = row if res.ok else None
        writes["row_write"] = [*recorder.results, res.to_dict()]
        target.run("sync", timeout=60)
    except (ProbeUnavailable, AssertionError) as exc:
        writes["row"] = None
        writes["row_reason"] = str(exc)
    return writes


def _read_marker_row(target: Any, writes: dict[str, Any]) -> dict[str, Any] | None:
    if not writes.get("row"):
        return None
    from fixtures.conformance_db import PROBE_DB, PROBE_TABLE, cli

    query = f"SELECT * FROM {PROBE_TABLE}"
    res = target.run(f"{cli()} sql -s local {PROBE_DB} {shlex.quote(query)}", timeout=90)
    return {**res.to_dict(), "row_present": writes["row"] in res.stdout}


def _remote_view(lab: Testbed, state: RunState) -> dict[str, Any]:
    """nginx and TLS as the remote vantage point sees them (TLS verified against the run's CA bundle)."""
    from harness.vantage import curl_args, site_from_state, vantage_from_state

    try:
        site, vantage = site_from_state(state), vantage_from_state(state)
    except (LabError, KeyError) as exc:
        return {"error": f"no remote vantage point: {exc}"}
    args = curl_args(site, vantage)
    script = (f"curl -sS --max-time 15 {args} -o /dev/null -w '%{{http_code}} verify=%{{ssl_verify_result}}' -X POST "
              f"https://{site.domain}/v1/identity; echo; curl -sS --max-time 15 {args} -o /dev/null -w "
              f"'%{{http_code}} %{{redirect_url}}' http://{site.domain}/v1/identity; echo")
    res = vantage.run(script, timeout=60)
    lines = res.stdout.splitlines() + ["", ""]
    https, http = lines[0].strip(), lines[1].strip()
    return {"command": script, "vantage": vantage.describe(), "https": https, "http": http,
            "stderr": res.stderr.strip()[-500:], "exit_status": res.exit_status}


def _recover(lab: Testbed, history: dict[str, Any], progress: Progress) -> None:
    """After an error, bring the target back with its data volume so later suites see a host."""
    try:
        lab.backend.recover()
        history["recovered"] = True
    except LabError as exc:
        history["recovered"] = False
        history["recover_error"] = exc.one_line()
        progress(f"reboot scenario: could not bring the target back: {exc.one_line()}")


class _Recorder:
    """Collects the probe helper's commands (its `check` argument) for the history."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def run(self, target: Any, command: str, *, user: str = "root", label: str = "", timeout: float = 60.0) -> Any:
        result = target.run(command, user=user, timeout=timeout)
        self.results.append({**result.to_dict(), "label": label})
        return result
