"""A digest of the host's state, taken before and after the suites: proof that a read-only run changed nothing.

What it covers, and why: the files a runbook's host is made of (/etc/nginx, /etc/systemd/system, /etc/letsencrypt
with its archive and the targets of its live/ symlinks, /etc/fstab) by content (sha256), mode, owner and
symlink target; the data directory /stdb by path, size and mtime (bounded: the first MAX_STDB_ENTRIES paths in
byte order); the state of the units that serve (spacetimedb, nginx, ssh, certbot.timer: ActiveState, SubState,
MainPID, NRestarts); and the boot id. /etc files carry no mtime: a rewrite with the same content is not a
change of what the host does.

/stdb is listed with mtimes, except the server's own logs (/stdb/data/logs/*: the server appends to them on every
request it serves, the checks' own reads through the proxy included). If the database's own files change
between the two digests, that is reported as a difference, and it is a real finding about the host (a
read-only check cannot have caused it, and the report says which files moved).

It uses only `target.run` with commands the ssh backend's read-only guard allows, in one round trip, so it
works on any target (ssh, docker, vm).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from harness.targets.base import Target

DIGEST_VERSION = 1
CONFIG_ROOTS = ("/etc/nginx", "/etc/systemd/system", "/etc/letsencrypt", "/etc/fstab")
DATA_ROOT = "/stdb"
# left out of the /stdb listing: the server appends to its own logs on every request it serves, the checks' own
# reads through the proxy included, so they change in any run; everything else under /stdb is listed
LOGS = f"{DATA_ROOT}/data/logs"
MAX_STDB_ENTRIES = 5000
UNITS = ("spacetimedb.service", "nginx.service", "ssh.service", "certbot.timer")
UNIT_PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "NRestarts")
MAX_DIFF_LINES = 200
_MARK = "##stdbc-digest:"


def digest_script() -> str:
    """The one command the digest sends: NUL-separated records, each section opened by a marker record."""
    roots = " ".join(CONFIG_ROOTS)
    props = " ".join(f"-p {p}" for p in ("Id", *UNIT_PROPERTIES))
    parts = [
        f"printf '%s\\0' '{_MARK}files'",
        f"find {roots} -printf '%p\\t%y\\t%#m\\t%u:%g\\t%s\\t%l\\0' 2>/dev/null",
        f"printf '%s\\0' '{_MARK}sha256'",
        f"find {roots} -type f -print0 2>/dev/null | xargs -0 -r sha256sum -z 2>/dev/null",
        f"printf '%s\\0' '{_MARK}stdb'",
        f"find {DATA_ROOT} -path '{LOGS}/*' -prune -o -printf '%p\\t%y\\t%#m\\t%u:%g\\t%s\\t%T@\\0' 2>/dev/null "
        f"| LC_ALL=C sort -z "
        f"| head -z -n {MAX_STDB_ENTRIES + 1}",
        f"printf '%s\\0' '{_MARK}units'",
        f"systemctl show {' '.join(UNITS)} {props} 2>/dev/null | tr '\\n' '\\0'",
        f"printf '%s\\0' '{_MARK}boot'",
        "tr '\\n' '\\0' < /proc/sys/kernel/random/boot_id",
        f"printf '%s\\0' '{_MARK}end'",
    ]
    return "; ".join(parts)


def state_digest(target: Target, *, timeout: float = 180.0) -> dict[str, Any]:
    """The host's state digest (JSON-able). `complete` is False, with `error`, when the host did not answer."""
    result = target.run(digest_script(), timeout=timeout)
    digest = parse_digest(result.stdout)
    if not digest["complete"]:
        said = (result.stderr.strip().splitlines() or [f"exit {result.exit_status}"])[-1]
        digest["error"] = f"the digest command did not finish ({'timed out' if result.timed_out else said})"[:300]
    return digest


def parse_digest(output: str) -> dict[str, Any]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for record in output.split("\0"):
        if record.startswith(_MARK):
            current = sections.setdefault(record[len(_MARK):], [])
        elif current is not None:
            current.append(record)
    files: dict[str, dict[str, Any]] = {}
    for record in sections.get("files", []):
        fields = record.split("\t")
        if len(fields) != 6:
            continue
        path, kind, mode, owner, size, link = fields
        files[path] = {"type": kind, "mode": mode, "owner": owner, "size": None if kind == "d" else _int(size),
                       "link": link, "sha256": None}
    for record in sections.get("sha256", []):
        digest, sep, path = record.partition("  ")
        if sep and path in files:
            files[path]["sha256"] = digest
    entries: dict[str, dict[str, Any]] = {}
    for record in sections.get("stdb", []):
        fields = record.split("\t")
        if len(fields) != 6:
            continue
        path, kind, mode, owner, size, mtime = fields
        entries[path] = {"type": kind, "mode": mode, "owner": owner, "size": _int(size), "mtime": mtime}
    truncated = len(entries) > MAX_STDB_ENTRIES
    if truncated:
        entries = dict(list(entries.items())[:MAX_STDB_ENTRIES])
    boot = [r.strip() for r in sections.get("boot", []) if r.strip()]
    return {"version": DIGEST_VERSION, "files": files,
            "stdb": {"entries": entries, "truncated": truncated, "limit": MAX_STDB_ENTRIES},
            "units": _units(sections.get("units", [])), "boot_id": boot[0] if boot else "",
            "complete": "end" in sections}


def _units(records: list[str]) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for record in [*records, ""]:
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
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"... and {len(lines) - MAX_DIFF_LINES} more differences"]
    return lines


def _entries_diff(what: str, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for path in sorted(set(old) | set(new)):
        if path not in new:
            lines.append(f"{what} removed: {path}")
        elif path not in old:
            entry = new[path]
            lines.append(f"{what} added: {path} ({entry.get('type')}, {entry.get('mode')} {entry.get('owner')})")
        elif old[path] != new[path]:
            changes = []
            for key in sorted(set(old[path]) | set(new[path])):
                a, b = old[path].get(key), new[path].get(key)
                if a != b:
                    if key == "sha256":
                        changes.append(f"content sha256 {str(a)[:12]} -> {str(b)[:12]}")
                    else:
                        changes.append(f"{key} {a} -> {b}")
            lines.append(f"{what} changed: {path}: " + ", ".join(changes))
    return lines
