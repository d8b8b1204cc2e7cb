"""Profiles: placeholder values, section -> phase rules and an optional section order.

A profile is a TOML file (built-ins live in harness/profiles/*.toml):

    name = "default"
    description = "..."
    order = []                          # section regexes applied first, in this order (see below)

    [placeholders]
    "example.com" = "stdb.lab.test"     # static: replaced in commands, file contents and line edits
    YOUR_UUID_HERE = {dynamic = "blkid", device = "/dev/nvme1n1", field = "UUID"}
                                        # dynamic: left in the text, marked, filled by the applier

    [[phases]]
    section = "^Step 6: Updating"      # re.search against every heading title of a step's section path
    phase = "upgrade"

Phase: the first rule matching any heading of the step's section path wins; no match -> "apply".
Order: steps whose section matches order[0] come first (document order among them), then those
matching order[1], ...; every other step follows in document order. A step is claimed by the first
entry that matches. An entry that matches no section of the runbook is an error (stale profile).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.model import Substitution

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
PHASES = ("apply", "operator", "upgrade", "restore", "diagnostics", "skip")
DYNAMIC_KINDS = ("blkid",)
BLKID_FIELDS = ("UUID", "PARTUUID", "LABEL", "TYPE")
_TOP_KEYS = {"name", "description", "placeholders", "phases", "order"}


@dataclass(frozen=True)
class Placeholder:
    token: str
    value: str = ""
    dynamic: str = ""  # "" for static; else the kind ("blkid")
    device: str = ""
    field: str = ""

    @property
    def is_dynamic(self) -> bool:
        return bool(self.dynamic)

    def describe_value(self) -> str:
        if self.is_dynamic:
            return f"<{self.field} of {self.device}, read with {self.dynamic} at apply time>"
        return self.value

    def substitution(self, line: int, profile: str) -> Substitution:
        if self.is_dynamic:
            source = f"{self.dynamic} {self.device} ({self.field}), decided at apply time"
            return Substitution(self.token, self.describe_value(), line, dynamic=True, source=source)
        return Substitution(self.token, self.value, line, source=f"profile {profile}")


@dataclass(frozen=True)
class PhaseRule:
    pattern: re.Pattern[str]
    phase: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    source: str  # the file it was read from
    placeholders: dict[str, Placeholder]
    phases: tuple[PhaseRule, ...] = ()
    order: tuple[re.Pattern[str], ...] = ()

    def phase_for(self, section: tuple[str, ...]) -> str:
        for rule in self.phases:
            if _matches(rule.pattern, section):
                return rule.phase
        return "apply"

    def order_rank(self, section: tuple[str, ...]) -> int | None:
        """Position of the first `order` entry matching the section, or None (document order)."""
        for rank, pattern in enumerate(self.order):
            if _matches(pattern, section):
                return rank
        return None


def _matches(pattern: re.Pattern[str], section: tuple[str, ...]) -> bool:
    return any(pattern.search(title) for title in section)


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name, or a profile .toml file by path."""
    text = str(name_or_path)
    builtin = PROFILE_DIR / f"{text}.toml"
    if "/" not in text and not text.endswith(".toml") and builtin.is_file():
        return _load_file(builtin)
    path = Path(text).expanduser()
    if path.is_file():
        return _load_file(path)
    names = ", ".join(builtin_profiles())
    raise UsageError(f"unknown profile: {text}",
                     hint=f"built-in profiles: {names}; or pass the path of a profile .toml file")


def _load_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read profile {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"profile {path} is not valid TOML: {exc}") from exc
    return profile_from_dict(data, path)


def profile_from_dict(data: dict[str, Any], path: Path) -> Profile:
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _bad(path, f"unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(_TOP_KEYS))})")
    name = str(data.get("name") or path.stem)
    raw_placeholders = data.get("placeholders", {})
    if not isinstance(raw_placeholders, dict):
        raise _bad(path, "[placeholders] must be a table")
    statics = {k: v for k, v in raw_placeholders.items() if isinstance(v, str)}
    placeholders = {token: _placeholder(path, token, value, statics)
                    for token, value in raw_placeholders.items()}
    phases = tuple(_phase_rule(path, rule) for rule in _list(path, data, "phases"))
    order = tuple(_regex(path, entry, "order") for entry in _list(path, data, "order"))
    return Profile(name, str(data.get("description", "")), str(path), placeholders, phases, order)


def _bad(path: Path, message: str) -> UsageError:
    return UsageError(f"profile {path}: {message}")


def _list(path: Path, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise _bad(path, f"`{key}` must be a list")
    return value


def _regex(path: Path, value: Any, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise _bad(path, f"{where}: expected a regular expression string, got {value!r}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise _bad(path, f"{where}: bad regular expression {value!r}: {exc}") from exc


def _phase_rule(path: Path, rule: Any) -> PhaseRule:
    if not isinstance(rule, dict) or set(rule) != {"section", "phase"}:
        raise _bad(path, f"[[phases]] entries need exactly `section` and `phase`, got {rule!r}")
    if rule["phase"] not in PHASES:
        raise _bad(path, f"unknown phase {rule['phase']!r} (phases: {', '.join(PHASES)})")
    return PhaseRule(_regex(path, rule["section"], "[[phases]] section"), rule["phase"])


def _placeholder(path: Path, token: str, value: Any, statics: dict[str, str]) -> Placeholder:
    if not token:
        raise _bad(path, "empty placeholder name")
    if isinstance(value, str):
        return Placeholder(token, value)
    if not isinstance(value, dict) or "dynamic" not in value:
        raise _bad(path, f"placeholder {token!r}: expected a string or {{dynamic = ...}}, got {value!r}")
    kind = value["dynamic"]
    if kind not in DYNAMIC_KINDS:
        raise _bad(path, f"placeholder {token!r}: unknown dynamic source {kind!r} "
                         f"(known: {', '.join(DYNAMIC_KINDS)})")
    device = str(value.get("device", ""))
    field = str(value.get("field", "UUID"))
    if not device.startswith("/dev/"):
        raise _bad(path, f"placeholder {token!r}: blkid needs `device = \"/dev/...\"`")
    if field not in BLKID_FIELDS:
        raise _bad(path, f"placeholder {token!r}: unknown blkid field {field!r}")
    return Placeholder(token, dynamic=kind, device=statics.get(device, device), field=field)
