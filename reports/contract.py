"""The report contract: conformance.json and junit.xml, written by every run (even a failed one).

conformance.json keys: verdict, backend, spacetimedb, runbook{path, sha256}, profile, checks[],
findings[], timings{phase: seconds}, plus run_id, started/finished, adaptations, apply summary and
environment facts. junit.xml has one testsuite per suite (plus "runbook" for apply findings).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results import CheckResult, Finding, Outcome, verdict

SCHEMA_VERSION = 1


@dataclass
class RunReport:
    run_id: str
    backend: str
    runbook_path: str
    runbook_sha256: str
    profile: str
    spacetimedb: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    step_timings: list[dict[str, Any]] = field(default_factory=list)
    time_by_kind: dict[str, Any] = field(default_factory=dict)  # harness/time_ledger.py
    adaptations: list[dict[str, Any]] = field(default_factory=list)
    substitutions: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    apply: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    interrupted: bool = False
    lab_error: str = ""
    fail_on: str = "error"
    sections: list[dict[str, Any]] = field(default_factory=list)  # runbook sections, for traceability
    state_trace: dict[str, Any] = field(default_factory=dict)  # fingerprints before/after each step (harness.trace)
    root_causes: list[dict[str, Any]] = field(default_factory=list)  # harness.blame
    unexplained: list[dict[str, Any]] = field(default_factory=list)  # failed checks no root cause explains
    host_changed: list[str] = field(default_factory=list)  # a read-only run changed the host: what changed

    def verdict(self) -> str:
        if self.host_changed:  # a run that promised to change nothing changed the host: whatever it proved
            return "host-changed"
        if self.lab_error or self.interrupted:
            # nothing proven about the host when the lab never came up or the run was cut short
            failed = any(c.outcome is Outcome.FAILED for c in self.checks)
            return "fail" if failed else "incomplete"
        return verdict(self.checks, self.findings, self.fail_on)

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for check in self.checks:
            counts[check.outcome.value] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict(),
            "run_id": self.run_id,
            "backend": self.backend,
            "spacetimedb": self.spacetimedb,
            "runbook": {"path": self.runbook_path, "sha256": self.runbook_sha256},
            "profile": self.profile,
            "started": self.started,
            "finished": self.finished,
            "interrupted": self.interrupted,
            "lab_error": self.lab_error,
            "fail_on": self.fail_on,
            "counts": self.counts(),
            "checks": [c.to_dict() for c in self.checks],
            "findings": [f.to_dict() for f in self.findings],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "step_timings": self.step_timings,
            "time_by_kind": self.time_by_kind,
            "adaptations": self.adaptations,
            "substitutions": self.substitutions,
            "environment": self.environment,
            "apply": self.apply,
            "sections": self.sections,
            "root_causes": self.root_causes,
            "unexplained": self.unexplained,
            "host_changed": self.host_changed,
            "state_trace": self.state_trace,
        }


def write_reports(report: RunReport, out_dir: Path) -> dict[str, Path]:
    """conformance.json, junit.xml, conformance.md and report.html; secrets redacted from all four."""
    from harness.redact import redact, redact_text
    from reports.html import render_html
    from reports.markdown import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "conformance.json", "junit": out_dir / "junit.xml",
             "markdown": out_dir / "conformance.md", "html": out_dir / "report.html"}
    data = redact(json.loads(json.dumps(report.to_dict(), default=str)))
    _atomic_write(paths["json"], json.dumps(data, indent=2))
    _atomic_write(paths["junit"], redact_text(junit_xml(report)))
    _atomic_write(paths["markdown"], render_markdown(data))
    _atomic_write(paths["html"], render_html(data))
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def junit_xml(report: RunReport) -> str:
    root = ET.Element("testsuites", name="stdb-conformance", verdict=report.verdict())
    by_suite: dict[str, list[CheckResult]] = {}
    for check in report.checks:
        by_suite.setdefault(check.suite, []).append(check)
    for suite, checks in by_suite.items():
        node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)),
                             failures=str(sum(c.outcome is Outcome.FAILED for c in checks)),
                             errors=str(sum(c.outcome is Outcome.ERROR for c in checks)),
                             skipped=str(sum(c.outcome is Outcome.NOT_APPLICABLE for c in checks)),
                             time=f"{sum(c.duration for c in checks):.3f}")
        for check in checks:
            case = ET.SubElement(node, "testcase", classname=f"conformance.{suite}", name=check.id,
                                 time=f"{check.duration:.3f}")
            body = _evidence_text(check)
            if check.outcome is Outcome.FAILED:
                ET.SubElement(case, "failure", message=check.message[:500]).text = body
            elif check.outcome is Outcome.ERROR:
                ET.SubElement(case, "error", message=check.message[:500]).text = body
            elif check.outcome is Outcome.NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=f"not-applicable: {check.message}"[:500])
            else:
                ET.SubElement(case, "system-out").text = body
    if report.findings:
        node = ET.SubElement(root, "testsuite", name="runbook-findings", tests=str(len(report.findings)),
                             failures=str(sum(f.severity.value == "error" for f in report.findings)))
        for finding in report.findings:
            case = ET.SubElement(node, "testcase", classname="conformance.findings", name=finding.id)
            text = "\n".join(f"{e.label}: {e.command}\n{e.output}" for e in finding.evidence)
            if finding.severity.value == "error":
                ET.SubElement(case, "failure", message=finding.summary[:500]).text = text
            else:
                ET.SubElement(case, "system-out").text = f"[{finding.severity.value}] {finding.summary}\n{text}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _evidence_text(check: CheckResult) -> str:
    parts = [check.message] if check.message else []
    for ev in check.evidence:
        head = f"- {ev.label}"
        if ev.command:
            head += f": $ {ev.command}"
        if ev.status is not None:
            head += f" (status {ev.status})"
        parts.append(head)
        if ev.output:
            parts.append(ev.output[-2000:])
    return "\n".join(parts)
