"""Suite `upgrade`: the runbook's Step 6 (updating SpacetimeDB) run verbatim on the target, step by step.

The lab's mirror serves two stand-in versions; the runbook's version placeholder is the older one, so both
the "latest" upgrade and the "specific version" install have something to do. Each documented command is
reported with its exact output; after the last step the service must be active again on the version the
steps chose. Runs last: it stops and restarts the service.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from harness.apply import OPERATOR_USER
from harness.model import Plan, StepKind
from harness.pytest_plugin import CheckRecorder, bounded_wait
from harness.repairs import try_repairs
from harness.run_state import RunState
from harness.targets.base import Target
from harness.trace import watch_of

# what the checks marked `mutates` change on the host (they run only where the kit may change it)
STEP6_CHANGES = "runs Step 6: stops and upgrades the server"

SERVICE = "spacetimedb"


@pytest.fixture(scope="session")
def upgrade_run(plan: Plan, target: Target, run_state: RunState) -> dict[str, Any]:
    """Run the upgrade-phase shell steps in order, as the applier does (the login user, through sudo).
    Unlike the apply phase every step runs even after a failure: the last step restarts the service. What the
    host looks like then is taken at once (service-back judges it); only after that, on a host the kit built,
    the steps that failed as written get their smallest repairs tried as diagnostics (harness.repairs), which
    therefore never change an outcome."""
    done = []
    for step in plan.runnable("upgrade"):
        if step.kind is StepKind.SHELL:
            done.append((step, target.run(step.command, user=OPERATOR_USER, timeout=300)))
    up = bounded_wait(lambda: target.run("curl -sf --max-time 2 http://127.0.0.1:3000/v1/ping", timeout=10).ok,
                      timeout=20) if done else False
    after = target.run(f"systemctl is-active {SERVICE}; readlink /stdb/bin/current", timeout=30)
    repairs: dict[int, list[Any]] = {}
    if run_state.builds_host:
        dirs = watch_of(plan).dirs
        for step, res in done:
            if not res.ok:
                repairs[step.index] = try_repairs(step.command, res, target, user=OPERATOR_USER, dirs=dirs)
    return {"steps": done, "up": up, "after": after, "repairs": repairs}


def _judge(check: CheckRecorder, run: dict[str, Any], pattern: str, what: str) -> None:
    found = [(s, r) for s, r in run["steps"] if re.search(pattern, s.command or "")]
    if not found:
        check.not_applicable(f"the runbook's upgrade section has no step matching {what}")
    step, res = found[0]
    check.ref(step)
    check.record(res, label=f"upgrade step: {step.command}")
    for attempt in run["repairs"].get(step.index, []):
        evidence = attempt.to_evidence()
        check.note(evidence["label"], evidence["output"], command=evidence["command"], status=evidence["status"])
    assert res.ok, (f"`{step.command}` fails as written (exit {res.exit_status}): "
                    f"{(res.stderr or res.stdout).strip()[-300:]}")


@pytest.mark.check("upgrade.stop-service", mutates=STEP6_CHANGES, claim="the service stops before the upgrade")
def test_stop(upgrade_run, check: CheckRecorder) -> None:
    _judge(check, upgrade_run, rf"systemctl\s+stop\s+{SERVICE}", "`systemctl stop spacetimedb`")


@pytest.mark.check("upgrade.version-upgrade", mutates=STEP6_CHANGES,
                   claim="the documented upgrade command upgrades to the latest version")
def test_version_upgrade(upgrade_run, check: CheckRecorder) -> None:
    _judge(check, upgrade_run, r"\bversion\s+upgrade\b", "`spacetime ... version upgrade`")


@pytest.mark.check("upgrade.install-specific-version", mutates=STEP6_CHANGES,
                   claim="the documented command installs a specific version")
def test_install_specific(upgrade_run, check: CheckRecorder) -> None:
    _judge(check, upgrade_run, r"\binstall\s+\S+\s*$", "`spacetime ... install <version>`")


@pytest.mark.check("upgrade.service-back", mutates=STEP6_CHANGES,
                   claim="after the documented steps the service is active and answers")
def test_service_back(upgrade_run, check: CheckRecorder) -> None:
    steps = upgrade_run["steps"]
    start = [s for s, _ in steps if re.search(rf"systemctl\s+start\s+{SERVICE}", s.command or "")]
    check.ref(start[-1] if start else None)
    if not steps:
        check.not_applicable("the runbook has no upgrade steps in this profile")
    check.record(upgrade_run["after"], label="service and version right after the upgrade steps")
    assert upgrade_run["up"], "the server does not answer /v1/ping after the upgrade steps"
