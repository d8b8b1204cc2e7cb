"""Units of the operator suite that need no lab."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.planner import build_plan
from harness.targets.base import CommandResult


class _Target:
    def write_file(self, *_: Any, **__: Any) -> None:
        pass

    def run(self, command: str, **_: Any) -> CommandResult:
        return CommandResult(command, 0, "", "", 0.1)


class _Check:
    def ref(self, *_: Any) -> None:
        pass

    def note(self, *_: Any, **__: Any) -> None:
        pass

    def run(self, target: _Target, command: str, **_: Any) -> CommandResult:
        return target.run(command)

    def not_applicable(self, reason: str) -> None:
        raise AssertionError(f"not-applicable: {reason}")


class _Operator:
    """A subscriber that sees its initial state, then the row it waits for."""

    def read_file(self, path: str) -> bytes:
        return b"\0asm module"

    def popen_argv(self, argv: list[str], user: str = "") -> list[str]:
        marker = argv[argv.index("--until") + 1]
        events = [{"event": "message", "kind": "InitialSubscription"},
                  {"event": "message", "kind": "TransactionUpdate", "row": marker}]
        script = f"import json\nfor e in {events!r}: print(json.dumps(e), flush=True)"
        return [sys.executable, "-c", script, "--", *argv[1:]]


def test_the_row_seen_on_the_kits_own_fallback_publish_does_not_pass(runbook_path: Path) -> None:
    """Issue 17: when the runbook's own publish failed, the kit publishes the module on the loopback to show the
    client path; the check passed on that, as if the runbook's flow worked."""
    from harness.suites import test_operator

    plan = build_plan(runbook_path, "default")
    publish = next(s for s in plan.runnable("operator") if "publish" in (s.command or ""))
    failed = SimpleNamespace(ok=False, exit_status=127)
    with pytest.raises(AssertionError, match="the runbook's own publish failed"):
        test_operator.test_subscribe_sees_row(plan, SimpleNamespace(domain="stdb.lab.test"), _Target(), _Operator(),
                                              [(publish, failed)], SimpleNamespace(run_id="t"), _Check())
