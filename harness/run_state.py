"""The run's state file, read back by the suites and scenarios (pytest subprocesses, generators)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.model import Plan


def plan_of_run(state: dict[str, Any]) -> Plan:
    """The plan the run made when it started: the runbook is read once per run, never again by a suite."""
    if state.get("plan"):
        return Plan.from_state(json.loads(Path(state["plan"]).read_text()))
    from harness.planner import build_plan  # a lab state written by hand (tests): the plan from its runbook

    return build_plan(Path(state["runbook"]), state["profile"])
