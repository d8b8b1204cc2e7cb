"""Which lab runs the selftest makes: one baseline per config, and groups of mutants sharing a run.

Mutants of the same config share a run when the checks they may turn red (expect_red + may_also_fail) are
pairwise disjoint, their runbook edits touch different text, their env variables differ, they declare no
common `touches` tag (what a host command changes, e.g. the site's catch-all location) and none is
`exclusive`. Packing is greedy (first fit, mutants with the most checks first) and deterministic, so every
shard of a CI matrix computes the same list of units.

Gate units are the baselines and the unit holding the backend's sentinel (forced-fail) mutant: a selftest starts
them first, starts a config's groups once its baseline has kept its checkpoints (or ended) and the forced-fail
unit has ended, and starts nothing more when a gate fails; every shard runs the gates its own units need (the
baselines of their configs, and always the forced-fail unit), so no shard judges a mutant against a baseline
that ran elsewhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.selftest.catalogue import Catalogue, Config, Mutant, Span, apply_spans, spans


@dataclass
class Unit:
    """One lab run: a config's baseline (no members) or a group of mutants."""

    id: str
    config: Config
    members: list[Mutant] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "group" if self.members else "baseline"

    @property
    def gate(self) -> bool:
        """Run first, by every shard that needs it: a baseline, or the unit of the forced-fail mutant."""
        return not self.members or any(m.sentinel for m in self.members)

    @property
    def suites(self) -> tuple[str, ...]:
        """A baseline runs every suite of its config (each check a mutant expects red must be green there); a
        group only those holding its members' expected checks: a suite none of them can turn red would show
        nothing about them. Checks of the suites it runs that go red unexpected still make the unit invalid."""
        if not self.members:
            return self.config.suites
        wanted = {s for m in self.members for s in m.suites}
        return tuple(s for s in self.config.suites if s in wanted)

    @property
    def commands(self) -> list[str]:
        return [c for m in self.members for c in m.commands]

    @property
    def env(self) -> dict[str, str]:
        found = dict(self.config.env)
        for member in self.members:
            found.update(member.env)
        return found

    def describe(self) -> str:
        if not self.members:
            return f"{self.id}: baseline of {self.config.id} ({', '.join(self.config.suites)})"
        return (f"{self.id}: {len(self.members)} mutant(s): {', '.join(m.id for m in self.members)} "
                f"({', '.join(self.suites)})")


def select(catalogue: Catalogue, backend: str, only: list[str] | None = None) -> list[Mutant]:
    """The mutants for this backend, optionally narrowed to ids (or config ids) listed in `only`."""
    mutants = [m for m in catalogue.mutants if backend in m.backends]
    if only:
        known = {m.id for m in catalogue.mutants} | set(catalogue.configs)
        unknown = [i for i in only if i not in known]
        if unknown:
            raise UsageError(f"--only: unknown mutant or config id(s): {', '.join(unknown)}",
                             hint="stdb-conformance selftest --list shows them")
        wanted = set(only)
        mutants = [m for m in mutants if m.id in wanted or m.config in wanted]
    if not mutants:
        raise UsageError(f"no mutant of the catalogue runs on the {backend} backend"
                         + (f" among --only {','.join(only)}" if only else ""))
    sentinel = catalogue.sentinel(backend)
    if sentinel is None:
        raise UsageError(f"the catalogue has no forced-fail mutant (sentinel = true) for the {backend} backend: a "
                         f"selftest that cannot show one detection proves nothing")
    if sentinel not in mutants:  # --only: the forced-fail run comes along
        mutants = [m for m in catalogue.mutants if m in mutants or m is sentinel]
    return mutants


def plan_units(catalogue: Catalogue, mutants: list[Mutant], texts: dict[str, str],
               paths: dict[str, Path]) -> list[Unit]:
    """Every unit, in a stable order: per config (catalogue order) its baseline, then its groups.

    `texts` maps config id -> reference runbook text (the edits are located in it), `paths` -> its file."""
    units: list[Unit] = []
    for config in catalogue.configs.values():
        members = [m for m in mutants if m.config == config.id]
        if not members:
            continue
        text, path = texts[config.id], paths[config.id]
        units.append(Unit(id=f"{config.id}.baseline", config=config))
        for n, group in enumerate(pack(members, text, path), start=1):
            found = [s for m in group for s in spans(m, text, path)]
            units.append(Unit(id=f"{config.id}.g{n:02d}", config=config, members=group, spans=found))
    return units


def compatible(a: Mutant, b: Mutant, a_spans: list[Span], b_spans: list[Span]) -> bool:
    if a.exclusive or b.exclusive or a.config != b.config:
        return False
    if a.red_set & b.red_set:
        return False
    if set(a.env) & set(b.env) or set(a.touches) & set(b.touches):
        return False
    return not any(x.overlaps(y) for x in a_spans for y in b_spans)


def pack(mutants: list[Mutant], text: str, runbook: Path) -> list[list[Mutant]]:
    """Greedy first-fit packing; each group keeps catalogue order inside."""
    order = {m.id: i for i, m in enumerate(mutants)}
    located = {m.id: spans(m, text, runbook) for m in mutants}
    ranked = sorted(mutants, key=lambda m: (m.exclusive, -len(m.red_set), order[m.id]))
    groups: list[list[Mutant]] = []
    for mutant in ranked:
        for group in groups:
            if all(compatible(mutant, other, located[mutant.id], located[other.id]) for other in group):
                group.append(mutant)
                break
        else:
            groups.append([mutant])
    for group in groups:
        group.sort(key=lambda m: order[m.id])
    groups.sort(key=lambda g: order[g[0].id])
    return groups


def parse_shard(value: str) -> tuple[int, int]:
    """`I/N` with 1 <= I <= N."""
    index, sep, total = value.partition("/")
    if not sep or not index.isdigit() or not total.isdigit() or not 1 <= int(index) <= int(total):
        raise UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(index), int(total)


def shard(units: list[Unit], index: int, total: int) -> list[Unit]:
    """Shard `index` of `total` (1-based): the non-gate units whose position among them modulo `total` is
    `index - 1`, plus the gates they need (their configs' baselines) and the forced-fail unit with its
    config's baseline, in plan order."""
    others = [u for u in units if not u.gate]
    own = {u.id for n, u in enumerate(others) if n % total == index - 1}
    sentinel_configs = {u.config.id for u in units if u.gate and u.members}
    configs = {u.config.id for u in others if u.id in own} | sentinel_configs
    return [u for u in units if u.id in own or (u.gate and (u.members or u.config.id in configs))]


# ---------------------------------------------------------------- what a unit's run gets


def prepare(unit: Unit, catalogue: Catalogue, runbook: Path, reference: str, backend: str, unit_dir: Path,
            python: str) -> dict[str, Any]:
    """Write the unit's runbook, host commands and description into `unit_dir`; return unit.json's content."""
    from harness.run import SUITE_ORDER

    unit_dir.mkdir(parents=True, exist_ok=True)
    if unit.spans:
        data = apply_spans(reference, unit.spans).encode()
        run_runbook = unit_dir / "runbook.md"
        run_runbook.write_bytes(data)
    else:
        data = runbook.read_bytes()
        run_runbook = runbook
    suites = sorted(unit.suites, key=lambda s: (SUITE_ORDER.index(s) if s in SUITE_ORDER else 99, s))
    argv = [python, "-m", "harness", "run", "--backend", backend, "--runbook", str(run_runbook),
            "--profile", catalogue.profile_arg(unit.config), "--suites", ",".join(suites),
            "--report-dir", str(unit_dir / "run")]
    if unit.commands:
        host = unit_dir / "host.json"
        host.write_text(json.dumps({"commands": unit.commands,
                                    "mutants": [{"id": m.id, "commands": list(m.commands)}
                                                for m in unit.members if m.commands]}, indent=1))
        argv += ["--mutate-host", str(host)]
    record = {"schema": 1, "id": unit.id, "kind": unit.kind, "config": unit.config.id, "backend": backend,
              "runbook": str(run_runbook), "runbook_sha256": hashlib.sha256(data).hexdigest(),
              "profile": unit.config.profile, "suites": suites, "env": unit.env,
              "known_red": dict(unit.config.known_red), "host_commands": unit.commands,
              "members": [m.to_dict() for m in unit.members], "argv": argv}
    (unit_dir / "unit.json").write_text(json.dumps(record, indent=1))
    return record


def read_runbooks(catalogue: Catalogue, mutants: list[Mutant], user_runbook: Path | None) -> dict[str, Path]:
    """The reference runbook file of every config a selected mutant needs."""
    needed = {m.config for m in mutants}
    paths = {}
    for config_id in needed:
        paths[config_id] = catalogue.runbook_path(catalogue.configs[config_id], user_runbook)
    return paths
