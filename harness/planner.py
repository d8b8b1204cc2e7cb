"""Parsed runbook + profile -> Plan: phases, locations, run_as, placeholder substitution, section order.

What the planner changes is declared as `Adaptation`s on the plan. Placeholder substitution is the only
rewrite of runbook text: every other character of a command, file content or line edit is kept (this is
verified for every step, see `_verify_verbatim`). Dynamic placeholders (the fstab UUID) stay in the text,
marked by a dynamic `Substitution`; the applier fills them.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.errors import RunbookError, UsageError
from harness.model import Adaptation, Location, Plan, SourceRef, Step, StepKind, Substitution
from harness.profiles import Profile, load_profile
from harness.runbook_parser import CONSOLE_INTRO, ParsedRunbook, Prose, RawStep, parse_runbook

RUNNABLE = (StepKind.SHELL, StepKind.FILE_WRITE, StepKind.LINE_EDIT)
PLACEHOLDER_LIKE = re.compile(r"<[A-Za-z][A-Za-z0-9_-]*>|\bYOUR_[A-Z0-9_]+_HERE\b")
HTML_TAGS = frozenset(
    "a abbr b body br button code div em footer form h1 h2 h3 h4 h5 h6 head header hr html i img input "
    "label li link main meta nav ol option p pre script section select small span strong style sub sup "
    "table tbody td textarea th thead title tr u ul".split())
OPERATOR_PROSE = re.compile(
    r"\b(?:on|from) your (?:local machine|laptop|workstation|own machine|local computer|computer|"
    r"development machine)\b", re.IGNORECASE)
SERVER_PROSE = re.compile(
    r"\bon (?:the|your) (?:server|ec2 instance|instance|host|target host|vm|"
    r"remote (?:host|server|machine))\b", re.IGNORECASE)
DEFAULT_SERVER_REASON = 'default: the target server (no "on your local machine" in this section)'


def build_plan(runbook: Path | str, profile: str | Path | Profile = "default") -> Plan:
    """Parse the runbook and turn it into the plan the applier runs and the suites check against."""
    parsed = parse_runbook(Path(runbook))
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    steps = [_to_step(raw, parsed, prof) for raw in parsed.steps]
    ordered = order_steps(steps, prof, str(parsed.path))
    for index, step in enumerate(ordered):
        step.index = index
    return Plan(runbook_path=str(parsed.path), runbook_sha256=parsed.sha256, profile=prof.name,
                steps=ordered, adaptations=_adaptations(ordered, steps, prof), sections=_sections(ordered))


# ------------------------------------------------------------------------------------------ steps


def _to_step(raw: RawStep, parsed: ParsedRunbook, profile: Profile) -> Step:
    location, reason = locate(raw, parsed.prose)
    step = Step(index=0, kind=raw.kind, ref=SourceRef(raw.section, raw.line_start, raw.line_end),
                phase=profile.phase_for(raw.section), location=location, location_reason=reason,
                raw=raw.raw, path=raw.path, editor_command=raw.editor_command, notes=list(raw.notes),
                params=dict(raw.params), reason=raw.reason)
    if raw.kind not in RUNNABLE:
        return step
    runbook = str(parsed.path)
    if raw.kind is StepKind.SHELL:
        step.command, step.substitutions = substitute_checked(raw.body, raw.body_line, profile, runbook)
        step.run_as = sudo_user(raw.body)
        return step
    editor, editor_subs = substitute_checked(raw.editor_command, raw.line_start, profile, runbook)
    step.content, content_subs = substitute_checked(raw.body, raw.body_line, profile, runbook)
    step.path = substitute(raw.path, raw.line_start, profile).text
    step.substitutions = editor_subs + content_subs
    step.run_as = sudo_user(editor)
    return step


def locate(raw: RawStep, prose: list[Prose]) -> tuple[Location, str]:
    """Where a step runs, and the runbook's words that decided it."""
    if raw.kind is StepKind.NOT_RUN:
        return Location.NONE, f"not executed: {raw.reason}"
    if raw.kind is StepKind.CONSOLE:
        return Location.CONSOLE, _console_reason(raw)
    decided: tuple[Location, str] = (Location.SERVER, DEFAULT_SERVER_REASON)
    for para in prose:
        if para.section != raw.section or para.line_start >= raw.line_start:
            continue
        hits = [(m.start(), Location.OPERATOR, m) for m in OPERATOR_PROSE.finditer(para.text)]
        hits += [(m.start(), Location.SERVER, m) for m in SERVER_PROSE.finditer(para.text)]
        if hits:
            _, where, match = max(hits, key=lambda hit: hit[0])
            decided = (where, f'line {para.line_start}: "{match.group(0)}"')
    return decided


def _console_reason(raw: RawStep) -> str:
    match = CONSOLE_INTRO.search(raw.intro)
    if match:
        return f'line {raw.intro_line}: "{match.group(0)}"'
    if raw.intro:
        return f'line {raw.intro_line}: manual step listed under "{raw.intro}"'
    return f"manual step (list item, line {raw.line_start})"


def sudo_user(command: str) -> str | None:
    """The user of the first `sudo -u USER` (or --user) in a command, else None."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    for index, token in enumerate(tokens):
        if token == "sudo" or token.endswith("/sudo"):
            return _sudo_option_user(tokens[index + 1:])
    return None


def _sudo_option_user(args: list[str]) -> str | None:
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        option = args[index]
        following = args[index + 1] if index + 1 < len(args) else None
        if option.startswith("--user="):
            return option.split("=", 1)[1]
        if option == "--user":
            return following
        if not option.startswith("--"):
            flags = option[1:]
            if "u" in flags:
                rest = flags[flags.index("u") + 1:]
                return rest or following
            if flags and flags[-1] in "ghpCDrtUT":
                index += 1  # the option's argument
        index += 1
    return None


# --------------------------------------------------------------------------------- substitution


@dataclass(frozen=True)
class Substituted:
    text: str
    substitutions: list[Substitution]
    spans: list[tuple[int, int, int, int]]  # (start, end) in the original, (start, end) in the result


def _token_pattern(profile: Profile) -> re.Pattern[str] | None:
    tokens = sorted(profile.placeholders, key=len, reverse=True)
    if not tokens:
        return None
    parts = []
    for token in tokens:
        before = r"(?<!\w)" if re.match(r"\w", token) else ""
        after = r"(?!\w)" if re.search(r"\w$", token) else ""
        parts.append(before + re.escape(token) + after)
    return re.compile("|".join(parts))


def substitute(text: str, first_line: int, profile: Profile) -> Substituted:
    """Replace the profile's placeholders in `text` (whose first line is source line `first_line`)."""
    pattern = _token_pattern(profile)
    if pattern is None or not text:
        return Substituted(text, [], [])
    pieces: list[str] = []
    subs: list[Substitution] = []
    spans: list[tuple[int, int, int, int]] = []
    position = 0
    length = 0
    for match in pattern.finditer(text):
        placeholder = profile.placeholders[match.group(0)]
        value = placeholder.token if placeholder.is_dynamic else placeholder.value
        before = text[position:match.start()]
        pieces += [before, value]
        length += len(before)
        spans.append((match.start(), match.end(), length, length + len(value)))
        length += len(value)
        subs.append(placeholder.substitution(first_line + text.count("\n", 0, match.start()), profile.name))
        position = match.end()
    pieces.append(text[position:])
    return Substituted("".join(pieces), subs, spans)


def substitute_checked(text: str, first_line: int, profile: Profile,
                       runbook: str) -> tuple[str, list[Substitution]]:
    """Substitute, refuse unknown placeholders (RunbookError), and verify nothing else changed."""
    result = substitute(text, first_line, profile)
    _refuse_unknown(text, first_line, result, runbook)
    _verify_verbatim(text, result)
    return result.text, result.substitutions


def unknown_placeholders(text: str, spans: list[tuple[int, int, int, int]]) -> list[re.Match[str]]:
    """Placeholder-looking tokens (`<name>`, `YOUR_X_HERE`) outside the known placeholders' spans."""
    found = []
    for match in PLACEHOLDER_LIKE.finditer(text):
        if any(start < match.end() and match.start() < end for start, end, _, _ in spans):
            continue
        if match.group(0).startswith("<") and match.group(0)[1:-1].lower() in HTML_TAGS:
            continue
        found.append(match)
    return found


def _refuse_unknown(text: str, first_line: int, result: Substituted, runbook: str) -> None:
    unknown = unknown_placeholders(text, result.spans)
    if unknown:
        token = unknown[0].group(0)
        line = first_line + text.count("\n", 0, unknown[0].start())
        message = f"unknown placeholder {token} at line {line}; add it to the profile's [placeholders]"
        raise RunbookError(runbook, line, message)


def _verify_verbatim(original: str, result: Substituted) -> None:
    """Every character of `original` outside placeholder occurrences is in the result, in place."""
    rebuilt = []
    position = 0
    for start, end, new_start, new_end in result.spans:
        rebuilt += [result.text[position:new_start], original[start:end]]
        position = new_end
    rebuilt.append(result.text[position:])
    if "".join(rebuilt) != original:
        raise RuntimeError("planner bug: substitution changed text outside placeholders")


# ------------------------------------------------------------------------------------------ order


def order_steps(steps: list[Step], profile: Profile, runbook: str) -> list[Step]:
    """Apply the profile's section order (see harness/profiles.py); default = document order."""
    if not profile.order:
        return list(steps)
    ranked = [(profile.order_rank(step.ref.section), position, step) for position, step in enumerate(steps)]
    used = {rank for rank, _, _ in ranked if rank is not None}
    for rank, pattern in enumerate(profile.order):
        if rank not in used:
            raise UsageError(f"profile {profile.name}: order entry {pattern.pattern!r} matches no section "
                             f"with steps in {runbook}")
    first = sorted((r for r in ranked if r[0] is not None), key=lambda r: (r[0], r[1]))
    rest = [r for r in ranked if r[0] is None]
    return [step for _, _, step in first + rest]


def _sections(steps: list[Step]) -> list[str]:
    seen: list[str] = []
    for step in steps:
        label = " > ".join(step.ref.section)
        if label not in seen:
            seen.append(label)
    return seen


# ------------------------------------------------------------------------------------ adaptations


def _adaptations(ordered: list[Step], document: list[Step], profile: Profile) -> list[Adaptation]:
    found = [
        _editor_adaptation(ordered, StepKind.FILE_WRITE, "editor-to-file-write",
                           "editor steps become file writes of the content block the runbook gives "
                           "(root-owned, mode 0644, as `sudo nano` would leave them)"),
        _editor_adaptation(ordered, StepKind.LINE_EDIT, "editor-to-line-append",
                           "\"add a line\" editor steps append the runbook's line to the file"),
        _placeholder_adaptation(ordered, profile),
        _dynamic_adaptation(ordered),
        _console_adaptation(ordered),
        _order_adaptation(ordered, document, profile),
    ]
    return [a for a in found if a is not None]


def _editor_adaptation(steps: list[Step], kind: StepKind, ident: str, summary: str) -> Adaptation | None:
    edits = [s for s in steps if s.kind is kind]
    if not edits:
        return None
    detail = "; ".join(f"line {s.ref.line_start}: `{s.editor_command}` -> {s.path}" for s in edits)
    return Adaptation(ident, summary, detail)


def _placeholder_adaptation(steps: list[Step], profile: Profile) -> Adaptation | None:
    subs = [sub for step in steps for sub in step.substitutions if not sub.dynamic]
    if not subs:
        return None
    counts = Counter((sub.placeholder, sub.value) for sub in subs)
    detail = "; ".join(
        f"{placeholder} -> {value} ({count}x, line{'s' if count > 1 else ''} "
        f"{', '.join(str(s.line) for s in subs if s.placeholder == placeholder)})"
        for (placeholder, value), count in counts.items())
    return Adaptation("placeholder-substitution",
                      f"runbook placeholders replaced with the values of profile {profile.name}", detail)


def _dynamic_adaptation(steps: list[Step]) -> Adaptation | None:
    subs = [sub for step in steps for sub in step.substitutions if sub.dynamic]
    if not subs:
        return None
    detail = "; ".join(f"{sub.placeholder} (line {sub.line}): {sub.source}" for sub in subs)
    return Adaptation("dynamic-placeholder",
                      "placeholders whose value exists only on the host are filled at apply time", detail)


def _console_adaptation(steps: list[Step]) -> Adaptation | None:
    console = [s for s in steps if s.kind is StepKind.CONSOLE]
    if not console:
        return None
    detail = "; ".join(f"{_lines(s.ref)}: {s.params.get('action', 'manual')}" for s in console)
    return Adaptation("console-to-provider",
                      "console/manual steps are not run as shell: a provider performs the parsed action "
                      "or the step is reported as manual", detail)


def _lines(ref: SourceRef) -> str:
    if ref.line_start == ref.line_end:
        return f"line {ref.line_start}"
    return f"lines {ref.line_start}-{ref.line_end}"


def _order_adaptation(ordered: list[Step], document: list[Step], profile: Profile) -> Adaptation | None:
    if [id(s) for s in ordered] == [id(s) for s in document]:
        return None
    moved = " then ".join(p.pattern for p in profile.order)
    return Adaptation("section-order",
                      f"profile {profile.name} applies sections out of document order: {moved} first",
                      "; ".join(_sections(ordered)))
