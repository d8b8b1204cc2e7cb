"""The mutation catalogue: load catalogue.toml, validate it, and apply runbook edits.

Every problem is a `CatalogueError` (a usage error: one line, exit 2) naming the entry and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError

CATALOGUE_PATH = Path(__file__).resolve().parent / "catalogue.toml"
BACKENDS = ("docker", "vm")
KINDS = ("runbook", "host", "env")
USER_RUNBOOK = "$STDB_RUNBOOK"  # a config's runbook: the one given with --runbook (default $STDB_RUNBOOK)
RED = ("failed", "error")
_CHECK_IN_SUITE = re.compile(r"@pytest\.mark\.check\(\s*\"([a-z0-9_.-]+)\"")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")

_CONFIG_KEYS = {"id", "description", "runbook", "profile", "suites", "backends", "env", "known_red"}
_MUTANT_KEYS = {"id", "description", "config", "backends", "kind", "edits", "commands", "env", "expect_red",
                "may_also_fail", "exclusive", "touches", "sentinel"}


class CatalogueError(UsageError):
    """The catalogue (or a runbook it edits) is broken."""


@dataclass(frozen=True)
class Edit:
    """One exact replacement (`old` -> `new`) or one regex substitution (`pattern` -> `replacement`)."""

    old: str = ""
    new: str = ""
    pattern: str = ""
    replacement: str = ""

    def describe(self) -> str:
        return f"pattern {self.pattern!r}" if self.pattern else f"text {self.old!r}"

    def to_dict(self) -> dict[str, str]:
        if self.pattern:
            return {"pattern": self.pattern, "replacement": self.replacement}
        return {"old": self.old, "new": self.new}


@dataclass(frozen=True)
class Config:
    id: str
    description: str
    runbook: str  # USER_RUNBOOK or a path relative to the catalogue file
    profile: str  # built-in name, or a .toml path relative to the catalogue file
    suites: tuple[str, ...]
    backends: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    known_red: dict[str, str] = field(default_factory=dict)  # check id -> why it is red on the baseline


@dataclass(frozen=True)
class Mutant:
    id: str
    description: str
    config: str
    backends: tuple[str, ...]
    kind: str
    expect_red: tuple[str, ...]
    may_also_fail: tuple[str, ...] = ()
    edits: tuple[Edit, ...] = ()
    commands: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    exclusive: bool = False
    touches: tuple[str, ...] = ()  # what on the host it changes beyond its edits' text (e.g. "nginx-catch-all")
    sentinel: bool = False  # the backend's forced-fail mutant: every selftest (every shard) runs it first
    suites: tuple[str, ...] = ()  # the suites holding its expect_red checks: what a run must hold to detect it

    @property
    def red_set(self) -> frozenset[str]:
        return frozenset(self.expect_red) | frozenset(self.may_also_fail)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "description": self.description, "config": self.config, "kind": self.kind,
                "backends": list(self.backends), "expect_red": list(self.expect_red),
                "may_also_fail": list(self.may_also_fail), "edits": [e.to_dict() for e in self.edits],
                "commands": list(self.commands), "env": dict(self.env), "exclusive": self.exclusive,
                "touches": list(self.touches), "sentinel": self.sentinel, "suites": list(self.suites)}


@dataclass
class Catalogue:
    path: Path
    configs: dict[str, Config]
    mutants: list[Mutant]

    def mutant(self, mutant_id: str) -> Mutant:
        return next(m for m in self.mutants if m.id == mutant_id)

    def sentinel(self, backend: str) -> Mutant | None:
        """The backend's forced-fail mutant (at most one per backend: load_catalogue checks)."""
        return next((m for m in self.mutants if m.sentinel and backend in m.backends), None)

    def runbook_path(self, config: Config, user_runbook: Path | None) -> Path:
        """The file a config's baseline applies."""
        if config.runbook == USER_RUNBOOK:
            if user_runbook is None:
                raise CatalogueError(f"config {config.id} applies your runbook, and none was given",
                                     hint="pass --runbook PATH or set STDB_RUNBOOK")
            path = user_runbook
        else:
            path = self.path.parent / config.runbook
        if not path.is_file():
            raise CatalogueError(f"config {config.id}: runbook not found: {path}")
        return path

    def profile_arg(self, config: Config) -> str:
        """What `run --profile` gets: a built-in name as is, a .toml file as an absolute path."""
        if config.profile.endswith(".toml"):
            return str((self.path.parent / config.profile).resolve())
        return config.profile


def known_checks(suites_dir: Path | None = None) -> dict[str, str]:
    """Every check id the suites define, with its suite."""
    if suites_dir is None:
        from harness.paths import SUITES_DIR

        suites_dir = SUITES_DIR
    found: dict[str, str] = {}
    for path in sorted(suites_dir.glob("test_*.py")):
        for check_id in _CHECK_IN_SUITE.findall(path.read_text()):
            found[check_id] = path.stem.removeprefix("test_")
    return found


def load_catalogue(path: Path | None = None, checks: dict[str, str] | None = None) -> Catalogue:
    """Read and validate the catalogue (default: the one shipped with the kit)."""
    path = path or CATALOGUE_PATH
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CatalogueError(f"cannot read the mutation catalogue {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{path}: not valid TOML: {exc}") from None
    checks = known_checks() if checks is None else checks
    unknown = sorted(set(data) - {"configs", "mutants"})
    if unknown:
        raise CatalogueError(f"{path}: unknown top-level key(s) {', '.join(unknown)} (expected configs, mutants)")
    configs: dict[str, Config] = {}
    for raw in _table_list(path, data, "configs"):
        config = _config(path, raw, checks)
        if config.id in configs:
            raise CatalogueError(f"{path}: config id {config.id!r} is used twice")
        configs[config.id] = config
    mutants: list[Mutant] = []
    for raw in _table_list(path, data, "mutants"):
        mutant = _mutant(path, raw, configs, checks)
        if any(m.id == mutant.id for m in mutants) or mutant.id in configs:
            raise CatalogueError(f"{path}: mutant id {mutant.id!r} is used twice (ids of configs and mutants "
                                 f"share one name space)")
        mutants.append(mutant)
    for backend in BACKENDS:
        sentinels = [m.id for m in mutants if m.sentinel and backend in m.backends]
        if len(sentinels) > 1:
            raise CatalogueError(f"{path}: backend {backend} has {len(sentinels)} sentinel mutants "
                                 f"({', '.join(sentinels)}): one forced-fail mutant per backend")
    return Catalogue(path=path, configs=configs, mutants=mutants)


def _table_list(path: Path, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise CatalogueError(f"{path}: `{key}` must be an array of tables ([[{key}]])")
    return value


def _where(path: Path, kind: str, raw: dict[str, Any]) -> str:
    return f"{path.name}: {kind} {raw.get('id', '(no id)')!r}"


def _str(where: str, raw: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise CatalogueError(f"{where}: `{key}` must be a non-empty string")
    return value


def _strs(where: str, raw: dict[str, Any], key: str, *, required: bool = True) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or (required and not value):
        raise CatalogueError(f"{where}: `{key}` must be a {'non-empty ' if required else ''}list of strings")
    if len(set(value)) != len(value):
        raise CatalogueError(f"{where}: `{key}` lists an entry twice")
    return tuple(value)


def _str_table(where: str, raw: dict[str, Any], key: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise CatalogueError(f"{where}: `{key}` must be a table of strings")
    return dict(value)


def _ident(where: str, value: str) -> str:
    if not _ID.match(value):
        raise CatalogueError(f"{where}: id {value!r} must be lower-case letters, digits and dashes")
    return value


def _backends(where: str, raw: dict[str, Any]) -> tuple[str, ...]:
    backends = _strs(where, raw, "backends")
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise CatalogueError(f"{where}: unknown backend(s) {', '.join(bad)} (known: {', '.join(BACKENDS)})")
    return backends


def _config(path: Path, raw: dict[str, Any], checks: dict[str, str]) -> Config:
    where = _where(path, "config", raw)
    extra = sorted(set(raw) - _CONFIG_KEYS)
    if extra:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(extra)}")
    suites = _strs(where, raw, "suites")
    known_suites = set(checks.values())
    bad = [s for s in suites if s not in known_suites]
    if bad:
        raise CatalogueError(f"{where}: unknown suite(s) {', '.join(bad)}")
    known_red = _str_table(where, raw, "known_red")
    for check_id in known_red:
        _check(where, check_id, checks, suites)
    runbook = _str(where, raw, "runbook")
    if runbook != USER_RUNBOOK and not (path.parent / runbook).is_file():
        raise CatalogueError(f"{where}: runbook {runbook} not found next to the catalogue "
                             f"(use {USER_RUNBOOK} for the runbook given with --runbook)")
    profile = _str(where, raw, "profile")
    if profile.endswith(".toml") and not (path.parent / profile).is_file():
        raise CatalogueError(f"{where}: profile {profile} not found next to the catalogue")
    return Config(id=_ident(where, _str(where, raw, "id")), description=_str(where, raw, "description"),
                  runbook=runbook, profile=profile, suites=suites, backends=_backends(where, raw),
                  env=_str_table(where, raw, "env"), known_red=known_red)


def _check(where: str, check_id: str, checks: dict[str, str], suites: tuple[str, ...]) -> None:
    if check_id not in checks:
        raise CatalogueError(f"{where}: unknown check id {check_id!r} (see docs/checks.md)")
    if checks[check_id] not in suites:
        raise CatalogueError(f"{where}: check {check_id} belongs to suite {checks[check_id]}, which the config "
                             f"does not run ({', '.join(suites)})")


def _mutant(path: Path, raw: dict[str, Any], configs: dict[str, Config], checks: dict[str, str]) -> Mutant:
    where = _where(path, "mutant", raw)
    extra = sorted(set(raw) - _MUTANT_KEYS)
    if extra:
        raise CatalogueError(f"{where}: unknown key(s) {', '.join(extra)}")
    mutant_id = _ident(where, _str(where, raw, "id"))
    config_id = _str(where, raw, "config")
    if config_id not in configs:
        raise CatalogueError(f"{where}: unknown config {config_id!r}")
    config = configs[config_id]
    backends = _backends(where, raw)
    off = [b for b in backends if b not in config.backends]
    if off:
        raise CatalogueError(f"{where}: backend(s) {', '.join(off)} not among config {config_id}'s "
                             f"({', '.join(config.backends)})")
    kind = _str(where, raw, "kind")
    if kind not in KINDS:
        raise CatalogueError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    expect = _strs(where, raw, "expect_red")
    may = _strs(where, raw, "may_also_fail", required=False)
    for check_id in expect + may:
        _check(where, check_id, checks, config.suites)
    both = sorted(set(expect) & set(may))
    if both:
        raise CatalogueError(f"{where}: {', '.join(both)} in both expect_red and may_also_fail")
    known = sorted(set(expect + may) & set(config.known_red))
    if known:
        raise CatalogueError(f"{where}: {', '.join(known)} is already red on config {config_id}'s baseline "
                             f"(known_red): a mutant cannot prove anything with it")
    exclusive = raw.get("exclusive", False)
    sentinel = raw.get("sentinel", False)
    if not isinstance(exclusive, bool) or not isinstance(sentinel, bool):
        raise CatalogueError(f"{where}: `exclusive` and `sentinel` must be true or false")
    edits: tuple[Edit, ...] = ()
    commands: tuple[str, ...] = ()
    env: dict[str, str] = {}
    needed = {"runbook": "edits", "host": "commands", "env": "env"}[kind]
    for key in ("edits", "commands", "env"):
        if key != needed and key in raw:
            raise CatalogueError(f"{where}: `{key}` does not belong to a {kind} mutant (it takes `{needed}`)")
    if kind == "runbook":
        edits = _edits(where, raw)
    elif kind == "host":
        commands = _strs(where, raw, "commands")
    else:
        env = _str_table(where, raw, "env")
        if not env:
            raise CatalogueError(f"{where}: an env mutant needs a non-empty `env` table")
    return Mutant(id=mutant_id, description=_str(where, raw, "description"), config=config_id,
                  backends=backends, kind=kind, expect_red=expect, may_also_fail=may, edits=edits,
                  commands=commands, env=env, exclusive=exclusive,
                  touches=_strs(where, raw, "touches", required=False), sentinel=sentinel,
                  suites=tuple(s for s in config.suites if any(checks[c] == s for c in expect)))


def _edits(where: str, raw: dict[str, Any]) -> tuple[Edit, ...]:
    value = raw.get("edits")
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise CatalogueError(f"{where}: `edits` must be a non-empty list of tables")
    edits = []
    for item in value:
        keys = set(item)
        if keys == {"old", "new"} and all(isinstance(item[k], str) for k in keys) and item["old"]:
            edits.append(Edit(old=item["old"], new=item["new"]))
        elif keys == {"pattern", "replacement"} and all(isinstance(item[k], str) for k in keys) and item["pattern"]:
            try:
                re.compile(item["pattern"])
            except re.error as exc:
                raise CatalogueError(f"{where}: bad pattern {item['pattern']!r}: {exc}") from None
            edits.append(Edit(pattern=item["pattern"], replacement=item["replacement"]))
        else:
            raise CatalogueError(f"{where}: each edit is {{old, new}} or {{pattern, replacement}} (non-empty "
                                 f"old/pattern), got keys {', '.join(sorted(keys)) or 'none'}")
    return tuple(edits)


# ---------------------------------------------------------------- runbook edits


@dataclass(frozen=True)
class Span:
    """Where one edit matched in the reference text, and what replaces it."""

    start: int
    end: int
    text: str

    def overlaps(self, other: Span) -> bool:
        # touching edits (one ends where the other starts) would still change each other's context
        return self.start <= other.end and other.start <= self.end


def locate(mutant: Mutant, edit: Edit, text: str, runbook: Path) -> Span:
    """The single place `edit` matches in `text`; any other number of matches is a broken catalogue."""
    if edit.pattern:
        matches = list(re.finditer(edit.pattern, text))
        if len(matches) == 1:
            match = matches[0]
            return Span(match.start(), match.end(), match.expand(edit.replacement))
        count = len(matches)
    else:
        count = text.count(edit.old)
        if count == 1:
            start = text.index(edit.old)
            return Span(start, start + len(edit.old), edit.new)
    raise CatalogueError(f"mutant {mutant.id}: {edit.describe()} matches {count} times in {runbook} (exactly once "
                         f"needed): the catalogue does not fit this runbook",
                         hint="fix the catalogue entry, or leave the mutant out with --only")


def spans(mutant: Mutant, text: str, runbook: Path) -> list[Span]:
    found = [locate(mutant, edit, text, runbook) for edit in mutant.edits]
    for i, a in enumerate(found):
        for b in found[i + 1:]:
            if a.overlaps(b):
                raise CatalogueError(f"mutant {mutant.id}: two of its edits touch the same text of {runbook}")
    return found


def apply_spans(text: str, found: list[Span]) -> str:
    """Replace every (non-overlapping) span of the reference text at once."""
    out, last = [], 0
    for span in sorted(found, key=lambda s: s.start):
        out.append(text[last:span.start])
        out.append(span.text)
        last = span.end
    out.append(text[last:])
    return "".join(out)
