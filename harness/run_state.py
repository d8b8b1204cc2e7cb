"""The run's state: what `stdb-conformance run` tells the suites and scenarios it starts (pytest subprocesses,
generators) about the lab, the plan and the recordings. One typed record with a schema version, written as
`lab-state.json` (and kept in REPORT_DIR/histories/), validated whenever it is read: a state from another
version of the kit is one line, never a KeyError deep inside a suite.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import KitError
from harness.model import Plan

SCHEMA = 1


class RunStateError(KitError):
    """A run state that this kit cannot read (another version, a broken file)."""


@dataclass
class RunState:
    run_id: str
    backend: str  # the target URL scheme: docker, vm, ssh
    workdir: str  # the run's working folder (a report dir's histories/ for a finished run)
    runbook: str  # the copy of the runbook the run read (never the user's file again)
    profile: str
    plan: str = ""  # plan.json: the plan the run made when it started
    runbook_source: str = ""
    runbook_sha256: str = ""
    lab: dict[str, Any] = field(default_factory=dict)  # the testbed's own state (its backend's, its services')
    aws: dict[str, Any] | None = None  # the simulated AWS account's state (console steps performed)
    capabilities: list[str] = field(default_factory=list)  # what the backend may do in this run
    mutation_allowed: bool = True
    builds_host: bool = True
    site: dict[str, Any] = field(default_factory=dict)  # how the vantage reaches the site (harness.vantage.Site)
    vantage: dict[str, Any] = field(default_factory=dict)
    database: str | None = None  # a database the operator named (existing hosts)
    expected_version: str | None = None
    spacetimedb: dict[str, Any] = field(default_factory=dict)  # implementation, versions
    transcript: str = ""  # the apply phase's transcript.json
    histories: dict[str, str] = field(default_factory=dict)  # suite -> its scenario's recorded history
    schema: int = SCHEMA

    # ---- files ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))

    @classmethod
    def from_dict(cls, data: object, *, where: str = "the run state") -> RunState:
        if not isinstance(data, dict):
            raise RunStateError(f"{where} is not a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA:
            found = "no schema version (an older kit)" if schema is None else f"schema {schema}"
            raise RunStateError(f"{where} has {found}; this kit reads schema {SCHEMA}",
                                hint="judge it with the kit version that wrote it, or run again")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise RunStateError(f"{where} has unknown key(s) {', '.join(unknown)}",
                                hint="written by another version of the kit")
        missing = [n for n, f in names.items() if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING and n not in data]
        if missing:
            raise RunStateError(f"{where} lacks {', '.join(missing)}")
        for key in ("run_id", "backend", "workdir", "runbook", "profile"):
            if not isinstance(data[key], str):
                raise RunStateError(f"{where}: `{key}` must be a string, not {type(data[key]).__name__}")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> RunState:
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise RunStateError(f"cannot read the run state {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise RunStateError(f"the run state {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=f"the run state {path}")


def plan_of_run(state: RunState) -> Plan:
    """The plan the run made when it started: the runbook is read once per run, never again by a suite."""
    if state.plan:
        plan_path = Path(state.plan)
        if not plan_path.is_absolute():
            plan_path = Path(state.workdir) / plan_path
        return Plan.from_state(json.loads(plan_path.read_text()))
    from harness.planner import build_plan  # a state written by hand (tests): the plan from its runbook

    return build_plan(Path(state.runbook), state.profile)
