"""Findings: defects of the runbook itself, each derived from evidence gathered while running it.

Every detector stays silent on a runbook without the defect (tests/test_findings.py proves each with a
with/without pair). Nothing here names this particular runbook's lines or commands.

Kinds (ids are stable, listed in docs/checks.md):
- runbook.step-fails-as-written (error)     made by the applier when a step exits non-zero
- runbook.command-not-found (error)         a documented command the shell cannot find (exit 127)
- runbook.claim-contradicted (error)        a required check tied to a runbook line failed on the lab
- runbook.step-has-no-effect (warning)      e.g. firewall rules added while the firewall is inactive
- runbook.route-pattern-matches-nothing (warning)  an nginx location regex the runbook offers matches no API route
- runbook.pipeline-hides-failure (warning)  `curl ... | sh` exited 0 although the download failed
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness.model import Plan, Step, StepKind
from harness.results import CheckResult, Evidence, Finding, Outcome, Severity
from harness.routes_model import FAMILIES


def detect(plan: Plan, transcript: list[dict[str, Any]], checks: list[CheckResult],
           facts: dict[str, Any]) -> list[Finding]:
    found: list[Finding] = []
    found += command_not_found(plan, transcript, checks)
    found += claims_contradicted(checks)
    found += firewall_without_effect(plan, transcript, facts)
    found += route_patterns_matching_nothing(plan)
    found += pipelines_hiding_failure(plan, transcript)
    found += defects_behind_defects(checks, _text(Path(plan.runbook_path)))
    from harness.findings.prose import prose_points_at_nothing

    found += prose_points_at_nothing(Path(plan.runbook_path))
    return found


def _line_patch(runbook: str, ref: dict[str, Any], original: str, repaired: str) -> str:
    """A unified diff that makes, on the runbook's line holding the command, the changes that turned the command as
    run into the repaired one (placeholders the run substituted stay as the runbook wrote them); "" when a change
    cannot be placed on that line."""
    import difflib

    line_no = ref.get("line_start")
    if not runbook or not original or not isinstance(line_no, int):
        return ""
    lines = runbook.splitlines(keepends=True)
    for index in range(max(0, line_no - 1), min(len(lines), line_no + 3)):
        patched = _transfer(original, repaired, lines[index])
        if patched is not None:
            new = lines[:index] + [patched] + lines[index + 1:]
            return "".join(difflib.unified_diff(lines, new, "runbook.md", "runbook.md (tried in the lab)", n=1))
    return ""


def _transfer(original: str, repaired: str, line: str) -> str | None:
    """`line` with each change from `original` to `repaired` made where its context (the text around it in the
    original) is found; None when one of them has no place on the line."""
    import difflib

    out = line
    ops = difflib.SequenceMatcher(a=original, b=repaired, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in reversed(ops):
        if tag == "equal":
            continue
        for width in (16, 8, 4, 1):
            before, after = original[max(0, i1 - width):i1], original[i2:i2 + width]
            old = before + original[i1:i2] + after
            if old and out.count(old) == 1:
                out = out.replace(old, before + repaired[j1:j2] + after, 1)
                break
        else:
            return None
    return out


def defects_behind_defects(checks: list[CheckResult], runbook: str = "") -> list[Finding]:
    """What the repairs tried in the lab (harness.repairs) showed about a command that failed as written: the
    defect behind its first error (a repaired command that fails for another reason), or a repair that works,
    whose command becomes the fix ("tried in the lab")."""
    from harness.repairs import LABEL

    found = []
    for check in checks:
        attempts = [e for e in check.evidence if e.label.startswith(LABEL)]
        if not attempts:
            continue
        first_at = check.evidence.index(attempts[0])
        as_run = check.evidence[first_at - 1].command if first_at > 0 else ""
        first_error = check.message.splitlines()[0][:200] if check.message else ""
        evidence = [Evidence(label="as written", output=first_error)] + attempts
        last = attempts[-1]
        tried = " -> ".join(f"`{a.command}`" for a in attempts)
        if last.status == 0:
            found.append(Finding(
                id="runbook.repair-tried-in-the-lab", severity=Severity.ERROR,
                summary=f"{first_error}; repaired as {tried}, which works (tried in the lab)",
                runbook_ref=check.runbook_ref or {}, evidence=evidence,
                suggestion=f"use `{last.command}` (tried in the lab: exit 0)",
                patch=_line_patch(runbook, check.runbook_ref or {}, as_run, last.command)))
        else:
            why = (last.output or "").strip().splitlines()[-1:] or [""]
            found.append(Finding(
                id="runbook.defect-behind-defect", severity=Severity.ERROR,
                summary=f"{first_error}; behind it, the repaired command {tried} fails too (exit {last.status}: "
                        f"{why[0][:160]})",
                runbook_ref=check.runbook_ref or {}, evidence=evidence,
                suggestion=f"fix both: {attempts[0].label.removeprefix(LABEL + ': ')}; then what `{last.command}` "
                           f"says (exit {last.status})"))
    return found


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _step_by_index(plan: Plan, index: int) -> Step | None:
    return next((s for s in plan.steps if s.index == index), None)


def _results(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record.get("results", [])


def command_not_found(plan: Plan, transcript: list[dict[str, Any]], checks: list[CheckResult]) -> list[Finding]:
    found = []
    pattern = re.compile(r"(command not found|No such file or directory)\s*$", re.MULTILINE)
    for record in transcript:
        for res in _results(record):
            if res.get("exit_status") == 127 and pattern.search(res.get("stderr", "")):
                step = _step_by_index(plan, record["index"])
                found.append(_not_found(step.ref.to_dict() if step else {}, res.get("command", ""),
                                        res.get("stderr", "")))
    for check in checks:
        for ev in check.evidence:
            if ev.status == 127 and pattern.search(ev.output or ""):
                found.append(_not_found(check.runbook_ref or {}, ev.command, ev.output or ""))
    unique: dict[tuple[str, int], Finding] = {}
    for finding in found:
        unique.setdefault((finding.summary, finding.runbook_ref.get("line_start", 0)), finding)
    return list(unique.values())


def _not_found(ref: dict[str, Any], command: str, output: str) -> Finding:
    line = next((ln for ln in output.splitlines() if re.search(r"not found|No such file", ln)), output[-200:])
    return Finding(id="runbook.command-not-found", severity=Severity.ERROR,
                   summary=f"a documented command is not found where the runbook runs it: `{command}` -> "
                           f"{line.strip()}",
                   runbook_ref=ref, evidence=[Evidence(label="what the shell said", command=command,
                                                       output=output.strip()[-2000:], status=127)],
                   suggestion="use the full path the installer created, or say which PATH/login shell the step "
                              "needs")


def claims_contradicted(checks: list[CheckResult]) -> list[Finding]:
    found = []
    for check in checks:
        if check.outcome is not Outcome.FAILED or not check.required or not check.runbook_ref:
            continue
        first = (check.message or "").strip().splitlines()[:1] or [""]
        found.append(Finding(
            id="runbook.claim-contradicted", severity=Severity.ERROR,
            summary=f"{check.claim or check.id} — contradicted on the lab ({check.id}): {first[0][:200]}",
            runbook_ref=check.runbook_ref, evidence=check.evidence[:3],
            suggestion=_step_fix(check)))
    return found


def _step_fix(check: CheckResult) -> str:
    """A fix that names the step and what must hold after it (a root cause replaces it when one explains the check:
    harness.run's _explain)."""
    ref = check.runbook_ref or {}
    section = " > ".join(ref.get("section") or []) or "the runbook"
    return (f"change the step at line {ref.get('line_start', '?')} ({section}) so that afterwards: "
            f"{check.claim or check.id} (what the lab showed instead is in the evidence)")


def attach_root_causes(findings: list[Finding], root_causes: list[dict[str, Any]]) -> None:
    """A claim contradicted because of a root cause gets that root cause's fix (the step to change is that one)."""
    by_check = {check: cause for cause in root_causes for check in cause["explains"] + cause["explains_through"]}
    for finding in findings:
        if finding.id != "runbook.claim-contradicted":
            continue
        check_id = finding.summary.split("contradicted on the lab (", 1)[-1].split(")", 1)[0]
        cause = by_check.get(check_id)
        if cause is not None:
            finding.suggestion = (f"explained by the root cause at step {cause['step']} (line {cause['line_start']}, "
                                  f"`{cause['command'][:80]}`): {cause['fix']}")


def firewall_without_effect(plan: Plan, transcript: list[dict[str, Any]], facts: dict[str, Any]) -> list[Finding]:
    status = (facts.get("ufw_status") or "")
    if "inactive" not in status.lower():
        return []
    found = []
    for record in transcript:
        step = _step_by_index(plan, record["index"])
        if step is None or record.get("status") != "ok" or step.kind is not StepKind.SHELL:
            continue
        if re.search(r"\bufw\s+(allow|deny|reject|limit|reload|route)\b", step.command or ""):
            reachable = facts.get("reachable_from_remote") or {}
            found.append(Finding(
                id="runbook.step-has-no-effect", severity=Severity.WARNING,
                summary=f"`{step.command}` changes nothing: the firewall is inactive (ufw was never enabled), "
                        f"so every listening port stays reachable",
                runbook_ref=step.ref.to_dict(),
                evidence=[Evidence(label="ufw status after the runbook", output=status),
                          Evidence(label="TCP ports reachable from the remote client",
                                   output=", ".join(f"{p}: {'open' if ok else 'closed'}"
                                                    for p, ok in sorted(reachable.items())))],
                suggestion="enable the firewall (allow OpenSSH first, then `sudo ufw enable`), or drop the step"))
    return found


# realistic values for a route's parts: database names with and without hyphens, a database identity (64 hex),
# reducer names with underscores; a location pattern that matches none of a route's spellings matches nothing
_SAMPLE_DATABASES = ("quickstart", "chat", "my-app-2", "stdbc-probe", "c200" + "0" * 60)
_SAMPLE_REDUCERS = ("add", "send_message", "set_name2")
# a pattern's literal words -> the route family it aims at, for the fix it is offered
_AIMS = (("subscribe", "/v1/database/[^/]+/subscribe"), ("sql", "/v1/database/[^/]+/sql"),
         ("call", "/v1/database/[^/]+/call/[^/]+"), ("logs", "/v1/database/[^/]+/logs"),
         ("schema", "/v1/database/[^/]+/schema"), ("websocket-token", "/v1/identity/websocket-token"),
         ("identity", "/v1/identity"), ("ping", "/v1/ping"), ("health", "/v1/health"), ("metrics", "/v1/metrics"))


def route_samples() -> list[str]:
    return sorted({f.path(db=db, reducer=reducer).split("?")[0] for f in FAMILIES for db in _SAMPLE_DATABASES
                   for reducer in _SAMPLE_REDUCERS})


def _fitting_fix(pattern: str) -> str:
    literal = re.sub(r"\\.|[\^$()\[\]{}*+?|]", " ", pattern).lower()
    for word, route in _AIMS:
        if re.search(rf"\b{re.escape(word)}\b", literal):
            return f"^{route}$"
    return "^/v1/database/[^/]+/<route>$"


def route_patterns_matching_nothing(plan: Plan) -> list[Finding]:
    found = []
    text_lines = Path(plan.runbook_path).read_text(encoding="utf-8").splitlines() if plan.runbook_path else []
    samples = route_samples()
    for step in plan.steps:
        if step.kind is not StepKind.FILE_WRITE or not step.path or "/nginx/" not in (step.path or ""):
            continue
        for raw in (step.content or "").splitlines():
            match = re.match(r"\s*#?\s*location\s+(~\*?)\s*(\S+)\s*\{", raw)
            if not match:
                continue
            flags = re.IGNORECASE if match.group(1) == "~*" else 0
            try:
                regex = re.compile(match.group(2), flags)
            except re.error:
                continue
            if any(regex.search(p) for p in samples):
                continue
            line = next((i + 1 for i, t in enumerate(text_lines) if i + 1 >= step.ref.line_start
                         and raw.strip() in t), step.ref.line_start)
            note = " (commented out, offered to uncomment)" if raw.strip().startswith("#") else ""
            fix = _fitting_fix(match.group(2))
            found.append(Finding(
                id="runbook.route-pattern-matches-nothing", severity=Severity.WARNING,
                summary=f"the nginx location `{match.group(2)}`{note} matches no SpacetimeDB route: enabling it "
                        f"opens nothing",
                runbook_ref={"section": list(step.ref.section), "line_start": line, "line_end": line},
                evidence=[Evidence(label=f"routes tried ({len(samples)}: every route family with realistic "
                                         "database names, identities and reducer names)",
                                   output="\n".join(samples[:60]))],
                suggestion=f"the API's routes are /v1/database/<name or identity>/...: for what this location aims "
                           f"at, e.g. `{fix}`"))
    return found


def pipelines_hiding_failure(plan: Plan, transcript: list[dict[str, Any]]) -> list[Finding]:
    found = []
    for record in transcript:
        if record.get("status") != "ok":
            continue
        for res in _results(record):
            command, stderr = res.get("command", ""), res.get("stderr", "")
            if re.search(r"\bcurl\b[^|]*\|\s*(sudo\s+)?(ba)?sh\b", command) and re.search(r"curl: \(\d+\)", stderr):
                step = _step_by_index(plan, record["index"])
                found.append(Finding(
                    id="runbook.pipeline-hides-failure", severity=Severity.WARNING,
                    summary=f"`{command}` exited 0 although curl failed: the pipeline's status is the shell's",
                    runbook_ref=step.ref.to_dict() if step else {},
                    evidence=[Evidence(label="stderr", command=command, output=stderr.strip()[-1500:],
                                       status=res.get("exit_status"))],
                    suggestion="download first and check (curl -fsSL URL -o install.sh && sh install.sh ...), or "
                               "run the pipeline under `set -o pipefail`"))
    return found
