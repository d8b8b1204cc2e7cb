"""The run's hook for host-state mutants (`stdb-conformance run --mutate-host FILE.json`, selftest only).

The file is `{"commands": ["...", ...]}`. Right after the apply phase (before facts, scenarios and suites)
each command runs as root on the lab's target, in order, and is recorded in the report as an adaptation
"selftest mutant (host state): <command>" with its exit status, so a report never hides that the host was
changed on purpose. A failing command does not stop the run: the selftest's judge reads the exit status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.targets.base import Target

ADAPTATION_ID = "selftest.host-mutant"
SUMMARY_PREFIX = "selftest mutant (host state): "
TIMEOUT = 180.0


def load_host_mutants(path: Path) -> list[str]:
    """The commands of a --mutate-host file (a usage error, one line, when it is unreadable or malformed)."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--mutate-host {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"--mutate-host {path}: not JSON ({exc})") from None
    commands = data.get("commands") if isinstance(data, dict) else None
    if not isinstance(commands, list) or not all(isinstance(c, str) and c.strip() for c in commands):
        raise UsageError(f"--mutate-host {path}: expected {{\"commands\": [\"...\", ...]}}")
    return commands


def apply_host_mutants(path: Path, target: Target, report: Any, progress: Callable[[str], None]) -> None:
    """Run every command on `target` as root; each becomes an adaptation of `report` with its exit status."""
    for command in load_host_mutants(path):
        res = target.run(command, user="root", timeout=TIMEOUT)
        status = "timed out" if res.timed_out else f"exit {res.exit_status}"
        output = (res.stdout + res.stderr).strip()
        progress(f"selftest mutant (host state): {command} -> {status}")
        report.adaptations.append({"id": ADAPTATION_ID, "summary": SUMMARY_PREFIX + command,
                                   "detail": status + (f": {output[-300:]}" if output else ""),
                                   "exit_status": None if res.timed_out else res.exit_status})
