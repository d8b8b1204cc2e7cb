"""A unit file as text (the runbook's) against the unit systemd actually uses (`systemctl show`).

The runbook's unit says what the service should run; what the host runs is systemd's effective configuration:
the fragment plus every drop-in under /etc, /run and /usr/lib, as loaded at the last daemon-reload. These
helpers parse both into the same shape, so a check compares what the host uses with what the runbook gives,
never the file the kit wrote with the text it wrote.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# the [Service] settings a check compares, with systemd's value when the unit does not set one
COMPARED = {"User": "", "Group": "", "ExecStart": "", "WorkingDirectory": "", "Restart": "no", "Environment": ""}
# what `systemctl show -p ...` is asked for: the compared settings and where they came from
SHOWN = (*COMPARED, "FragmentPath", "DropInPaths", "NeedDaemonReload", "LoadState")
_ARGV = re.compile(r"argv\[\]=(.*?) ;")


@dataclass(frozen=True)
class Difference:
    setting: str
    runbook: str
    effective: str

    def describe(self) -> str:
        return f"{self.setting}: runbook {self.runbook or '(unset)'!r}, systemd uses {self.effective or '(unset)'!r}"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file with their (key, value) lines in order; comments, blank lines and line
    continuations handled as systemd does (an empty value resets a list setting)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    lines = text.splitlines()
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    for line in joined:
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None:
            current.append((key.strip(), value.strip()))
    return sections


def _exec_command(value: str) -> str:
    """An ExecStart value as systemd runs it: prefixes (-@:+!) dropped, shell-style quoting undone."""
    value = value.lstrip("-@:+!")
    try:
        return " ".join(shlex.split(value))
    except ValueError:
        return " ".join(value.split())


def expected_settings(unit_text: str) -> dict[str, str]:
    """The compared [Service] settings as the runbook's unit sets them (systemd's defaults otherwise)."""
    found = dict(COMPARED)
    environment: list[str] = []
    commands: list[str] = []
    for key, value in parse_unit(unit_text).get("Service", []):
        if key == "Environment":
            environment = [] if not value else environment + shlex.split(value)
        elif key == "ExecStart":
            commands = [] if not value else commands + [_exec_command(value)]
        elif key in found:
            found[key] = value
    found["Environment"] = " ".join(sorted(environment))
    found["ExecStart"] = " | ".join(commands)
    return found


def parse_show(output: str) -> dict[str, str]:
    """`systemctl show -p A -p B UNIT` output (KEY=VALUE lines) as a dict; ExecStart as its argv lines joined."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "ExecStart":
            found[key] = " | ".join(" ".join(m.split()) for m in _ARGV.findall(value))
        elif key == "Environment":
            try:
                found[key] = " ".join(sorted(shlex.split(value)))
            except ValueError:
                found[key] = value
        else:
            found[key] = value.strip()
    return found


def differences(unit_text: str, effective: dict[str, str]) -> list[Difference]:
    """Each compared setting whose effective value is not the runbook's."""
    expected = expected_settings(unit_text)
    return [Difference(key, value, effective.get(key, COMPARED[key])) for key, value in expected.items()
            if effective.get(key, COMPARED[key]) != value]


def show_command(unit: str) -> str:
    return "systemctl show " + " ".join(f"-p {p}" for p in SHOWN) + f" {unit}"
