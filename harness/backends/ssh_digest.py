"""A digest of the host's state, taken before and after the suites: proof that a read-only run changed nothing.

What it covers (what an operator means by "changed"):
- files the host is made of, by path, type, mode, owner, size, mtime, ctime (a restored mtime cannot hide a
  rewrite), symlink target, and sha256 computed on the host: nginx, systemd units, Let's Encrypt (keys are
  hashed, never read), fstab, users and groups (/etc/passwd, /etc/group, and /etc/shadow, /etc/gshadow by hash),
  sudoers, sshd's configuration and host keys, root's and every home's ~/.ssh (authorized_keys), crontabs, ufw's
  configuration, the programs in /usr/local/bin and /usr/local/sbin;
- /usr/bin and /usr/sbin by metadata (size, mtime, ctime: a replaced binary changes its ctime);
- the data directory /stdb by metadata, bounded to the first MAX_STDB_ENTRIES paths in byte order;
- the live mount table, the live packet filter (iptables and nft rules, counters left out), the unit files'
  enablement, the state of the units that serve (ActiveState, SubState, MainPID, NRestarts), the boot id.

What it leaves out, because the live system changes it by itself: the journal (/var/log), the server's own logs
(/stdb/data/logs/*: the server appends on every request, the checks' own reads included), /proc, /run, /tmp,
packet counters, timers' next run times. If the database's own files change between the two digests, that is
reported: a read-only check cannot have caused it, and the report says which files moved.

Every command it sends is in the read-only catalogue (harness/backends/ssh_catalogue.py), so it runs on any
target (ssh, docker, vm) through `target.run`. Records are NUL-separated with the path last, so a name with a tab
or a newline stays one name.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import Any

from harness.targets.base import Target

DIGEST_VERSION = 2
CONFIG_ROOTS = ("/etc/nginx", "/etc/systemd/system", "/etc/letsencrypt", "/etc/fstab", "/etc/passwd", "/etc/group",
                "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/root/.ssh",
                "/etc/crontab", "/etc/cron.d", "/var/spool/cron", "/etc/ufw", "/etc/default/ufw", "/usr/local/bin",
                "/usr/local/sbin")
HOMES = "/home"  # every home's .ssh folder (authorized_keys) is found under it
BINARY_ROOTS = ("/usr/bin", "/usr/sbin")  # by metadata only: hashing every program would take minutes
DATA_ROOT = "/stdb"
LOGS = f"{DATA_ROOT}/data/logs"
MAX_STDB_ENTRIES = 5000
UNITS = ("spacetimedb.service", "nginx.service", "ssh.service", "certbot.timer")
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "NRestarts")
MAX_DIFF_LINES = 200
HASH_BATCH = 200
LEFT_OUT = ("the journal and /var/log", f"the server's own logs ({LOGS}/*)", "/proc, /run and /tmp",
            "packet counters", "timers' next run times")
_META = r"%y\t%#m\t%u:%g\t%s\t%T@\t%C@\0%l\0%p\0"
_COUNTERS = re.compile(r"\s*counter packets \d+ bytes \d+")


def _find(target: Target, roots: tuple[str, ...] | list[str], *expression: str, timeout: float) -> tuple[bool, str]:
    command = f"find {' '.join(shlex.quote(r) for r in roots)} {' '.join(shlex.quote(e) for e in expression)}"
    res = target.run(command.strip() + " 2>/dev/null", timeout=timeout)
    return not res.timed_out and (res.ok or bool(res.stdout)), res.stdout


def _entries(output: str, *, keep_times: bool = True) -> dict[str, dict[str, Any]]:
    fields = output.split("\0")
    entries: dict[str, dict[str, Any]] = {}
    for i in range(0, len(fields) - 2, 3):
        meta, link, path = fields[i].split("\t"), fields[i + 1], fields[i + 2]
        if len(meta) != 6 or not path:
            continue
        kind, mode, owner, size, mtime, ctime = meta
        entry: dict[str, Any] = {"type": kind, "mode": mode, "owner": owner, "size": None if kind == "d" else
                                 _int(size), "link": link}
        if keep_times and kind != "d":
            entry["mtime"], entry["ctime"] = mtime, ctime
        entries[path] = entry
    return entries


def state_digest(target: Target, *, timeout: float = 180.0) -> dict[str, Any]:
    """The host's state digest (JSON-able). `complete` is False, with `error`, when the host did not answer."""
    errors: list[str] = []

    def note(ok: bool, what: str) -> None:
        if not ok:
            errors.append(what)

    ok, out = _find(target, CONFIG_ROOTS, "-printf", _META, timeout=timeout)
    note(ok, "files")
    files = _entries(out)
    ok, out = _find(target, [HOMES], "-maxdepth", "3", "-path", f"{HOMES}/*/.ssh*", "-printf", _META, timeout=timeout)
    files.update(_entries(out))
    regular = sorted(p for p, e in files.items() if e["type"] == "f")
    for start in range(0, len(regular), HASH_BATCH):
        batch = regular[start:start + HASH_BATCH]
        res = target.run("sha256sum -z -- " + " ".join(shlex.quote(p) for p in batch), timeout=timeout)
        note(not res.timed_out and bool(res.stdout), "sha256")
        for record in res.stdout.split("\0"):
            hashed, sep, path = record.partition("  ")
            if sep and path in files:
                files[path]["sha256"] = hashed
    for entry in files.values():
        entry.setdefault("sha256", None)
    ok, out = _find(target, BINARY_ROOTS, "-printf", _META, timeout=timeout)
    note(ok, "programs")
    programs = _entries(out)
    ok, out = _find(target, [DATA_ROOT], "-path", f"{LOGS}/*", "-prune", "-o", "-printf", _META, timeout=timeout)
    note(ok, DATA_ROOT)
    stdb_all = _entries(out)
    names = sorted(stdb_all, key=lambda p: p.encode())
    truncated = len(names) > MAX_STDB_ENTRIES
    stdb = {p: stdb_all[p] for p in names[:MAX_STDB_ENTRIES]}
    props = " ".join(f"-p {p}" for p in ("Id", *UNIT_PROPERTIES))
    units_res = target.run(f"systemctl show {' '.join(UNITS)} {props}", timeout=60)
    note(not units_res.timed_out and bool(units_res.stdout.strip()), "units")
    enabled = target.run("systemctl list-unit-files --no-pager --no-legend", timeout=60)
    note(enabled.ok, "unit files")
    mounts = target.run("findmnt -rn -o TARGET,SOURCE,FSTYPE,OPTIONS", timeout=60)
    note(mounts.ok, "mounts")
    rules = [target.run(command, timeout=60) for command in ("iptables -S 2>&1", "ip6tables -S 2>&1")]
    if target.run("test -x /usr/sbin/nft", timeout=30).ok:  # not every host has nft
        rules.append(target.run("nft list ruleset 2>&1", timeout=60))
    boot = target.run("cat /proc/sys/kernel/random/boot_id", timeout=30)
    note(boot.ok and bool(boot.stdout.strip()), "boot id")
    filter_text = "".join(_COUNTERS.sub("", r.stdout) for r in rules)
    digest: dict[str, Any] = {
        "version": DIGEST_VERSION, "files": files, "programs": programs,
        "stdb": {"entries": stdb, "truncated": truncated, "limit": MAX_STDB_ENTRIES},
        "units": _units(units_res.stdout), "unit_files": _lines(enabled.stdout), "mounts": _lines(mounts.stdout),
        "packet_filter": hashlib.sha256(filter_text.encode()).hexdigest(), "boot_id": boot.stdout.strip(),
        "complete": not errors, "left_out": list(LEFT_OUT)}
    if errors:
        digest["error"] = f"the host did not answer for: {', '.join(errors)}"
    return digest


def _lines(text: str) -> list[str]:
    return sorted(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _units(text: str) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for record in [*text.splitlines(), ""]:
        if not record.strip():
            if block.get("Id"):
                units[block.pop("Id")] = block
            block = {}
            continue
        key, _, value = record.partition("=")
        if key == "Id" or key in UNIT_PROPERTIES:
            block[key] = value
    return units


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def fingerprint(digest: dict[str, Any]) -> str:
    """sha256 of the digest's canonical JSON: equal digests, equal fingerprints, in any process."""
    canonical = json.dumps(digest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def digest_diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed between two digests, one human line each ([] when nothing did)."""
    lines: list[str] = []
    for name, digest in (("before", before), ("after", after)):
        if not digest.get("complete", False):
            lines.append(f"the digest {name} the suites is incomplete: {digest.get('error', 'no answer')}")
    if before.get("boot_id") != after.get("boot_id"):
        lines.append(f"boot id changed: {before.get('boot_id') or '?'} -> {after.get('boot_id') or '?'} "
                     "(the host rebooted)")
    lines += _entries_diff("file", before.get("files", {}), after.get("files", {}))
    lines += _entries_diff("program", before.get("programs", {}), after.get("programs", {}))
    stdb_before, stdb_after = before.get("stdb", {}), after.get("stdb", {})
    lines += _entries_diff(DATA_ROOT, stdb_before.get("entries", {}), stdb_after.get("entries", {}))
    if stdb_before.get("truncated") or stdb_after.get("truncated"):
        lines.append(f"{DATA_ROOT} has more than {MAX_STDB_ENTRIES} entries: only the first {MAX_STDB_ENTRIES} "
                     "paths were compared")
    units_before, units_after = before.get("units", {}), after.get("units", {})
    for unit in sorted(set(units_before) | set(units_after)):
        old, new = units_before.get(unit, {}), units_after.get(unit, {})
        changed = [f"{key} {old.get(key, '?')} -> {new.get(key, '?')}" for key in UNIT_PROPERTIES
                   if old.get(key) != new.get(key)]
        if changed:
            lines.append(f"unit {unit}: " + ", ".join(changed))
    for key, what in (("unit_files", "unit file"), ("mounts", "mount")):
        old_set, new_set = set(before.get(key, [])), set(after.get(key, []))
        lines += [f"{what} gone: {line}" for line in sorted(old_set - new_set)]
        lines += [f"{what} new: {line}" for line in sorted(new_set - old_set)]
    if before.get("packet_filter") != after.get("packet_filter"):
        lines.append("the live packet filter's rules changed (iptables -S / nft list ruleset)")
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... and {len(lines) - MAX_DIFF_LINES} more differences"]
    return lines


def _entries_diff(what: str, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for path in sorted(set(old) | set(new)):
        shown = path.encode("unicode_escape").decode() if not path.isprintable() else path
        if path not in new:
            lines.append(f"{what} removed: {shown}")
        elif path not in old:
            entry = new[path]
            lines.append(f"{what} added: {shown} ({entry.get('type')}, {entry.get('mode')} {entry.get('owner')})")
        elif old[path] != new[path]:
            changes = []
            for key in sorted(set(old[path]) | set(new[path])):
                a, b = old[path].get(key), new[path].get(key)
                if a != b:
                    if key == "sha256":
                        changes.append(f"content sha256 {str(a)[:12]} -> {str(b)[:12]}")
                    else:
                        changes.append(f"{key} {a} -> {b}")
            lines.append(f"{what} changed: {shown}: " + ", ".join(changes))
    return lines
