"""Apply a plan's steps to a target, verbatim, with a transcript of everything that ran.

Shell steps run as the operator (`ubuntu`, who uses sudo as the runbook says) through `bash -c`.
Editor steps become file writes (root-owned, as `sudo nano` would leave them); "add a line" steps
append the line. Dynamic placeholders (the fstab UUID) are filled from the output of the runbook's own
earlier step (`sudo blkid DEVICE`) when it printed one, else by reading it with blkid (declared).
The first step that fails as written stops the apply and becomes a finding.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.model import Plan, Step, StepKind, Substitution
from harness.results import Evidence, Finding, Severity
from harness.targets.base import CommandResult, Target
from harness.time_ledger import spend

OPERATOR_USER = "ubuntu"
STEP_TIMEOUT = 900.0

Progress = Callable[[str], None]


@dataclass
class StepRecord:
    step: Step
    status: str  # ok | failed | skipped
    results: list[CommandResult] = field(default_factory=list)
    resolved: list[Substitution] = field(default_factory=list)
    duration: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.step.index,
            "kind": self.step.kind.value,
            "phase": self.step.phase,
            "section": list(self.step.ref.section),
            "line_start": self.step.ref.line_start,
            "line_end": self.step.ref.line_end,
            "summary": self.step.summary(),
            "status": self.status,
            "duration": round(self.duration, 3),
            "note": self.note,
            "resolved": [s.to_dict() for s in self.resolved],
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class ApplyResult:
    records: list[StepRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    stopped_at: Step | None = None

    @property
    def ok(self) -> bool:
        return self.stopped_at is None

    def transcript(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]


BeforeStep = Callable[[Step, Target], str | None]
AfterStep = Callable[[Step, Target], None]
# called while every step so far succeeded: before each step that runs (the number of steps done so far, their
# records, the next step) and once after the last (None); a checkpoint may be taken there (harness.checkpoint)
AtBoundary = Callable[[int, list["StepRecord"], Step | None], None]


def apply_plan(plan: Plan, target: Target, *, phase: str = "apply",
               progress: Progress = lambda _msg: None, before_step: BeforeStep | None = None,
               after_step: AfterStep | None = None, replayed: list[StepRecord] | None = None,
               at_boundary: AtBoundary | None = None) -> ApplyResult:
    """Apply the plan's `phase` steps in order. `before_step` lets the lab make a declared adaptation
    just before a step (e.g. certbot's config file); what it did is noted in that step's record.
    `after_step` observes the target after each step that ran (the state trace). `replayed`: the records of
    the first steps, which a checkpoint the target started from already holds (not run again)."""
    steps = plan.runnable(phase)
    result = ApplyResult()
    done = list(replayed or [])
    for number, step in enumerate(steps, start=1):
        if done:
            record = done.pop(0)
            progress(f"[{number}/{len(steps)}] {_section_name(step)} | {step.summary()} ... replayed from the "
                     f"checkpoint")
            result.records.append(record)
            continue
        if result.stopped_at is not None:
            result.records.append(StepRecord(step, "skipped", note="not run: an earlier step failed"))
            continue
        if at_boundary is not None:
            with spend("lab_setup"):
                at_boundary(number - 1, result.records, step)
        label = f"[{number}/{len(steps)}] {_section_name(step)} | {step.summary()}"
        progress(f"{label} ...")
        started = time.monotonic()
        with spend("lab_setup"):
            adapted = before_step(step, target) if before_step is not None else None
        record = _apply_step(step, target, result.records)
        if adapted:
            record.note = f"adaptation before this step: {adapted}" + (f"; {record.note}" if record.note else "")
        record.duration = time.monotonic() - started
        result.records.append(record)
        if after_step is not None:
            with spend("probes"):
                after_step(step, target)
        progress(f"{label} ... {record.status} ({record.duration:.1f}s)")
        if record.status == "failed":
            result.stopped_at = step
            result.findings.append(step_failed_finding(record))
    if at_boundary is not None and result.stopped_at is None:
        with spend("lab_setup"):
            at_boundary(len(steps), result.records, None)
    return result


def apply_step(step: Step, target: Target) -> StepRecord:
    """Run one step on `target` (used for the restore flow on a recovery host)."""
    return _apply_step(step, target, [])


def _section_name(step: Step) -> str:
    title = step.ref.section[-1] if step.ref.section else ""
    return (title[:40] + "...") if len(title) > 43 else title


def _apply_step(step: Step, target: Target, earlier: list[StepRecord]) -> StepRecord:
    with spend("runbook"):
        return _run_step(step, target, earlier)


def _run_step(step: Step, target: Target, earlier: list[StepRecord]) -> StepRecord:
    record = StepRecord(step, "ok")
    try:
        if step.kind is StepKind.SHELL:
            res = target.run(step.command, user=OPERATOR_USER, timeout=STEP_TIMEOUT)
            record.results.append(res)
            if not res.ok:
                record.status = "failed"
        elif step.kind is StepKind.FILE_WRITE:
            content = _fill_dynamic(step, step.content, target, earlier, record)
            target.write_file(step.path, _with_newline(content).encode(), mode=0o644, owner="root")
            record.note = f"wrote {step.path} ({len(content.splitlines())} lines) in place of " \
                          f"`{step.editor_command}`"
        elif step.kind is StepKind.LINE_EDIT:
            line = _fill_dynamic(step, step.content, target, earlier, record)
            script = (f"f={shlex.quote(step.path)}; touch \"$f\"; "
                      f"[ -s \"$f\" ] && [ -n \"$(tail -c1 \"$f\")\" ] && echo >> \"$f\"; "
                      f"printf '%s\\n' {shlex.quote(line)} >> \"$f\"")
            res = target.run(script, user="root", timeout=60)
            res.command = f"(editor `{step.editor_command}`) append line to {step.path}: {line}"
            record.results.append(res)
            if not res.ok:
                record.status = "failed"
    except DynamicValueError as exc:
        record.status = "failed"
        record.note = str(exc)
    return record


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


class DynamicValueError(Exception):
    pass


_UUID_IN_BLKID = re.compile(r'\bUUID="([0-9A-Fa-f-]+)"')


def _fill_dynamic(step: Step, text: str, target: Target, earlier: list[StepRecord],
                  record: StepRecord) -> str:
    for sub in step.substitutions:
        if not sub.dynamic or sub.placeholder not in text:
            continue
        value, source = _resolve_dynamic(sub, target, earlier)
        text = text.replace(sub.placeholder, value)
        record.resolved.append(Substitution(sub.placeholder, value, sub.line, True, source))
    return text


def _resolve_dynamic(sub: Substitution, target: Target, earlier: list[StepRecord]) -> tuple[str, str]:
    device = _device_of(sub)
    for rec in reversed(earlier):
        for res in rec.results:
            if "blkid" in res.command and (not device or device in res.command):
                match = _UUID_IN_BLKID.search(res.stdout)
                if match:
                    return match.group(1), f"output of runbook step `{res.command}` (line " \
                                           f"{rec.step.ref.line_start})"
    if not device:
        raise DynamicValueError(f"cannot resolve {sub.placeholder}: no device named for it")
    res = target.run(f"blkid -s UUID -o value {shlex.quote(device)}", user="root", timeout=30)
    value = res.stdout.strip()
    if not res.ok or not value:
        raise DynamicValueError(f"cannot resolve {sub.placeholder}: `blkid {device}` printed no UUID "
                                f"(exit {res.exit_status}: {res.stderr.strip()[:200]})")
    return value, f"read by the kit with `blkid -s UUID -o value {device}` (declared adaptation)"


def _device_of(sub: Substitution) -> str:
    match = re.search(r"(/dev/\S+)", sub.source or "")
    return match.group(1) if match else ""


def step_failed_finding(record: StepRecord) -> Finding:
    step = record.step
    last = record.results[-1] if record.results else None
    evidence = [Evidence(label="step as written", command=step.raw or step.summary())]
    if last is not None:
        output = (last.stdout + ("\n[stderr]\n" + last.stderr if last.stderr.strip() else "")).strip()
        evidence.append(Evidence(label="what happened", command=last.command, output=output[-4000:],
                                 status=last.exit_status,
                                 host=f"{last.user}@{last.host}" if last.host else last.user))
    if record.note:
        evidence.append(Evidence(label="note", output=record.note))
    summary = f"step fails as written: `{step.summary()}`"
    if last is not None:
        tail = (last.stderr.strip() or last.stdout.strip()).splitlines()[-1:] or [""]
        summary += f" (exit {last.exit_status}{': ' + tail[0][:160] if tail[0] else ''})"
    return Finding(id="runbook.step-fails-as-written", severity=Severity.ERROR, summary=summary,
                   runbook_ref=step.ref.to_dict(), evidence=evidence,
                   suggestion="fix the command in the runbook, or the step it depends on")
