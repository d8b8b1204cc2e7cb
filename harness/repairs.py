"""Defects behind defects: when a runbook command fails as written, the smallest repairs its own failure justifies,
tried on the lab host as diagnostics, so the report also shows what would have failed next.

Each repair is chosen from the failure's evidence only (what the shell or the tool printed):
- sudo cannot enter the target user's home (`sudo -i` / `--login`): the same command without the login option;
- `X: command not found`: X by the absolute path where an executable of that name exists in the directories the
  plan installs into (the trace's watched directories), else in /usr/local/bin;
- the tool says a subcommand is unknown: the closest subcommand its own `--help` lists.
Repairs chain (the repaired command may fail for another reason, which is a defect of its own), at most
MAX_ATTEMPTS per command. Attempts never change a check's outcome: they run after the checks' evidence was
taken, on lab hosts only, and are reported as evidence "repair tried in the lab".
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from typing import Any

from harness.targets.base import CommandResult, Target

MAX_ATTEMPTS = 3
MAX_GROUPS = 12  # subcommands whose own --help is read when a word is an unknown subcommand
LABEL = "repair tried in the lab"
_NO_HOME = re.compile(r"unable to change directory to ([^\s:]+)")
_NOT_FOUND = re.compile(r"(?:^|\s)(?:bash: (?:line \d+: )?|sudo: )?([A-Za-z0-9_.-]+): command not found", re.MULTILINE)
_UNKNOWN_SUB = re.compile(r"(?:unrecognized subcommand|unknown (?:sub)?command|invalid subcommand)\s+['\"`]?([\w-]+)",
                          re.IGNORECASE)


@dataclass
class Attempt:
    reason: str
    command: str
    result: CommandResult

    @property
    def ok(self) -> bool:
        return self.result.ok

    def to_evidence(self) -> dict[str, Any]:
        output = (self.result.stdout + ("\n[stderr]\n" + self.result.stderr if self.result.stderr.strip() else ""))
        return {"label": f"{LABEL}: {self.reason}", "command": self.command, "output": output.strip()[-1500:],
                "status": self.result.exit_status}


def _without_login(command: str) -> str | None:
    repaired = re.sub(r"(\bsudo\b(?:\s+-[A-Za-z]+(?:\s+[^-\s]\S*)?)*?)\s+(?:-i|--login)\b", r"\1", command, count=1)
    return repaired if repaired != command else None


def _absolute(command: str, program: str, path: str) -> str | None:
    repaired = re.sub(rf"(?<![\w/.-]){re.escape(program)}(?![\w/.-])", path, command, count=1)
    return repaired if repaired != command else None


def _find_executable(target: Target, program: str, dirs: list[str]) -> str:
    places = " ".join(shlex.quote(d) for d in [*dirs, "/usr/local/bin"])
    res = target.run(f"find {places} -maxdepth 2 -name {shlex.quote(program)} -type f -perm -u+x 2>/dev/null "
                     f"| head -1", user="root", timeout=30)
    return res.stdout.strip().splitlines()[0] if res.ok and res.stdout.strip() else ""


def _subcommands(target: Target, user: str, program_words: list[str]) -> list[str]:
    res = target.run(" ".join(shlex.quote(w) for w in program_words) + " --help 2>&1", user=user, timeout=30)
    found = []
    section = False
    for line in res.stdout.splitlines():
        if re.match(r"^\s*(Commands|Subcommands|SUBCOMMANDS|COMMANDS):", line):
            section = True
            continue
        if section:
            match = re.match(r"^\s{2,}([a-z][\w-]*)\b", line)
            if match:
                found.append(match.group(1))
            elif line.strip() and not line.startswith(" "):
                section = False
    return found


def _next(command: str, result: CommandResult, target: Target, user: str,
          dirs: list[str]) -> tuple[str, str] | None:
    """The next repair the failure justifies: (repaired command, why), or None."""
    text = result.stderr + "\n" + result.stdout
    home = _NO_HOME.search(text)
    if home:
        repaired = _without_login(command)
        if repaired:
            return repaired, f"sudo could not enter {home.group(1)}: the same command without `-i`"
    missing = _NOT_FOUND.search(text)
    if missing and result.exit_status != 0:  # the shell says 127; sudo says it with 1
        program = missing.group(1)
        path = _find_executable(target, program, dirs)
        repaired = _absolute(command, program, path) if path else None
        if repaired:
            return repaired, f"`{program}` is not on the PATH there: by the path an installer created, {path}"
    unknown = _UNKNOWN_SUB.search(text)
    if unknown:
        words = shlex.split(command)
        bad = unknown.group(1)
        if bad in words:
            cut = words.index(bad)
            program = [w for w in words[:cut] if not w.startswith("-")][-1:] or words[:1]
            start = words.index(program[0])
            tool = words[start:cut]
            choices = _subcommands(target, user, tool)
            # the word may be a subcommand of one of the tool's subcommands (`tool group install`)
            for group in choices[:MAX_GROUPS]:
                if bad in _subcommands(target, user, [*tool, group]):
                    repaired = re.sub(rf"(?<![\w-]){re.escape(bad)}(?![\w-])", f"{group} {bad}", command, count=1)
                    return repaired, (f"`{bad}` is not a subcommand of `{' '.join(tool)}`; its own --help lists it "
                                      f"under `{group}`")
            best = difflib.get_close_matches(bad, choices, n=1, cutoff=0.6)
            if best:
                repaired = re.sub(rf"(?<![\w-]){re.escape(bad)}(?![\w-])", best[0], command, count=1)
                return repaired, f"`{bad}` is not a subcommand; the tool's own --help lists `{best[0]}`"
    return None


def try_repairs(command: str, result: CommandResult, target: Target, *, user: str,
                dirs: list[str]) -> list[Attempt]:
    """Repair attempts for a command that failed as written, each run on `target` as `user`, in order."""
    attempts: list[Attempt] = []
    current, last = command, result
    for _ in range(MAX_ATTEMPTS):
        step = _next(current, last, target, user, dirs)
        if step is None or any(a.command == step[0] for a in attempts):
            break
        current, why = step
        last = target.run(current, user=user, timeout=300)
        attempts.append(Attempt(why, current, last))
        if last.ok:
            break
    return attempts
