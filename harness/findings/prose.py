"""The document against itself: prose that points the reader at configuration, a section or a command that none
of the runbook's own blocks contains. Each finding cites both places: the sentence, and the section or block it
points at. Derived from the document's text alone (nothing about a particular runbook is written in here):
- a route in backticks (`/v1/...`) that no specific `location` of any nginx block (commented ones included, the
  catch-all `location /` excluded) matches, placeholders such as `<database-name>` read as a sample name;
- a command in backticks whose program the blocks run (e.g. `spacetime sql ...`) but which no block contains,
  compared up to its first `...` or `<placeholder>`;
- "in Step N" where no heading names a Step N.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.model import StepKind
from harness.results import Evidence, Finding, Severity
from harness.routes_model import Location, parse_locations
from harness.runbook_parser import ParsedRunbook, parse_runbook

_SPAN = re.compile(r"`([^`\n]+)`")
_STEP_REF = re.compile(r"\bin (Step \d+[a-z]?)\b")
_PLACEHOLDER = re.compile(r"<[^>]+>")
FINDING = "runbook.prose-points-at-nothing"


def _blocks(parsed: ParsedRunbook) -> str:
    """The text of the runbook's code blocks (console steps are prose lists: they do not count)."""
    return "\n".join(step.raw for step in parsed.steps if step.kind is not StepKind.CONSOLE)


def _locations_everywhere(parsed: ParsedRunbook) -> list[tuple[Location, int]]:
    """Every location of every nginx block, commented-out ones included (the reader may uncomment them)."""
    found: list[tuple[Location, int]] = []
    for step in parsed.steps:
        if "location" not in step.raw:
            continue
        uncommented = "\n".join(re.sub(r"^(\s*)#\s?", r"\1", line) for line in step.raw.splitlines())
        found += [(loc, step.line_start) for loc in parse_locations(uncommented)]
    return found


def _programs(parsed: ParsedRunbook) -> set[str]:
    """The programs the runbook's commands run (the first word, and the word after sudo and its options)."""
    found: set[str] = set()
    for step in parsed.steps:
        if step.kind is not StepKind.SHELL:
            continue
        for line in (step.body or "").splitlines():
            words = line.strip().split()
            while words and (words[0] == "sudo" or words[0].startswith("-")):
                words = words[1:]
            if words and re.fullmatch(r"[A-Za-z][\w.-]*", words[0]):
                found.add(words[0])
    return found


def _heading_line(parsed: ParsedRunbook, title: str) -> int | None:
    return next((h.line for h in parsed.headings if re.search(rf"\b{re.escape(title)}\b", h.title)), None)


def prose_points_at_nothing(path: Path) -> list[Finding]:
    try:
        parsed = parse_runbook(path)
    except Exception:  # noqa: BLE001 - the plan parsed it already; a second look is best effort
        return []
    blocks = _blocks(parsed)
    locations = _locations_everywhere(parsed)
    programs = _programs(parsed)
    found: list[Finding] = []
    for prose in parsed.prose:
        refs = _STEP_REF.findall(prose.text)
        for span in _SPAN.findall(prose.text):
            text = span.strip()
            if text.startswith("/v1/"):
                sample = _PLACEHOLDER.sub("stdbc", text)
                specific = [(loc, line) for loc, line in locations if loc.pattern != "/" and loc.matches(sample)]
                if not specific:
                    found.append(_route_finding(parsed, prose.line_start, prose.text, text, refs, locations))
                continue
            words = text.split()
            if len(words) >= 2 and words[0] in programs:
                prefix = _PLACEHOLDER.split(text.split("...")[0])[0].strip()
                if prefix and prefix not in blocks:
                    found.append(_command_finding(prose.line_start, prose.text, text, prefix))
        for ref in refs:
            if _heading_line(parsed, ref) is None:
                found.append(Finding(
                    id=FINDING, severity=Severity.WARNING,
                    summary=f"line {prose.line_start} points at {ref}, and no heading of the runbook is {ref}",
                    runbook_ref={"section": list(prose.section), "line_start": prose.line_start,
                                 "line_end": prose.line_end},
                    evidence=[Evidence(label="the sentence", output=prose.text[:600])],
                    suggestion=f"name the section the sentence means at line {prose.line_start}"))
    return found


def _route_finding(parsed: ParsedRunbook, line: int, text: str, route: str, refs: list[str],
                   locations: list[tuple[Location, int]]) -> Finding:
    where = refs[0] if refs else ""
    target_line = _heading_line(parsed, where) if where else None
    have = sorted({f"{loc.modifier + ' ' if loc.modifier else ''}{loc.pattern} (line {block})"
                   for loc, block in locations if loc.pattern != "/"})
    cited = f"{where} (line {target_line})" if target_line else "any nginx block"
    return Finding(
        id=FINDING, severity=Severity.WARNING,
        summary=(f"line {line} refers to `{route}`" + (f" in {where}" if where else "") + f", but {cited} has no "
                 f"location for it, commented or not: the reader cannot do what the sentence says"),
        runbook_ref={"line_start": line, "line_end": line, "section": []},
        evidence=[Evidence(label="the sentence", output=text[:600]),
                  Evidence(label="the locations the runbook's nginx blocks have (commented ones included)",
                           output="\n".join(have) or "none")],
        suggestion=(f"either add the location for {route} to {cited}, or change the sentence at line {line} to "
                    f"name one it has: {', '.join(have[:4]) or 'none'}"))


def _command_finding(line: int, text: str, command: str, prefix: str) -> Finding:
    return Finding(
        id=FINDING, severity=Severity.WARNING,
        summary=f"line {line} tells the reader to run `{command}`, and no block of the runbook shows `{prefix}`",
        runbook_ref={"line_start": line, "line_end": line, "section": []},
        evidence=[Evidence(label="the sentence", output=text[:600])],
        suggestion=f"add a block with the complete command (`{prefix} ...` with its arguments) near line {line}")
