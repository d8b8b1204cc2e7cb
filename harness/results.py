"""Check results and findings: what suites and the applier hand to the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from harness.model import SourceRef


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_APPLICABLE = "not-applicable"
    ERROR = "error"


class Severity(StrEnum):
    ERROR = "error"  # the runbook cannot keep a promise
    WARNING = "warning"
    INFO = "info"


@dataclass
class Evidence:
    """One observation: a command and what it printed, or a named value."""

    label: str
    command: str = ""
    output: str = ""
    status: int | str | None = None
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label}
        for key in ("command", "output", "status", "host"):
            value = getattr(self, key)
            if value not in ("", None):
                data[key] = value
        return data


def ref_dict(ref: SourceRef | None, fallback_section: str = "") -> dict[str, Any]:
    if ref is None:
        return {"section": [fallback_section] if fallback_section else [], "line_start": None,
                "line_end": None}
    return ref.to_dict()


@dataclass
class CheckResult:
    id: str
    suite: str
    outcome: Outcome
    claim: str = ""
    required: bool = True
    runbook_ref: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    message: str = ""  # failure message, not-applicable reason, or error text
    duration: float = 0.0
    needs: list[str] = field(default_factory=list)  # state-trace facts the check's property needs (harness.blame)
    after: list[str] = field(default_factory=list)  # checks whose property this one builds on (harness.blame)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "suite": self.suite,
            "outcome": self.outcome.value,
            "claim": self.claim,
            "required": self.required,
            "runbook_ref": self.runbook_ref,
            "message": self.message,
            "duration": round(self.duration, 3),
            "evidence": [e.to_dict() for e in self.evidence],
            "needs": self.needs,
            "after": self.after,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            id=data["id"], suite=data["suite"], outcome=Outcome(data["outcome"]),
            claim=data.get("claim", ""), required=data.get("required", True),
            runbook_ref=data.get("runbook_ref", {}), message=data.get("message", ""),
            duration=data.get("duration", 0.0),
            evidence=[Evidence(**e) for e in data.get("evidence", [])],
            needs=list(data.get("needs", [])),
            after=list(data.get("after", [])),
        )


@dataclass
class Finding:
    """A defect of the runbook itself, found from evidence gathered while running it."""

    id: str
    severity: Severity
    summary: str
    runbook_ref: dict[str, Any] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)
    suggestion: str = ""
    patch: str = ""  # a unified diff against the runbook, where the kit can derive one

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity.value,
            "summary": self.summary,
            "runbook_ref": self.runbook_ref,
            "suggestion": self.suggestion,
            "patch": self.patch,
            "evidence": [e.to_dict() for e in self.evidence],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            id=data["id"], severity=Severity(data["severity"]), summary=data["summary"],
            runbook_ref=data.get("runbook_ref", {}), suggestion=data.get("suggestion", ""),
            evidence=[Evidence(**e) for e in data.get("evidence", [])], patch=data.get("patch", ""),
        )


def verdict(checks: list[CheckResult], findings: list[Finding], fail_on: str = "error") -> str:
    """pass | fail | incomplete.

    fail: a required check failed, or a finding at or above `fail_on` severity exists. A check documented as not
    required (docs/checks.md) informs: its failure is in the report, and fails the run only through a finding.
    incomplete: nothing failed, but a check errored or a required one could not be decided (not-applicable).
    """
    levels = {"error": {Severity.ERROR}, "warning": {Severity.ERROR, Severity.WARNING},
              "never": set()}
    if fail_on not in levels:
        raise ValueError(f"fail_on must be one of {sorted(levels)}")
    if any(c.outcome is Outcome.FAILED and c.required for c in checks):
        return "fail"
    if any(f.severity in levels[fail_on] for f in findings):
        return "fail"
    undecided = [c for c in checks if c.outcome is Outcome.ERROR
                 or (c.required and c.outcome is Outcome.NOT_APPLICABLE)]
    if undecided or not checks:
        return "incomplete"
    return "pass"
