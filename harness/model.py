"""The plan's data model: typed steps tied to the runbook section and lines they come from.

Data flows one way: runbook.md -> (parser) RawStep list -> (planner + profile) Plan -> apply -> suites.
Everything here is plain data with `to_dict()` so `plan --json` and the reports share one shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    SHELL = "shell"  # one command line (continuations joined), run as written
    FILE_WRITE = "file_write"  # editor step (`sudo nano PATH`) + the content block it introduces
    LINE_EDIT = "line_edit"  # "add a line" to a file (e.g. the fstab line)
    CONSOLE = "console"  # cloud console / manual instructions, with parameters for a provider
    NOT_RUN = "not_run"  # sample output, commented-out config, prose-only blocks


class Location(StrEnum):
    SERVER = "server"  # on the target host (commands may use sudo / sudo -u USER themselves)
    OPERATOR = "operator"  # "on your local machine"
    CONSOLE = "console"  # a cloud console (AWS)
    NONE = "none"  # not executed anywhere


@dataclass(frozen=True)
class SourceRef:
    """Where a step comes from: the heading path and the 1-based source lines."""

    section: tuple[str, ...]
    line_start: int
    line_end: int

    def label(self) -> str:
        where = " > ".join(self.section) if self.section else "(document start)"
        if self.line_start == self.line_end:
            return f"{where}, line {self.line_start}"
        return f"{where}, lines {self.line_start}-{self.line_end}"

    def to_dict(self) -> dict[str, Any]:
        return {"section": list(self.section), "line_start": self.line_start, "line_end": self.line_end}


@dataclass(frozen=True)
class Substitution:
    """One placeholder replaced in one step: shown in the plan and the report."""

    placeholder: str
    value: str
    line: int  # source line where the placeholder occurs
    dynamic: bool = False  # value is decided at apply time (e.g. UUID read with blkid)
    source: str = ""  # where the value comes from ("profile default", "blkid /dev/nvme1n1", ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Step:
    """A typed runbook step. Fields not used by a kind stay at their defaults."""

    index: int  # position in the plan (0-based, after profile ordering)
    kind: StepKind
    ref: SourceRef
    phase: str = "apply"  # apply | operator | upgrade | restore | diagnostics | skip (from the profile)
    location: Location = Location.SERVER
    run_as: str | None = None  # user the command effectively runs as, when the runbook says (sudo -u X)
    location_reason: str = ""  # why the plan chose this location (quotes the runbook's words)
    raw: str = ""  # the text exactly as in the runbook (command line, or block)
    command: str = ""  # SHELL: the command after placeholder substitution
    path: str = ""  # FILE_WRITE / LINE_EDIT: target file
    content: str = ""  # FILE_WRITE: full content; LINE_EDIT: the line to add
    editor_command: str = ""  # FILE_WRITE / LINE_EDIT: the editor line the write replaces
    notes: list[str] = field(default_factory=list)  # comments kept from the block, prose hints
    params: dict[str, Any] = field(default_factory=dict)  # CONSOLE: parsed parameters
    reason: str = ""  # NOT_RUN: why it does not run
    substitutions: list[Substitution] = field(default_factory=list)

    @property
    def runs(self) -> bool:
        return self.kind in (StepKind.SHELL, StepKind.FILE_WRITE, StepKind.LINE_EDIT)

    def summary(self) -> str:
        if self.kind is StepKind.SHELL:
            return self.command
        if self.kind is StepKind.FILE_WRITE:
            return f"write {self.path} ({len(self.content.splitlines())} lines)"
        if self.kind is StepKind.LINE_EDIT:
            return f"add line to {self.path}: {self.content}"
        if self.kind is StepKind.CONSOLE:
            return f"console: {self.raw.splitlines()[0] if self.raw else ''}"
        return f"not run: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "kind": self.kind.value,
            "section": list(self.ref.section),
            "line_start": self.ref.line_start,
            "line_end": self.ref.line_end,
            "phase": self.phase,
            "location": self.location.value,
            "location_reason": self.location_reason,
            "raw": self.raw,
        }
        if self.run_as:
            data["run_as"] = self.run_as
        if self.kind is StepKind.SHELL:
            data["command"] = self.command
        if self.kind in (StepKind.FILE_WRITE, StepKind.LINE_EDIT):
            data.update(path=self.path, content=self.content, editor_command=self.editor_command)
        if self.kind is StepKind.CONSOLE:
            data["params"] = self.params
        if self.kind is StepKind.NOT_RUN:
            data["reason"] = self.reason
        if self.notes:
            data["notes"] = list(self.notes)
        data["substitutions"] = [s.to_dict() for s in self.substitutions]
        return data


@dataclass(frozen=True)
class Adaptation:
    """A declared deviation needed to run the runbook in a lab (never silent)."""

    id: str
    summary: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    runbook_path: str
    runbook_sha256: str
    profile: str
    steps: list[Step]
    adaptations: list[Adaptation] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # section titles applied, in order

    def runnable(self, phase: str = "apply") -> list[Step]:
        return [s for s in self.steps if s.runs and s.phase == phase]

    def find(self, *, kind: StepKind | None = None, path: str | None = None,
             contains: str | None = None) -> list[Step]:
        """Steps matching all given filters (used by suites to tie a check to its step)."""
        found = []
        for step in self.steps:
            if kind is not None and step.kind is not kind:
                continue
            if path is not None and step.path != path:
                continue
            if contains is not None and contains not in (step.command or step.content or step.raw):
                continue
            found.append(step)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": {"path": self.runbook_path, "sha256": self.runbook_sha256},
            "profile": self.profile,
            "sections": list(self.sections),
            "adaptations": [a.to_dict() for a in self.adaptations],
            "steps": [s.to_dict() for s in self.steps],
        }

    # ---- lossless round trip: the run parses the runbook once and hands the plan to the suites as data ----

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Plan:
        steps = []
        for raw in data["steps"]:
            step = dict(raw)
            ref = step.pop("ref")
            steps.append(Step(
                **{**step, "kind": StepKind(step["kind"]), "location": Location(step["location"]),
                   "ref": SourceRef(section=tuple(ref["section"]), line_start=ref["line_start"],
                                    line_end=ref["line_end"]),
                   "substitutions": [Substitution(**s) for s in step["substitutions"]]}))
        return cls(runbook_path=data["runbook_path"], runbook_sha256=data["runbook_sha256"], profile=data["profile"],
                   steps=steps, adaptations=[Adaptation(**a) for a in data.get("adaptations", [])],
                   sections=list(data.get("sections", [])))
