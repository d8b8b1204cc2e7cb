"""Suite `upgrade`: the upgrade rehearsal's recorded history, judged (harness.scenarios.upgrade records it).

The rehearsal runs the runbook's update steps verbatim with a seeded database on the host, an uptime prober
on the vantage and observations before and after (unit state and MainPID, the main process's user,
bin/current, /v1/health, a dump of every table, the owner's token), then goes back to the starting version
with the runbook's specific-version step. Each check judges one promise from that history: the steps as
written, a newer version running, the service really restarted, the data and tokens kept, the service user
kept, and what the rollback did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.model import Plan, Step, StepKind
from harness.pytest_plugin import NOT_APPLICABLE_PREFIX, CheckRecorder
from harness.run_state import RunState
from harness.scenarios import history_path, load_history
from harness.systemd_unit import expected_settings
from harness.upgrade_judge import (
    compare_dumps,
    downtime,
    load_dump,
    main_pid,
    observed,
    rollback_outcome,
    stage,
    version_of,
)

# what the checks marked `mutates` change on the host (they run only where the kit may change it)
STEP6_CHANGES = "runs Step 6: stops, upgrades and restarts the server, then goes back to the starting version"
SERVICE = "spacetimedb"


@pytest.fixture(scope="session")
def rehearsal(run_state: RunState) -> tuple[dict[str, Any], Path]:
    found, path = load_history(run_state, "upgrade"), history_path(run_state, "upgrade")
    if found is None or path is None:
        return {"applicable": False, "reason": "the upgrade rehearsal did not run in this run", "events": []}, \
            Path(".")
    return found, path.parent


def _history(rehearsal: tuple[dict[str, Any], Path], check: CheckRecorder) -> tuple[dict[str, Any], Path]:
    history, base = rehearsal
    if not history.get("applicable"):
        check.not_applicable(history.get("reason") or "the upgrade rehearsal did not apply")
    if history.get("error"):
        check.note("rehearsal error", history["error"])
    return history, base


def _step(plan: Plan, index: int | None) -> Step | None:
    return next((s for s in plan.steps if s.index == index), None)


def _steps_matching(history: dict[str, Any], stage_name: str, pattern: str) -> list[dict[str, Any]]:
    return [r for r in (stage(history, stage_name) or {}).get("steps", []) if re.search(pattern, r["command"])]


def _record_step(check: CheckRecorder, history: dict[str, Any], r: dict[str, Any], why: str) -> None:
    output = r["stdout"] + (f"\n[stderr]\n{r['stderr']}" if r["stderr"].strip() else "")
    check.note(f"upgrade step: {r['command']}", output.strip(), command=r["command"], status=r["exit_status"],
               host=r.get("user", ""))
    if why:
        check.note("how the rehearsal ran it", why)
    for attempt in (history.get("repairs") or {}).get(str(r["step"]), []):
        check.note(attempt["label"], attempt["output"], command=attempt["command"], status=attempt["status"])


def _running_before(check: CheckRecorder, before: dict[str, Any]) -> None:
    """What the update does to a running service cannot be judged on a host whose service was not running."""
    state = (before.get("properties") or {}).get("ActiveState")
    if state != "active":
        check.not_applicable(f"the service was {state or 'unknown'} before the update (not a Step 6 effect: see the "
                             f"service suite), so whether the update brings it back cannot be judged")


def _running_after(check: CheckRecorder, history: dict[str, Any], what: str) -> None:
    """A server that is not running after the update has no data, tokens or user to judge: upgrade.service-back
    fails for that, once."""
    after = observed(history, "after")
    state = (after.get("properties") or {}).get("ActiveState")
    if state != "active":
        check.not_applicable(f"the service is {state or 'unknown'} after the update (upgrade.service-back judges "
                             f"that), so {what} cannot be read")


def _observation(check: CheckRecorder, history: dict[str, Any], name: str) -> dict[str, Any]:
    seen = observed(history, name)
    shown = {k: v for k, v in seen.items() if k != "journal_tail"}
    check.note(f"observed {name}", json.dumps(shown, indent=1))
    return seen


def _judge_step(check: CheckRecorder, plan: Plan, history: dict[str, Any], stage_name: str, pattern: str,
                what: str) -> dict[str, Any]:
    found = _steps_matching(history, stage_name, pattern)
    if not found:
        check.not_applicable(f"the runbook's update section has no step matching {what}")
    r = found[0]
    check.ref(_step(plan, r["step"]))
    _record_step(check, history, r, f"in the {stage_name} stage" + ("" if r.get("as_written", True) else
                                                                   ", its version set to the starting one"))
    assert r["exit_status"] == 0 and not r.get("timed_out"), (
        f"`{r['command']}` fails as written (exit {r['exit_status']}): {(r['stderr'] or r['stdout']).strip()[-300:]}")
    return r


@pytest.mark.check("upgrade.stop-service", mutates=STEP6_CHANGES, claim="the service stops before the upgrade")
def test_stop(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    _judge_step(check, plan, history, "upgrade", rf"systemctl\s+stop\s+{SERVICE}", "`systemctl stop spacetimedb`")


@pytest.mark.check("upgrade.version-upgrade", mutates=STEP6_CHANGES,
                   claim="the documented upgrade command upgrades to the latest version, and that version runs")
def test_version_upgrade(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    _judge_step(check, plan, history, "upgrade", r"\bversion\s+upgrade\b", "`spacetime ... version upgrade`")
    before, after = _observation(check, history, "before"), _observation(check, history, "after")
    released = (stage(history, "release") or {}).get("version")
    if released:
        check.note("release published before the update (lab mirror)", str(released))
    was, now = version_of(before), version_of(after)
    if not released and now and now == was:
        check.not_applicable(f"the host runs {now} before and after, and no newer release was known to be "
                             f"available (the kit publishes one only on its own lab mirror): nothing to upgrade to")
    assert now and now != was, f"the version did not change: {was or '?'} before, {now or '?'} after the upgrade"
    if released:
        assert now == str(released), f"{now} runs after the upgrade, but the latest release is {released}"
    assert after.get("health_version", "").removeprefix("v") in ("", now), (
        f"bin/current is {now} but the server that answers /v1/health is {after.get('health_version')}: the old "
        f"binary still runs")


@pytest.mark.check("upgrade.install-specific-version", mutates=STEP6_CHANGES,
                   claim="the documented command installs a specific version (the rehearsal's way back)")
def test_install_specific(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    pinned = _step(plan, history.get("specific_version_step"))
    if pinned is None:
        check.not_applicable("the runbook's update section has no step that installs a specific version")
    found = [r for r in (stage(history, "rollback") or {}).get("steps", []) if r["step"] == pinned.index]
    if not found:
        check.not_applicable((history.get("rollback") or {}).get("skipped") or "the rollback did not run")
    check.ref(pinned)
    back = history.get("rollback") or {}
    _record_step(check, history, found[0], f"the way back: the specific-version step with {back.get('version', '?')} "
                 f"({back.get('version_source', 'the starting version')})")
    r = found[0]
    assert r["exit_status"] == 0 and not r.get("timed_out"), (
        f"`{r['command']}` fails as written (exit {r['exit_status']}): {(r['stderr'] or r['stdout']).strip()[-300:]}")


@pytest.mark.check("upgrade.service-back", mutates=STEP6_CHANGES,
                   claim="the service went down and came back: a new main process, active and answering, on the "
                         "version the steps chose")
def test_service_back(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    starts = _steps_matching(history, "upgrade", rf"systemctl\s+(re)?start\s+{SERVICE}")
    check.ref(_step(plan, starts[-1]["step"]) if starts else None)
    before, after = _observation(check, history, "before"), _observation(check, history, "after")
    upgrade = stage(history, "upgrade") or {}
    window = {**downtime(upgrade.get("probe") or []), "path": upgrade.get("probe_path", "")}
    check.note("downtime (a read-only GET through the site every 0.5 s from the vantage)", json.dumps(window, indent=1))
    check.note("journal after the upgrade", after.get("journal_tail", ""))
    _running_before(check, before)
    state = (after.get("properties") or {}).get("ActiveState")
    assert state == "active", f"the service is {state or 'unknown'} after the upgrade steps"
    assert after.get("ping") == "200", (f"the server does not answer /v1/ping after the upgrade "
                                        f"(got {after.get('ping')})")
    pid_before, pid_after = main_pid(before), main_pid(after)
    assert pid_before != pid_after, (f"the main process is still {pid_after}: the service never went down, so the "
                                     f"new version cannot be running")
    running, chosen = after.get("health_version", "").removeprefix("v"), version_of(after)
    assert not running or running == chosen, f"/v1/health says {running}, the steps chose {chosen}"


@pytest.mark.check("upgrade.data-preserved", mutates=STEP6_CHANGES,
                   claim="every table, row and column type of the database is the same after the upgrade")
def test_data_preserved(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, base = _history(rehearsal, check)
    prepared = stage(history, "prepare") or {}
    if not history.get("database"):
        check.not_applicable("no database could be seeded to watch: " + _why_not_seeded(prepared))
    before = load_dump(history, "before", base)
    if before is None:
        check.not_applicable("the database could not be dumped before the upgrade: "
                             + str(((stage(history, "before") or {}).get("fingerprint") or {}).get("stderr", "")))
    _running_after(check, history, "the data after it")
    comparison = compare_dumps(before, load_dump(history, "after", base))
    check.note("data before and after the upgrade", json.dumps(comparison, indent=1))
    assert comparison["identical"], _difference(comparison)


@pytest.mark.check("upgrade.tokens-preserved", mutates=STEP6_CHANGES,
                   claim="a token issued before the upgrade still authenticates and still owns its database")
def test_tokens_preserved(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    if not history.get("database"):
        check.not_applicable("no database could be seeded to watch: " + _why_not_seeded(stage(history, "prepare")))
    _running_after(check, history, "whether the token still works")
    token = (stage(history, "after") or {}).get("token") or {}
    check.note("the pre-upgrade token against the upgraded server", json.dumps(token.get("out") or token, indent=1))
    failed = [c.get("name") for c in (token.get("out") or {}).get("checks", []) if not c.get("ok")]
    assert (token.get("out") or {}).get("ok"), f"the token no longer works: {', '.join(map(str, failed)) or token}"


@pytest.mark.check("upgrade.runs-as-service-user", mutates=STEP6_CHANGES,
                   claim="the upgrade keeps the user the server runs as (the unit's dedicated user)")
def test_runs_as_service_user(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, _ = _history(rehearsal, check)
    before, after = _observation(check, history, "before"), _observation(check, history, "after")
    _running_before(check, before)
    _running_after(check, history, "the user its main process runs as")
    # the update must not change the user: whether that user is the runbook's is service.runs-as-dedicated-user's
    # question (a host that already ran as root fails there, once)
    wanted = before.get("main_user", "") or _unit_user(plan)
    if not wanted:
        check.not_applicable("neither the host before the upgrade nor the runbook's unit names the service's user")
    assert after.get("main_user"), "no main process after the upgrade, so no user to judge"
    assert after["main_user"] == wanted, (f"the server runs as {after['main_user']} after the upgrade, as "
                                          f"{wanted} before it")


@pytest.mark.check("upgrade.rollback", mutates=STEP6_CHANGES, required=False,
                   claim="going back to the starting version with the specific-version step either works with the "
                         "data intact or is refused by the server with a clear message")
def test_rollback(rehearsal, plan: Plan, check: CheckRecorder) -> None:
    history, base = _history(rehearsal, check)
    check.ref(_step(plan, history.get("specific_version_step")))
    outcome = rollback_outcome(history, base)
    check.note("rollback outcome", json.dumps(outcome, indent=1))
    if outcome["outcome"] == "skipped":
        check.not_applicable(outcome["reason"])
    _running_before(check, observed(history, "before"))
    left = f"running {outcome.get('version_running')}" if outcome.get("running") else "down"
    assert outcome["outcome"] in ("worked", "refused"), (
        f"going back to {outcome.get('version')} left the server {left} without a refusal in its journal"
        + ("; the data changed" if outcome.get("data_identical") is False else ""))


def _unit_user(plan: Plan) -> str:
    units = [s for s in plan.steps if s.kind is StepKind.FILE_WRITE and s.path and s.path.endswith(".service")]
    return expected_settings(units[0].content or "")["User"] if units else ""


def _why_not_seeded(prepared: dict[str, Any] | None) -> str:
    prepared = prepared or {}
    if prepared.get("error"):
        return str(prepared["error"])
    publish = (prepared.get("publish") or {}).get("out") or {}
    return str(publish.get("error") or publish or prepared.get("seed") or "the server did not take the module")[:300]


def _difference(comparison: dict[str, Any]) -> str:
    if comparison.get("reason"):
        return f"the data after the upgrade: {comparison['reason']}"
    schema = comparison.get("schema") or {}
    parts = [f"table {m['table']} missing ({m.get('error', '')[:80]})" for m in schema.get("missing_tables", [])]
    parts += [f"table {d['table']} columns changed" for d in schema.get("column_differences", [])]
    parts += [f"table {t}: {v['rows_before']} rows -> {v['rows_after']}"
              for t, v in (comparison.get("tables") or {}).items()
              if not v["identical"] and v["rows_after"] is not None]
    return "the data changed across the upgrade: " + "; ".join(parts[:8])


__all__ = ["NOT_APPLICABLE_PREFIX"]
