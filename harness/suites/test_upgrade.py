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
from harness.model import Plan, Step, StepKind
from harness.pytest_plugin import CheckRecorder, bounded_wait
from harness.targets.base import Target

# what the checks marked `mutates` change on the host (they run only where the kit may change it)
STEP6_CHANGES = "runs Step 6: stops and upgrades the server"

SERVICE = "spacetimedb"


@pytest.fixture(scope="session")
def upgrade_steps(plan: Plan, target: Target) -> list[tuple[Step, Any]]:
    """Run the upgrade-phase shell steps in order, as the applier does (the login user, through sudo).
    Unlike the apply phase every step runs even after a failure: the last step restarts the service."""
    done = []
    for step in plan.runnable("upgrade"):
        if step.kind is StepKind.SHELL:
            done.append((step, target.run(step.command, user=OPERATOR_USER, timeout=300)))
    return done


def _judge(check: CheckRecorder, steps: list[tuple[Step, Any]], pattern: str, what: str) -> None:
    found = [(s, r) for s, r in steps if re.search(pattern, s.command or "")]
    if not found:
        check.not_applicable(f"the runbook's upgrade section has no step matching {what}")
    step, res = found[0]
    check.ref(step)
    check.record(res, label=f"upgrade step: {step.command}")
    assert res.ok, (f"`{step.command}` fails as written (exit {res.exit_status}): "
                    f"{(res.stderr or res.stdout).strip()[-300:]}")


@pytest.mark.check("upgrade.stop-service", mutates=STEP6_CHANGES, claim="the service stops before the upgrade")
def test_stop(upgrade_steps, check: CheckRecorder) -> None:
    _judge(check, upgrade_steps, rf"systemctl\s+stop\s+{SERVICE}", "`systemctl stop spacetimedb`")


@pytest.mark.check("upgrade.version-upgrade", mutates=STEP6_CHANGES,
                   claim="the documented upgrade command upgrades to the latest version")
def test_version_upgrade(upgrade_steps, check: CheckRecorder) -> None:
    _judge(check, upgrade_steps, r"\bversion\s+upgrade\b", "`spacetime ... version upgrade`")


@pytest.mark.check("upgrade.install-specific-version", mutates=STEP6_CHANGES,
                   claim="the documented command installs a specific version")
def test_install_specific(upgrade_steps, check: CheckRecorder) -> None:
    _judge(check, upgrade_steps, r"\binstall\s+\S+\s*$", "`spacetime ... install <version>`")


@pytest.mark.check("upgrade.service-back", mutates=STEP6_CHANGES,
                   claim="after the documented steps the service is active and answers")
def test_service_back(upgrade_steps, target, check: CheckRecorder) -> None:
    start = [s for s, _ in upgrade_steps if re.search(rf"systemctl\s+start\s+{SERVICE}", s.command or "")]
    check.ref(start[-1] if start else None)
    if not upgrade_steps:
        check.not_applicable("the runbook has no upgrade steps in this profile")
    up = bounded_wait(lambda: target.run("curl -sf --max-time 2 http://127.0.0.1:3000/v1/ping", timeout=10).ok,
                      timeout=20)
    check.run(target, f"systemctl is-active {SERVICE}; readlink /stdb/bin/current", label="service and version")
    assert up, "the server does not answer /v1/ping after the upgrade steps"
