"""Suite `mounts`: the data volume at /stdb and what survives a reboot (backups Step 1).

Static promises, decided on every backend from the host as it is: the fstab entry mounts the volume by
its UUID with the documented type, options and pass number, keeps `nofail`, /stdb is that volume now,
and it belongs to the service user. Reboot promises are judged from the history the reboot scenario
recorded (harness/scenarios/reboot.py; vm backend only): the mount, the service, nginx/TLS and data
written before a real reboot (boot id changed) are there after it; a boot with the volume detached
still reaches multi-user, and what the service did then is reported. On docker those are
not-applicable with the reason: a container cannot prove them.

The static checks read the host through testinfra (the `host` fixture: file, mount_point; every query is the
check's evidence). The volume's UUID (`blkid`), the block device listing and the ownership of the tree (`find`)
have no testinfra module and stay raw commands.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from testinfra.host import Host

from harness.model import Plan, Step, StepKind
from harness.pytest_plugin import CheckRecorder
from harness.run_state import RunState
from harness.scenarios import data_device, load_history
from harness.targets.base import Target
from harness.targets.testinfra_bridge import path_owner

# what the checks marked `mutates` change on the host (they run only where the kit may change it)
DETACH_CHANGES = "detaches the data volume and cold-boots the host"
REBOOT_CHANGES = "reboots the host"
REBOOT_MARKER_CHANGES = "reboots the host and writes a marker file"
REBOOT_ROW_CHANGES = "reboots the host and writes a marker file and row"

MOUNT_POINT = "/stdb"
DEVICE = "/dev/nvme1n1"
SERVICE_USER = "spacetimedb"


# ---------------------------------------------------------------- helpers


def _fstab_step(plan: Plan) -> Step | None:
    found = [s for s in plan.runnable("apply") if s.kind is StepKind.LINE_EDIT and s.path == "/etc/fstab"]
    return found[0] if found else None


def _documented_fields(plan: Plan) -> list[str]:
    step = _fstab_step(plan)
    return step.content.split() if step is not None else []


def _documented_mount_point(plan: Plan) -> str:
    fields = _documented_fields(plan)
    return fields[1] if len(fields) > 1 else MOUNT_POINT


def _fstab(host: Host) -> str:
    """/etc/fstab as the host has it; empty when it cannot be read (no entries, as a failed `cat` gave)."""
    try:
        return str(host.file("/etc/fstab").content_string)
    except RuntimeError:  # testinfra: `cat` failed
        return ""


def _mount_root(host: Host, path: str) -> str | None:
    """The directory of its file system mounted at `path` (mountinfo's 4th field: "/" for a whole volume, a
    subdirectory for a bind mount of one), for the first mount there, as /proc/mounts lists it first."""
    try:
        mountinfo = str(host.file("/proc/self/mountinfo").content_string)
    except RuntimeError:
        return None
    roots = [f[3] for f in (line.split() for line in mountinfo.splitlines()) if len(f) > 4 and f[4] == path]
    return roots[0] if roots else None


def _fstab_entries(text: str) -> list[list[str]]:
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.append(line.split())
    return entries


def _step_with(plan: Plan, pattern: str, section: str = "Format") -> Step | None:
    for step in plan.steps:
        if step.command and re.search(pattern, step.command) and any(section in h for h in step.ref.section):
            return step
    return None


@pytest.fixture(autouse=True)
def _plan_mounts_a_volume(plan: Plan, request: pytest.FixtureRequest) -> None:
    """A plan without the fstab step (e.g. the self-hosting-only profile) promises no data volume."""
    if _fstab_step(plan) is None:
        check = request.getfixturevalue("check")
        check.not_applicable("this plan adds no /etc/fstab line (the profile leaves out the data-volume section): "
                             "nothing about a data volume to prove")


@pytest.fixture(scope="module")
def device(target: Target) -> str:
    """The data volume's device now: the runbook's /dev/nvme1n1, or on the vm backend the NVMe disk with the
    lab's data serial (NVMe names follow the probe order and may swap across boots, as on EC2)."""
    return data_device(target)


@pytest.fixture(scope="module")
def volume_uuid(target: Target, device: str) -> str:
    res = target.run(f"blkid -s UUID -o value {device}", timeout=30)
    return res.stdout.strip()


@pytest.fixture(scope="module")
def history(run_state: RunState) -> dict[str, Any]:
    found = load_history(run_state, "mounts")
    return found if found is not None else {"applicable": False, "events": [],
                                            "reason": "the reboot scenario did not run in this session"}


def _event(history: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((e for e in history.get("events", []) if e.get("name") == name), None)


def _needs_reboot_history(history: dict[str, Any], check: CheckRecorder, *names: str) -> list[dict[str, Any]]:
    if not history.get("applicable"):
        check.not_applicable(history.get("reason", "no reboot on this backend"))
    events = [_event(history, n) for n in names]
    missing = [n for n, e in zip(names, events, strict=True) if e is None]
    if history.get("error"):
        check.note("scenario error", history["error"])
    assert not missing, (f"the reboot scenario never reached {', '.join(missing)}: "
                         f"{history.get('error', 'no error recorded')}")
    return [e for e in events if e is not None]


def _probe(event: dict[str, Any], name: str) -> str:
    return str(event.get("probes", {}).get(name, {}).get("output", ""))


def _note_probes(check: CheckRecorder, event: dict[str, Any], *names: str) -> None:
    for name in names:
        entry = event.get("probes", {}).get(name)
        if entry is not None:
            check.note(f"{event['name']}: {name} (boot {event.get('boot_id', '')[:8]})", entry.get("output", ""),
                       command=entry.get("command", ""), status=entry.get("status"))


# ---------------------------------------------------------------- static: every backend


@pytest.mark.check("mounts.fstab-entry-by-uuid",
                   claim="the fstab entry for /stdb names the data volume by its UUID (\"Persist the mount across "
                         "reboots using UUID\")")
def test_fstab_by_uuid(host: Host, plan: Plan, volume_uuid: str, device: str, check: CheckRecorder) -> None:
    check.ref(_fstab_step(plan))
    fstab = _fstab(host)
    check.note("UUID of the data volume", volume_uuid, command=f"blkid -s UUID -o value {device}")
    assert volume_uuid, f"{device} has no file system UUID (was it formatted?)"
    entries = [e for e in _fstab_entries(fstab) if len(e) > 1 and e[1] == MOUNT_POINT]
    assert entries, f"no fstab entry mounts {MOUNT_POINT}"
    specs = [e[0] for e in entries]
    assert f"UUID={volume_uuid}" in specs, (f"the fstab entry for {MOUNT_POINT} names {', '.join(specs)}, not "
                                            f"UUID={volume_uuid}: device names can change between boots")


# mount options the kernel shows in the mount table when they are in effect (the rest are userspace-only:
# defaults, nofail, auto, user, x-*, ...)
KERNEL_OPTIONS = {"ro", "noatime", "nodiratime", "nodev", "nosuid", "noexec", "relatime", "strictatime", "sync",
                  "lazytime", "dirsync", "nosymfollow"}


@pytest.mark.check("mounts.fstab-entry-as-documented",
                   claim="the fstab line the runbook adds is on the host with its type, options, dump and pass, "
                         "util-linux's own verification of that entry finds no error, and what is mounted at the "
                         "mount point now has the documented type and options")
def test_fstab_as_documented(target: Target, host: Host, plan: Plan, volume_uuid: str,
                             check: CheckRecorder) -> None:
    step = _fstab_step(plan)
    check.ref(step)
    documented = _documented_fields(plan)
    assert len(documented) == 6, f"the runbook's fstab line has {len(documented)} fields, not 6: {documented}"
    check.note("documented line", " ".join(documented))
    fstab = _fstab(host)
    entries = [e for e in _fstab_entries(fstab) if len(e) > 1 and e[1] == documented[1]]
    assert entries, f"no fstab entry for the documented mount point {documented[1]}"
    entry = entries[-1]
    problems = []
    if entry[2:] != documented[2:]:
        problems.append(f"fstab has `{' '.join(entry)}`; the runbook documents type/options/dump/pass "
                        f"`{' '.join(documented[2:])}`")
    # util-linux's verdict on the entry (source resolvable, type matches the disk, options parse), not the kit's
    verify = check.run(target, f"findmnt --fstab --verify --verbose --target {shlex.quote(documented[1])}",
                       label="findmnt --fstab --verify")
    errors = [line.strip() for line in verify.stdout.splitlines() if line.strip().startswith("[E]")]
    if not verify.ok or errors:
        problems.append(f"findmnt --verify finds errors in the entry (exit {verify.exit_status}): "
                        f"{'; '.join(errors) or verify.stderr.strip()[-200:]}")
    # what the kernel mounted there now
    mounted = check.run(target, f"findmnt -n -o FSTYPE,OPTIONS --mountpoint {shlex.quote(documented[1])}",
                        label="the mount table at the mount point")
    fields = mounted.stdout.split()
    if len(fields) < 2:
        problems.append(f"nothing is mounted at {documented[1]}")
    else:
        fstype, options = fields[0], set(fields[1].split(","))
        if documented[2] != "auto" and fstype != documented[2]:
            problems.append(f"{documented[1]} is mounted as {fstype}, the runbook documents {documented[2]}")
        wanted = set(documented[3].split(",")) & KERNEL_OPTIONS
        if not wanted <= options:
            lacking = ", ".join(sorted(wanted - options))
            problems.append(f"{documented[1]} is mounted with {fields[1]}, without {lacking}")
        if ("ro" in documented[3].split(",")) != ("ro" in options):
            problems.append(f"{documented[1]} is mounted {'ro' if 'ro' in options else 'rw'}, the runbook documents "
                            f"{'ro' if 'ro' in documented[3].split(',') else 'rw'}")
    assert not problems, "; ".join(problems)


@pytest.mark.check("mounts.fstab-nofail",
                   claim="the /stdb entry carries `nofail`, so a boot without the volume still reaches multi-user")
def test_fstab_nofail(host: Host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_fstab_step(plan))
    fstab = _fstab(host)
    entries = [e for e in _fstab_entries(fstab) if len(e) > 3 and e[1] == MOUNT_POINT]
    assert entries, f"no fstab entry mounts {MOUNT_POINT}"
    options = entries[-1][3].split(",")
    assert "nofail" in options, (f"the {MOUNT_POINT} entry's options are {entries[-1][3]}: without nofail a boot "
                                 "with the volume missing stops in emergency mode")


@pytest.mark.check("mounts.stdb-is-data-volume",
                   claim="/stdb is the data volume (ext4, the volume's UUID), mounted now")
def test_stdb_is_data_volume(target: Target, host: Host, plan: Plan, volume_uuid: str, device: str,
                             check: CheckRecorder) -> None:
    check.ref(_step_with(plan, r"mount -a") or _fstab_step(plan))
    mount = host.mount_point(MOUNT_POINT)  # the first /proc/mounts entry at /stdb (as findmnt lists first)
    mounted = mount.exists
    check.run(target, "lsblk -o NAME,SERIAL,SIZE,FSTYPE,UUID,MOUNTPOINTS", label="block devices")
    assert mounted, f"nothing is mounted at {MOUNT_POINT}"
    root = _mount_root(host, MOUNT_POINT)
    # a bind mount of a directory is not the volume: findmnt's SOURCE names it DEVICE[/directory]
    source = mount.device if root in ("/", None) else f"{mount.device}[{root}]"
    assert source == device, f"{MOUNT_POINT} is mounted from {source}, not the data volume {device}"
    # the mounted device is the data volume, so its UUID is the volume's (blkid): there must be one
    assert volume_uuid and mount.filesystem == "ext4", f"{MOUNT_POINT}: UUID/type {[volume_uuid, mount.filesystem]}"


@pytest.mark.check("mounts.owned-by-service-user",
                   claim="after `chown -R spacetimedb:spacetimedb /stdb` the volume's root and files belong to "
                         "the service user")
def test_owned_by_service_user(target: Target, host: Host, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_step_with(plan, r"chown -R") or _fstab_step(plan))
    owner = path_owner(host, target, check, MOUNT_POINT)
    others = check.run(target, f"find {MOUNT_POINT} -xdev \\( ! -user {SERVICE_USER} -o ! -group {SERVICE_USER} \\) "
                               "-printf '%u:%g\\t%p\\n' | head -20", label="entries not owned by the service user")
    assert owner is not None, f"cannot stat {MOUNT_POINT}: nothing is there"
    assert owner == f"{SERVICE_USER}:{SERVICE_USER}", \
        f"{MOUNT_POINT} belongs to {owner}, not {SERVICE_USER}:{SERVICE_USER}"
    assert not others.stdout.strip(), f"entries in {MOUNT_POINT} owned by others:\n{others.stdout.strip()}"


# ---------------------------------------------------------------- across reboots: vm backend


@pytest.mark.check("mounts.persists-across-reboot", mutates=REBOOT_MARKER_CHANGES,
                   claim="after a reboot (new boot id) /stdb is the data volume again and a file written before "
                         "the reboot is there")
def test_persists_across_reboot(plan: Plan, history: dict[str, Any], volume_uuid: str,
                                check: CheckRecorder) -> None:
    check.ref(_fstab_step(plan))
    before, after = _needs_reboot_history(history, check, "before", "rebooted")
    check.note("boot ids", {"before": before["boot_id"], "after": after["boot_id"],
                            "reboot_seconds": after.get("seconds")})
    _note_probes(check, after, "stdb_mount", "marker", "boot_timing", "failed_units")
    assert before["boot_id"] and after["boot_id"] and before["boot_id"] != after["boot_id"], \
        "the boot id did not change: no reboot happened"
    mount = _probe(after, "stdb_mount").split()
    assert mount, f"after the reboot nothing is mounted at {MOUNT_POINT}"
    device = _probe(after, "data_device").strip() or DEVICE  # that boot's device for the data volume
    assert mount[0] == device and mount[1] == volume_uuid, \
        f"after the reboot {MOUNT_POINT} is {' '.join(mount[:2])}, not {device} UUID={volume_uuid}"
    written = history.get("writes", {})
    assert written.get("file_written_by"), "the kit could not write its marker file before the reboot"
    assert _probe(after, "marker").strip() == written.get("file_content"), \
        "the file written to /stdb before the reboot is not there after it"


@pytest.mark.check("mounts.service-active-after-reboot", mutates=REBOOT_CHANGES,
                   needs=(f"path:{MOUNT_POINT}/spacetime",),
                   claim="the service starts on boot from the volume (enabled unit, /stdb mounted first)")
def test_service_after_reboot(plan: Plan, history: dict[str, Any], check: CheckRecorder) -> None:
    check.ref(next((s for s in plan.steps if s.command and "systemctl enable spacetimedb" in s.command), None))
    (after,) = _needs_reboot_history(history, check, "rebooted")
    _note_probes(check, after, "service_active", "service_show", "ping", "service_journal")
    state = _probe(after, "service_active")
    assert state == "active", f"after the reboot spacetimedb is {state or 'unknown'}"
    assert _probe(after, "ping") == "200", f"after the reboot /v1/ping answers {_probe(after, 'ping') or 'nothing'}"


@pytest.mark.check("mounts.proxy-and-tls-after-reboot", mutates=REBOOT_CHANGES,
                   claim="after the reboot nginx answers HTTPS from remote with a certificate that verifies, and "
                         "redirects HTTP")
def test_proxy_after_reboot(plan: Plan, history: dict[str, Any], check: CheckRecorder) -> None:
    check.ref(next((s for s in plan.steps if s.command and "certbot --nginx" in s.command), None))
    before, after = _needs_reboot_history(history, check, "before", "rebooted")
    if _probe(before, "nginx_active") != "active":
        check.not_applicable("nginx was not active before the reboot (this plan applies no proxy steps, or they "
                             "failed): nothing to compare")
    _note_probes(check, after, "nginx_active")
    remote = after.get("remote", {})
    check.note("remote client after the reboot", remote, command=remote.get("command", ""))
    assert not remote.get("error"), remote.get("error")
    code, _, verify = remote.get("https", "").partition(" ")
    assert code not in ("", "000"), f"no HTTPS answer from remote after the reboot: {remote.get('stderr', '')}"
    assert verify == "verify=0", f"the certificate did not verify from remote after the reboot ({verify})"
    http_code, _, location = remote.get("http", "").partition(" ")
    assert http_code.startswith("30") and location.startswith("https://"), \
        f"HTTP after the reboot: {remote.get('http')} (expected a redirect to https)"


@pytest.mark.check("mounts.data-survives-reboot", mutates=REBOOT_ROW_CHANGES,
                   needs=(f"path:{MOUNT_POINT}/spacetime",),
                   claim="a row written through the server before the reboot is served after it")
def test_data_survives_reboot(plan: Plan, history: dict[str, Any], check: CheckRecorder) -> None:
    check.ref(_fstab_step(plan))
    (after,) = _needs_reboot_history(history, check, "rebooted")
    writes = history.get("writes", {})
    if not writes.get("row"):
        check.not_applicable(f"no row could be written before the reboot: {writes.get('row_reason', 'unknown')}")
    database = after.get("database") or {}
    check.note("query after the reboot", database.get("stdout", "") + database.get("stderr", ""),
               command=database.get("command", ""), status=database.get("exit_status"))
    assert database.get("row_present"), f"the row {writes['row']} written before the reboot is not served after it"


@pytest.mark.check("mounts.boot-without-volume-reaches-multi-user", mutates=DETACH_CHANGES,
                   claim="with the data volume detached the host still boots to multi-user (`nofail`)")
def test_boot_without_volume(plan: Plan, history: dict[str, Any], check: CheckRecorder) -> None:
    check.ref(_fstab_step(plan))
    if history.get("applicable") and history.get("detached_skipped"):
        check.not_applicable(history["detached_skipped"])
    (detached,) = _needs_reboot_history(history, check, "detached")
    check.note("boot without the volume", {k: detached.get(k) for k in ("reached_ssh", "seconds", "error")})
    if not detached.get("reached_ssh"):
        check.note("serial console (last lines)", detached.get("serial_tail", ""))
    _note_probes(check, detached, "system_state", "multi_user", "stdb_mount", "lsblk", "failed_units", "boot_timing")
    assert detached.get("reached_ssh"), (f"no ssh within {detached.get('seconds')}s of a boot without the volume "
                                         f"(emergency mode?): {detached.get('error', '')}")
    assert _probe(detached, "multi_user") == "active", \
        f"multi-user.target is {_probe(detached, 'multi_user') or 'unknown'} without the volume"
    assert _probe(detached, "system_state") in ("running", "degraded"), \
        f"system state without the volume: {_probe(detached, 'system_state')}"
    assert not _probe(detached, "stdb_mount"), "something is mounted at /stdb although the volume is detached"


@pytest.mark.check("mounts.service-without-volume", mutates=DETACH_CHANGES, required=False,
                   claim="reports what the service did while the volume was missing; fails when it ran and wrote "
                         "into the root disk's /stdb (a database that diverges from the volume's)")
def test_service_without_volume(plan: Plan, history: dict[str, Any], check: CheckRecorder) -> None:
    check.ref(next((s for s in plan.steps if s.command and "systemctl enable spacetimedb" in s.command), None))
    if history.get("applicable") and history.get("detached_skipped"):
        check.not_applicable(history["detached_skipped"])
    (detached,) = _needs_reboot_history(history, check, "detached")
    if not detached.get("reached_ssh"):
        check.not_applicable("the boot without the volume never reached ssh: nothing to observe")
    _note_probes(check, detached, "service_active", "service_show", "ping", "stdb_listing", "written_this_boot",
                 "service_journal")
    ran = _probe(detached, "service_active") == "active" or _probe(detached, "ping") == "200"
    written = [line for line in _probe(detached, "written_this_boot").splitlines() if line.strip()]
    check.note("verdict", {"service_ran": ran, "files_written_on_root_disk": len(written)})
    assert not (ran and written), (f"without the volume the service ran on the root disk's {MOUNT_POINT} and wrote "
                                   f"{len(written)} file(s) there (e.g. {shlex.quote(written[0])}): clients would "
                                   "see an empty or stale database while the volume is missing")
