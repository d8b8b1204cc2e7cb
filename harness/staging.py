"""Staging configs: one existing host, or a fleet of them, described in a TOML file (docs/staging.md).

    runbook = "self-hosting.md"          # top-level defaults, for every host
    suites = ["service", "routes", "tls"]
    identity_file = "keys/staging"       # relative paths resolve against this file's folder

    [[hosts]]
    name = "eu-1"
    target = "ssh://deploy@eu-1.example.net"
    url = "https://stdb-eu.example.net"

`load_config(path)` reads and checks the whole file (every error is one line naming the file, the key, the host
and the fix); `StagingConfig.to_run_options(host)` is what one host's run gets. The value checks are shared
with the command line (harness/cli.py), which names its flags instead of keys.

Precedence, lowest first: the kit's defaults, the file's top-level defaults, flags given on the command line
with --config, the host's own table.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.backends import TargetUrl, parse_target
from harness.errors import UsageError
from harness.paths import default_report_dir, default_runbook
from harness.run import RunOptions

DEFAULT_JOBS = 4
FAIL_ON = ("error", "warning", "never")
SPACETIMEDB = ("standin", "real")
LAB_SCHEMES = ("docker", "vm")
# settings that describe a host the kit did not build, or how to reach it: a lab host (docker://, vm://) never
# takes them from the defaults, and rejects them in its own table
SSH_ONLY = ("url", "database", "identity_file", "known_hosts", "accept_new_host_key", "vantage", "resolve", "ca_file")
# key -> kind; the top-level defaults (also allowed in a host's table, except TOP_ONLY)
DEFAULT_KEYS: dict[str, str] = {
    "runbook": "path", "profile": "profile", "suites": "suites", "allow_mutation": "bool",
    "expected_version": "version", "vantage": "vantage", "identity_file": "identity_file",
    "known_hosts": "path", "accept_new_host_key": "bool", "fail_on": "fail_on", "report_dir": "path",
    "jobs": "jobs", "resolve": "resolve", "ca_file": "ca_file", "spacetimedb": "spacetimedb",
}
TOP_ONLY = ("report_dir", "jobs")
HOST_KEYS: dict[str, str] = {"name": "name", "target": "target", "url": "url", "database": "database",
                             **{k: v for k, v in DEFAULT_KEYS.items() if k not in TOP_ONLY}}
FIX_SCHEMA = "see docs/staging.md for the keys"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DATABASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


# ---------------------------------------------------------------- value checks (shared with the CLI)


def _fail(where: str, problem: str, fix: str) -> UsageError:
    return UsageError(f"{where}: {problem}", hint=fix)


def check_target(text: str, where: str) -> TargetUrl:
    try:
        return parse_target(text)
    except UsageError as exc:
        raise _fail(where, exc.message, exc.hint or "ssh://user@host[:port], docker:// or vm://") from None


def check_url(text: str, where: str) -> str:
    """https://DOMAIN[:port][/]: the name the host serves; returned without the trailing slash."""
    from urllib.parse import urlsplit

    fix = "give the https:// URL the host serves, e.g. https://stdb.example.com"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise _fail(where, f"malformed URL {text!r} ({exc})", fix) from None
    if parts.scheme != "https":
        raise _fail(where, f"{text!r} is not an https:// URL", fix)
    host = parts.hostname or ""
    if not host or "@" in parts.netloc:
        raise _fail(where, f"{text!r} has no host name (or has user info)", fix)
    if _is_ip(host.strip("[]")) or not _HOSTNAME.match(host):
        raise _fail(where, f"{host!r} in {text!r} is not a host name", "give the DNS name the site is served "
                    "under, not an address, e.g. https://stdb.example.com (--resolve NAME=ADDRESS says where it is)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _fail(where, f"{text!r} has a path, query or fragment", "give the site's root only: https://DOMAIN")
    return f"https://{host}{f':{port}' if port else ''}"


def check_database(text: str, where: str) -> str:
    if not _DATABASE.match(text):
        raise _fail(where, f"{text!r} is not a database name",
                    "use letters, digits, '-' and '_': a name or identity shown by `spacetime list`")
    return text


def check_version(text: str, where: str) -> str:
    value = text.strip().removeprefix("v")
    if not _VERSION.match(value):
        raise _fail(where, f"{text!r} is not a version", "give MAJOR.MINOR.PATCH, e.g. 1.2.0")
    return value


def check_vantage(text: str, where: str) -> str:
    """"" (this machine) or ssh://user@host[:port]."""
    if not text.strip():
        return ""
    from harness.vantage import VANTAGE_SCHEMES

    parsed = check_target(text, where)
    if parsed.scheme not in VANTAGE_SCHEMES:
        raise _fail(where, f"{text!r} is not a vantage point", "give ssh://user@host[:port], or \"\" for this machine")
    return str(parsed)


def check_host_name(text: str, where: str) -> str:
    if not _HOST_NAME.match(text):
        raise _fail(where, f"{text!r} is not a usable host name",
                    "use letters, digits, '.', '-' and '_': it names the host's report folder")
    return text


def check_resolve_entry(name: str, address: str, where: str) -> tuple[str, str]:
    fix = "give NAME=ADDRESS, e.g. stdb.example.com=203.0.113.7"
    if not _HOSTNAME.match(name) or _is_ip(name):
        raise _fail(where, f"{name!r} is not a host name", fix)
    if not _is_ip(address.strip()):
        raise _fail(where, f"{address!r} (for {name}) is not an IP address", fix)
    return name.lower().rstrip("."), str(ipaddress.ip_address(address.strip()))


def check_resolve_items(items: list[str], where: str) -> dict[str, str]:
    """--resolve NAME=ADDRESS, repeated."""
    table: dict[str, str] = {}
    for item in items:
        name, sep, address = item.partition("=")
        if not sep:
            raise _fail(where, f"{item!r} has no '='", "give NAME=ADDRESS, e.g. stdb.example.com=203.0.113.7")
        key, value = check_resolve_entry(name.strip(), address, where)
        if table.get(key, value) != value:
            raise _fail(where, f"{key} is given two addresses ({table[key]} and {value})", "give one per name")
        table[key] = value
    return table


def check_readable_file(path: Path, where: str, what: str) -> Path:
    if not path.exists():
        raise _fail(where, f"{what} {path} does not exist", f"give the path of an existing {what}")
    if not path.is_file():
        raise _fail(where, f"{what} {path} is not a file", f"give the path of the {what} itself")
    if not os.access(path, os.R_OK):
        raise _fail(where, f"{what} {path} is not readable", f"make it readable by this user (chmod u+r {path})")
    return path


def check_identity_file(path: Path, where: str) -> Path:
    return check_readable_file(path, where, "ssh private key")


def check_known_hosts(path: Path, accept_new: bool, where: str) -> Path:
    """An existing known_hosts file; with --accept-new-host-key it may be created (its folder must exist)."""
    if path.exists() or not accept_new:
        if not path.exists():
            raise _fail(where, f"known_hosts file {path} does not exist",
                        "create it with ssh-keyscan HOST >> FILE after checking the key, or trust the first key "
                        "with --accept-new-host-key")
        return check_readable_file(path, where, "known_hosts file")
    if not path.parent.is_dir():
        raise _fail(where, f"the folder of known_hosts file {path} does not exist", f"mkdir -p {path.parent}")
    return path


def check_ca_file(path: Path, where: str) -> Path:
    check_readable_file(path, where, "CA file")
    fix = "give a PEM bundle of -----BEGIN CERTIFICATE----- blocks"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(where, f"CA file {path} cannot be read ({exc.strerror})", fix) from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise _fail(where, f"CA file {path} holds no PEM certificate", fix)
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _fail(where, f"CA file {path} holds a malformed PEM certificate", fix) from None
    return path


def check_jobs(value: object, where: str) -> int:
    try:
        jobs = int(str(value)) if not isinstance(value, bool) else -1
    except ValueError:
        jobs = -1
    if jobs < 1:
        raise _fail(where, f"{value!r} is not a number of hosts at a time", "give a whole number, at least 1")
    return jobs


def check_suites(items: list[str], where: str) -> list[str]:
    for item in items:
        if not re.match(r"^[a-z_]+$", item):
            raise _fail(where, f"{item!r} is not a suite name", "give names like service, routes, tls")
    return items


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_combination(options: RunOptions, name_of: Callable[[str], str]) -> None:
    """What one host's options must satisfy together; `name_of(field)` names the flag or key."""
    if options.target:
        if options.known_hosts is not None:  # may be created when a first host key is accepted
            check_known_hosts(options.known_hosts, options.accept_new_host_key, name_of("known_hosts"))
        if not options.url:
            raise _fail(name_of("url"), f"missing: an ssh:// target ({options.target}) needs the URL it serves",
                        f"add {name_of('url')} https://DOMAIN")
        return
    for key in SSH_ONLY:
        value = getattr(options, key)
        if value:
            raise _fail(name_of(key), f"only for a host the kit did not build (an ssh:// target), not "
                                      f"{options.backend}://", "drop it, or give an ssh:// target")


# ---------------------------------------------------------------- the file


@dataclass
class HostConfig:
    name: str
    target: str  # ssh://user@host[:port] (normalized), docker:// or vm://
    settings: dict[str, Any] = field(default_factory=dict)  # the host's own values: url, database, overrides

    @property
    def scheme(self) -> str:
        return self.target.partition("://")[0]


@dataclass
class StagingConfig:
    path: Path
    defaults: dict[str, Any]
    hosts: list[HostConfig]

    @property
    def is_fleet(self) -> bool:
        return len(self.hosts) > 1

    @property
    def jobs(self) -> int:
        return int(self.defaults.get("jobs") or DEFAULT_JOBS)

    @property
    def report_dir(self) -> Path:
        value = self.defaults.get("report_dir")
        return Path(value) if value else default_report_dir()

    def host(self, name: str) -> HostConfig:
        for host in self.hosts:
            if host.name == name:
                return host
        raise UsageError(f"{self.path}: no host named {name!r}", hint=f"hosts: {', '.join(h.name for h in self.hosts)}")

    def with_overrides(self, overrides: dict[str, Any]) -> StagingConfig:
        """A copy whose defaults the given values (command-line flags, already checked) replace."""
        unknown = set(overrides) - set(DEFAULT_KEYS) - {"keep_lab"}
        if unknown:
            raise ValueError(f"not overridable: {sorted(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, defaults={**self.defaults, **given})

    def to_run_options(self, host: HostConfig | str) -> RunOptions:
        """One host's run: its table over the defaults; in a fleet its reports go to <report_dir>/<name>/."""
        if isinstance(host, str):
            host = self.host(host)
        lab = host.scheme in LAB_SCHEMES
        merged = {k: v for k, v in self.defaults.items() if not (lab and k in SSH_ONLY)}
        merged.update(host.settings)
        runbook = merged.get("runbook") or default_runbook()
        if runbook is None:
            raise UsageError(f"{self.path}: host {host.name!r}: no runbook",
                             hint="set runbook = \"PATH\" in the file, pass --runbook or set STDB_RUNBOOK")
        report_dir = self.report_dir / host.name if self.is_fleet else self.report_dir
        options = RunOptions(
            runbook=Path(runbook), profile=merged.get("profile") or "default",
            backend=host.scheme, spacetimedb=merged.get("spacetimedb") or "standin", report_dir=report_dir,
            suites=list(merged.get("suites") or []), keep_lab=bool(merged.get("keep_lab")),
            fail_on=merged.get("fail_on") or "error", target="" if lab else host.target,
            url=merged.get("url") or "", database=merged.get("database") or "",
            identity_file=merged.get("identity_file"), known_hosts=merged.get("known_hosts"),
            accept_new_host_key=bool(merged.get("accept_new_host_key")),
            allow_mutation=bool(merged.get("allow_mutation")), vantage=merged.get("vantage") or "",
            expected_version=merged.get("expected_version") or "", resolve=dict(merged.get("resolve") or {}),
            ca_file=merged.get("ca_file"))
        check_combination(options, lambda key: f"{self.path}: host {host.name!r}: {key}")
        return options


def load_config(path: Path) -> StagingConfig:
    """Read and check a staging config: one host (top-level target) or a fleet ([[hosts]] tables)."""
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file", hint="give the path of a staging .toml (docs/staging.md)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}", hint="fix the syntax (docs/staging.example.toml)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})",
                         hint="check the path and its permissions") from None
    reader = _Reader(path)
    tables = data.pop("hosts", None)
    single: dict[str, Any] = {k: data.pop(k) for k in ("name", "target", "url", "database") if k in data}
    defaults = reader.values(data, DEFAULT_KEYS, prefix="")
    if tables is None:
        if "target" not in single:
            raise UsageError(f"{path}: no host: neither a top-level target nor [[hosts]] tables",
                             hint="add target = \"ssh://user@host\" and url = \"https://DOMAIN\", or [[hosts]] tables")
        hosts = [reader.host(single, None)]
    else:
        if single:
            raise UsageError(f"{path}: {', '.join(sorted(single))} at the top level and [[hosts]] tables",
                             hint="put name, target, url and database in each [[hosts]] table")
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise UsageError(f"{path}: hosts must be [[hosts]] tables", hint="one [[hosts]] table per host")
        hosts = [reader.host(table, n) for n, table in enumerate(tables, 1)]
    seen: dict[str, int] = {}
    for n, host in enumerate(hosts, 1):
        if host.name in seen:
            raise UsageError(f"{path}: hosts[{n}]: name {host.name!r} is also the name of hosts[{seen[host.name]}]",
                             hint="give every host its own name = \"...\" (it names its report folder)")
        seen[host.name] = n
    config = StagingConfig(path=path, defaults=defaults, hosts=hosts)
    for host in hosts:
        config.to_run_options(host)  # what the host's run needs together (an ssh:// target needs its url, ...)
    return config


class _Reader:
    """Typed values of a staging file, each error naming the file, the host and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.resolve().parent

    def where(self, prefix: str, key: str) -> str:
        return f"{self.path}: {prefix}{key}"

    def values(self, table: dict[str, Any], allowed: dict[str, str], *, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in table:
            if key not in allowed:
                extra = " (only at the top level)" if key in TOP_ONLY and prefix else ""
                raise UsageError(f"{self.where(prefix, key)}: unknown key{extra}",
                                 hint=f"known: {', '.join(sorted(allowed))}; {FIX_SCHEMA}")
        for key, value in table.items():
            out[key] = self.value(prefix, key, allowed[key], value)
        return out

    def host(self, table: dict[str, Any], index: int | None) -> HostConfig:
        label = f"hosts[{index}]" if index is not None else ""
        if isinstance(table.get("name"), str) and _HOST_NAME.match(table["name"]):
            label = f"host {table['name']!r}"
        prefix = f"{label}: " if label else ""
        if "target" not in table:
            raise UsageError(f"{self.path}: {prefix}target: missing",
                             hint="add target = \"ssh://user@host[:port]\" (or docker:// / vm:// for a lab host)")
        settings = self.values(table, HOST_KEYS, prefix=prefix)
        target = settings.pop("target")
        if target.scheme in LAB_SCHEMES:
            for key in SSH_ONLY:
                if key in settings:
                    raise UsageError(f"{self.where(prefix, key)}: only for an ssh:// target, not {target.scheme}://",
                                     hint="drop the key, or give an ssh:// target")
        name = settings.pop("name", "") or _default_name(target, settings.get("url", ""))
        check_host_name(name, self.where(prefix, "name"))
        return HostConfig(name=name, target=str(target), settings=settings)

    def value(self, prefix: str, key: str, kind: str, value: Any) -> Any:
        where = self.where(prefix, key)
        if kind == "bool":
            return self.typed(where, value, bool, "true or false")
        if kind == "jobs":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(where, f"{value!r} is not a whole number", "give a whole number, at least 1")
            return check_jobs(value, where)
        if kind == "suites":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _fail(where, f"{value!r} is not a list of suite names", 'give e.g. ["service", "routes"]')
            return check_suites(value, where)
        if kind == "resolve":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise _fail(where, "not a table of NAME = \"ADDRESS\"", 'give e.g. resolve = { "stdb.example.com" = '
                                                                         '"203.0.113.7" }')
            return dict(check_resolve_entry(k, v, where) for k, v in value.items())
        text = self.typed(where, value, str, "a string in quotes")
        if kind == "name":
            return check_host_name(text, where)
        if kind == "target":
            return check_target(text, where)
        if kind == "url":
            return check_url(text, where)
        if kind == "database":
            return check_database(text, where)
        if kind == "version":
            return check_version(text, where)
        if kind == "vantage":
            return check_vantage(text, where)
        if kind == "fail_on" or kind == "spacetimedb":
            choices = FAIL_ON if kind == "fail_on" else SPACETIMEDB
            if text not in choices:
                raise _fail(where, f"{text!r} is not one of {', '.join(choices)}", f"give one of {', '.join(choices)}")
            return text
        if kind == "profile":
            return str(self.resolve(text)) if text.endswith(".toml") or "/" in text else text
        path = self.resolve(text)
        if kind == "identity_file":
            return check_identity_file(path, where)
        if kind == "ca_file":
            return check_ca_file(path, where)
        if key == "runbook":
            return check_readable_file(path, where, "runbook")
        return path

    @staticmethod
    def typed(where: str, value: Any, kind: type, wanted: str) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _fail(where, f"{value!r} is a {type(value).__name__}, not {wanted}", f"write it as {wanted}")
        return value

    def resolve(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path


def _default_name(target: TargetUrl, url: str) -> str:
    if url:
        return url.removeprefix("https://").partition(":")[0]
    return target.host or target.scheme
