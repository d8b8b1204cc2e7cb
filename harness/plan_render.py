"""Render a Plan for people (`stdb-conformance plan`) and machines (`plan --json`)."""

from __future__ import annotations

import json
from collections import Counter

from harness.model import Plan, Step, StepKind, Substitution

INDENT = "      "


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2)


def render_text(plan: Plan) -> str:
    lines = _header(plan)
    for step in plan.steps:
        lines.append("")
        lines += render_step(step)
    lines.append("")
    lines += _adaptations(plan)
    return "\n".join(lines) + "\n"


def _header(plan: Plan) -> list[str]:
    kinds = Counter(step.kind.value for step in plan.steps)
    phases = Counter(step.phase for step in plan.steps)
    return [
        f"runbook: {plan.runbook_path} (sha256 {plan.runbook_sha256})",
        f"profile: {plan.profile}",
        f"steps:   {len(plan.steps)} (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")",
        "phases:  " + ", ".join(f"{p} {n}" for p, n in sorted(phases.items())),
    ]


def _lines_label(step: Step) -> str:
    ref = step.ref
    if ref.line_start == ref.line_end:
        return f"line {ref.line_start}"
    return f"lines {ref.line_start}-{ref.line_end}"


def render_step(step: Step) -> list[str]:
    """One step: a header line, where it comes from and runs, its exact text, substitutions."""
    section = " > ".join(step.ref.section) or "(document start)"
    run_as = f" as {step.run_as}" if step.run_as else ""
    lines = [
        f"[{step.index:>3}] {step.kind.value:<10} {step.phase:<11} {step.location.value}{run_as}",
        f"{INDENT}{section}, {_lines_label(step)}",
    ]
    if step.location_reason:
        lines.append(f"{INDENT}where: {step.location_reason}")
    lines += _body(step)
    lines += [f"{INDENT}# {note}" for note in step.notes]
    if step.substitutions:
        rendered = "; ".join(render_substitution(s) for s in step.substitutions)
        lines.append(f"{INDENT}substitutions: {rendered}")
    return lines


def _indented(text: str, prefix: str = INDENT + "  ") -> list[str]:
    return [f"{prefix}{line}" if line else prefix.rstrip() for line in text.split("\n")]


def _body(step: Step) -> list[str]:
    if step.kind is StepKind.SHELL:
        first, *rest = step.command.split("\n")
        return [f"{INDENT}$ {first}", *(f"{INDENT}  {line}" for line in rest)]
    if step.kind is StepKind.FILE_WRITE:
        header = f"{INDENT}write {step.path} (in place of `{step.editor_command}`):"
        return [header] + _indented(step.content, INDENT + "  | ")
    if step.kind is StepKind.LINE_EDIT:
        return [f"{INDENT}append to {step.path} (in place of `{step.editor_command}`):",
                *_indented(step.content, INDENT + "  | ")]
    if step.kind is StepKind.CONSOLE:
        params = json.dumps(step.params, ensure_ascii=False, sort_keys=False)
        return _indented(step.raw, INDENT + "  ") + [f"{INDENT}params: {params}"]
    return [f"{INDENT}not run: {step.reason}"] + _indented(step.raw, INDENT + "  ~ ")


def render_substitution(sub: Substitution) -> str:
    text = f"{sub.placeholder} -> {sub.value} (line {sub.line})"
    return f"{text} [dynamic: {sub.source}]" if sub.dynamic else text


def _adaptations(plan: Plan) -> list[str]:
    if not plan.adaptations:
        return ["adaptations: none"]
    lines = ["adaptations:"]
    for adaptation in plan.adaptations:
        lines.append(f"  - {adaptation.id}: {adaptation.summary}")
        if adaptation.detail:
            lines.append(f"      {adaptation.detail}")
    return lines
