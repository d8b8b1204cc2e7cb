"""Blame and root causes: which applied step made a failed check's property stop holding.

Every check may name the state-trace facts its property needs (`needs=` on its marker, or its suite's `NEEDS`):
`KEY` (the fact is there), `KEY~PREFIX` (its value starts with PREFIX), `!KEY` (it is not there). For a failed
check, from the recorded trace (harness/trace.py) and nothing else:
- a need that held after step M and no longer after step N (the last change) blames step N: it undid what an
  earlier step had set up;
- a need that never held blames the step the check points at, or the step that failed as written when the apply
  stopped before it;
- a check whose step never ran because an earlier step failed as written is blamed on that step;
- a check whose needs all hold after the last step is not explained by the trace: it is listed as unexplained.
Checks blamed on the same step and for the same reason form one root cause, with the facts that changed at that
step as its evidence and a fix that names the step and what to change. Nothing here knows a particular runbook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.model import Plan, Step
from harness.results import CheckResult, Outcome
from harness.trace import StateTrace

RED = (Outcome.FAILED, Outcome.ERROR)


@dataclass(frozen=True)
class Need:
    key: str
    prefix: str = ""
    absent: bool = False

    @classmethod
    def parse(cls, text: str) -> Need:
        if text.startswith("!"):
            return cls(text[1:], absent=True)
        key, _, prefix = text.partition("~")
        return cls(key, prefix)

    def holds(self, facts: dict[str, str]) -> bool:
        if self.absent:
            return self.key not in facts
        return self.key in facts and facts[self.key].startswith(self.prefix)

    def describe(self) -> str:
        what = self.key.replace(":", " ", 1)
        if self.absent:
            return f"{what} is absent"
        return f"{what} is {self.prefix}" if self.prefix else f"{what} exists"


@dataclass
class Blame:
    check: str
    kind: str  # "broke" | "never-held" | "not-run" | "unexplained"
    step: int | None  # the blamed step's index
    need: str = ""
    held_after: int | None = None  # broke: the last step after which the need held (None: before any step)
    detail: str = ""


@dataclass
class RootCause:
    step: Step
    kind: str
    needs: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    through: list[str] = field(default_factory=list)  # explained through a blamed check they build on (after=)
    set_up_by: list[int] = field(default_factory=list)
    changes: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        ref = self.step.ref
        return {"step": self.step.index, "section": list(ref.section), "line_start": ref.line_start,
                "line_end": ref.line_end, "command": self.step.summary(), "kind": self.kind,
                "summary": self.summary, "fix": self.fix, "needs": self.needs, "explains": self.checks,
                "explains_through": self.through, "set_up_by_steps": self.set_up_by, "evidence": self.changes}


def blame_check(check: CheckResult, trace: StateTrace, order: list[int], stopped: int | None,
                ref_step: int | None) -> Blame:
    """`order`: the applied steps' indexes in order; `stopped`: the step that failed as written, if any;
    `ref_step`: the step the check points at (its runbook reference), if it is an applied step."""
    if stopped is not None and ref_step is not None and ref_step not in trace.after and ref_step != stopped:
        return Blame(check.id, "not-run", stopped, detail=f"the step it checks (step {ref_step}) never ran")
    states = trace.states()
    final = states[-1][1]
    for text in check.needs:
        need = Need.parse(text)
        if need.holds(final):
            continue
        held = [i for i, (_, facts) in enumerate(states) if need.holds(facts)]
        if held:
            last = held[-1]
            broke_at = states[last + 1][0]
            return Blame(check.id, "broke", broke_at, need=text, held_after=states[last][0])
        should = stopped if stopped is not None else ref_step
        return Blame(check.id, "never-held", should, need=text)
    return Blame(check.id, "unexplained", None,
                 detail="every fact it needs still held after the last applied step" if check.needs
                 else "the check names no fact of the state trace")


def _set_up_by(need: Need, trace: StateTrace, before: int | None) -> list[int]:
    """The step after which `need` first came to hold (before the blamed one); [] when it held from the start."""
    previous = trace.initial
    for index, facts in sorted(trace.after.items()):
        if before is not None and index >= before:
            break
        if need.holds(facts) and not need.holds(previous):
            return [index]
        previous = facts
    return []


def _first_lost(need: Need, trace: StateTrace) -> int | None:
    """The first step after which `need` stopped holding (it may have come back and been lost again later)."""
    previous = trace.initial
    for index, facts in sorted(trace.after.items()):
        if need.holds(previous) and not need.holds(facts):
            return index
        previous = facts
    return None


def _changes_at(trace: StateTrace, index: int) -> dict[str, Any]:
    from harness.trace import diff

    states = trace.states()
    for n, (step, facts) in enumerate(states):
        if step == index and n > 0:
            return diff(states[n - 1][1], facts)
    return {}


def _hidden_by_mount(changes: dict[str, Any]) -> tuple[str, list[str]]:
    """A mount that appeared at D while entries under D disappeared: (D, the entries)."""
    for key in changes.get("added", {}):
        if key.startswith("mount:"):
            point = key.removeprefix("mount:")
            gone = [k.removeprefix("path:") for k in changes.get("removed", {})
                    if k.startswith(f"path:{point.rstrip('/')}/")]
            if gone:
                return point, gone
    return "", []


def root_causes(plan: Plan, trace: StateTrace, checks: list[CheckResult],
                stopped: int | None) -> tuple[list[RootCause], list[dict[str, Any]]]:
    """The root causes of the failed checks, and the failed checks no root cause explains (with why)."""
    steps = {s.index: s for s in plan.steps}
    order = sorted(trace.after)
    by_line = {s.ref.line_start: s.index for s in plan.steps if s.index in steps}
    red = [c for c in checks if c.outcome in RED]
    causes: dict[tuple[int, str], RootCause] = {}
    unexplained: list[dict[str, Any]] = []
    blames: dict[str, Blame] = {}
    for check in red:
        ref_line = (check.runbook_ref or {}).get("line_start")
        ref_step = by_line.get(ref_line) if ref_line is not None else None
        blame = blame_check(check, trace, order, stopped, ref_step)
        blames[check.id] = blame
        if blame.step is None or blame.step not in steps:
            unexplained.append({"check": check.id, "why": blame.detail or "no step to blame"})
            continue
        key = (blame.step, blame.kind)
        cause = causes.setdefault(key, RootCause(step=steps[blame.step], kind=blame.kind))
        cause.checks.append(check.id)
        if blame.need and blame.need not in cause.needs:
            cause.needs.append(blame.need)
    # a check that names the checks it builds on (`after=` on its marker) is explained through a blamed one
    still = []
    for item in unexplained:
        check = next(c for c in red if c.id == item["check"])
        through = next((blames[o] for o in check.after if o in blames and blames[o].step in steps
                        and blames[o].kind != "unexplained"), None)
        if through is not None and through.step is not None:
            causes[(through.step, through.kind)].through.append(check.id)
        else:
            still.append(item)
    for cause in causes.values():
        _describe(cause, trace, steps)
    ordered = sorted(causes.values(), key=lambda c: -(len(c.checks) + len(c.through)))
    return ordered, still


def _describe(cause: RootCause, trace: StateTrace, steps: dict[int, Step]) -> None:
    step = cause.step
    where = f"step {step.index} (line {step.ref.line_start}: `{step.summary()[:120]}`)"
    needs = [Need.parse(n) for n in cause.needs]
    if cause.kind == "broke":
        cause.changes = _changes_at(trace, step.index)
        for need in needs:
            cause.set_up_by += [i for i in _set_up_by(need, trace, step.index) if i not in cause.set_up_by]
        earlier = ", ".join(f"step {i} (line {steps[i].ref.line_start})" for i in cause.set_up_by if i in steps)
        lost = "; ".join(n.describe() for n in needs)
        cause.summary = (f"after {where} this no longer holds: {lost}"
                         + (f", which {earlier} had set up" if earlier else ""))
        first = [i for i in (_first_lost(n, trace) for n in needs) if i is not None and i != step.index]
        if first and first[0] in steps:
            cause.summary += (f" (first lost after step {first[0]}, line {steps[first[0]].ref.line_start}: "
                              f"`{steps[first[0]].summary()[:80]}`; back for a while, lost for good here)")
        point, gone = _hidden_by_mount(cause.changes)
        if point:
            cause.summary += f"; the step mounts over {point} and hides what was there ({', '.join(gone[:4])})"
            cause.fix = (f"{where} mounts a file system over {point}, hiding {', '.join(gone[:4])} that "
                         f"{earlier or 'an earlier step'} put there: mount the volume at {point} before those "
                         f"steps run (move this section before them), or copy {point}'s contents onto the "
                         f"volume before mounting it over {point}")
        else:
            cause.fix = (f"{where} undoes what {earlier or 'an earlier step'} set up ({lost}): change or move this "
                         f"step so that it keeps {lost.replace(' no longer', '')}")
    elif cause.kind == "never-held":
        lost = "; ".join(n.describe() for n in needs)
        cause.summary = f"{where} should make this hold, and it never did: {lost}"
        cause.fix = f"{where}: change it so that afterwards {lost} (the trace shows it never did)"
    else:  # not-run
        cause.summary = (f"{where} failed as written, so the steps after it never ran and what they set up is "
                         f"missing")
        cause.fix = f"fix {where} (see the finding `runbook.step-fails-as-written`): the steps after it depend on it"
