"""Suite `aws_backup`: the runbook's AWS backup promise, read back from AWS's APIs (boto3).

In the lab the account is a moto server the console-step provider populated from the runbook's own
parameters: the report says "simulated". Reading that back proves only that AWS's API took it, so the plan and
the volume the runbook describes are also judged against AWS's own rules and the runbook's own RPO
(harness/aws/rules.py): that is what can make these checks red in the lab. What moto cannot show (recovery
points of jobs it never runs) is not-applicable with the reason, never passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

from harness.aws.coverage import selection_covers
from harness.aws.moto_lab import client
from harness.aws.real_account import freshness, read_only_client
from harness.aws.rules import plan_problems, volume_problems
from harness.model import Plan, Step, StepKind
from harness.pytest_plugin import NOT_APPLICABLE_PREFIX, CheckRecorder
from harness.run_state import RunState
from harness.runbook_targets import runbook_target
from harness.tape import current


@pytest.fixture(scope="session")
def aws(run_state: RunState) -> dict[str, Any]:
    state = run_state.aws
    if not state:
        pytest.skip(NOT_APPLICABLE_PREFIX + "this run performed no AWS Console step (none in the applied phases)")
    return state


def _client(aws: dict[str, Any], service: str) -> Any:
    """The lab's simulated account (moto), or a real account that can only be read (--aws-region)."""
    if aws.get("simulated", True):
        return client(service, aws["endpoint_url"], aws["region"])  # type: ignore[call-overload]
    return read_only_client(service, region=aws["region"], profile=aws.get("profile"),
                            endpoint_url=aws.get("endpoint_url"))


def _real(aws: dict[str, Any]) -> bool:
    return not aws.get("simulated", True)


def _console(plan: Plan, action: str) -> Step | None:
    return next((s for s in plan.steps if s.kind is StepKind.CONSOLE and s.params.get("action") == action), None)


def _documented_rules(plan: Plan) -> list[dict[str, Any]]:
    step = _console(plan, "backup_plan")
    return step.params.get("rules", []) if step else []


def _plans(aws: dict[str, Any]) -> list[dict[str, Any]]:
    backup = current().new("aws.backup", lambda: _client(aws, "backup"))
    found = []
    for item in backup.list_backup_plans()["BackupPlansList"]:
        found.append(backup.get_backup_plan(BackupPlanId=item["BackupPlanId"])["BackupPlan"] |
                     {"BackupPlanId": item["BackupPlanId"]})
    return found


def _days_window(retention: dict[str, Any]) -> tuple[int, int]:
    """Whole-day retentions that keep the documented promise (AWS Backup counts in days)."""
    if "hours" in retention:
        days = -(-int(retention["hours"]) // 24)
        return days, days + 1
    if "days" in retention:
        return int(retention["days"]), int(retention["days"]) + 1
    low = int(retention.get("months_min", retention.get("months", 0)))
    high = int(retention.get("months_max", low))
    return 28 * low, 31 * high


def _kind(expression: str) -> str:
    fields = expression.removeprefix("cron(").removesuffix(")").split()
    if len(fields) != 6:
        return "unknown"
    minute, hour, dom, month, dow, _year = fields
    if hour == "*":
        return "hourly"
    if dom in ("*", "?") and dow in ("*", "?"):
        return "daily"
    if dom not in ("*", "?") and month == "*":
        return "monthly"
    if dow not in ("*", "?"):
        return "weekly"
    return "unknown"


@pytest.mark.check("aws_backup.plan-rules", claim="a backup plan has the documented rules (hourly kept 48 h, daily "
                                                 "kept 14 days, monthly kept 6-12 months), rules AWS Backup keeps as "
                                                 "written and that meet the runbook's own RPO")
def test_plan_rules(aws, run_state: RunState, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_console(plan, "backup_plan"))
    documented = _documented_rules(plan)
    if not documented:
        check.not_applicable("the runbook documents no backup plan rules")
    rpo = runbook_target(run_state.runbook, "RPO") if run_state.runbook else None
    problems, notes = plan_problems(documented, rpo[0] if rpo else None)
    check.note("the plan the runbook describes, against AWS Backup's rules and its RPO", json.dumps(
        {"rules": documented, "rpo": rpo[1] if rpo else "(the runbook states none)", "problems": problems,
         "notes": notes}, indent=1))
    plans = _plans(aws)
    check.note("backup plans" + (" (simulated: moto)" if aws.get("simulated") else ""), json.dumps(
        [{"name": p["BackupPlanName"], "rules": [{"name": r["RuleName"], "schedule": r["ScheduleExpression"],
                                                  "delete_after_days": r.get("Lifecycle", {}).get("DeleteAfterDays")}
                                                 for r in p["Rules"]]} for p in plans], indent=1))
    assert plans, "no backup plan exists"
    rules = [r for p in plans for r in p["Rules"]]
    missing = []
    for want in documented:
        low, high = _days_window(want["retention"])
        ok = [r for r in rules if _kind(r["ScheduleExpression"]) == want["schedule"]
              and low <= r.get("Lifecycle", {}).get("DeleteAfterDays", 0) <= high]
        if not ok:
            missing.append(f"{want['schedule']} kept {want['retention']} ({low}-{high} days)")
    assert not missing, "no rule for: " + "; ".join(missing)
    assert not problems, "the plan the runbook describes: " + "; ".join(problems)


@pytest.mark.check("aws_backup.vault-exists", claim="the plan's rules write into an existing backup vault")
def test_vault(aws, plan: Plan, check: CheckRecorder) -> None:
    step = _console(plan, "backup_plan")
    check.ref(step)
    named = step.params.get("vault", "") if step else ""
    if not _real(aws):
        # the simulated account holds what the kit made of the runbook's words: judge the words
        if named and not step.params.get("creates_vault"):  # type: ignore[union-attr]
            check.note("the runbook's vault", f"its plan targets the vault {named!r}, and no step creates it")
            raise AssertionError(f"the plan targets the vault {named!r}, which the runbook never creates (the "
                                 "console offers only vaults that exist)")
        if not named:
            check.not_applicable("simulated account: the runbook names no vault, so its plan targets the region's "
                                 "Default vault, which AWS Backup creates itself; reading back the kit's copy of "
                                 "it would prove nothing")
    backup = current().new("aws.backup", lambda: _client(aws, "backup"))
    vaults = {v["BackupVaultName"] for v in backup.list_backup_vaults()["BackupVaultList"]}
    targets = {r["TargetBackupVaultName"] for p in _plans(aws) for r in p["Rules"]}
    check.note("vaults / vaults the rules target", json.dumps({"vaults": sorted(vaults), "targets": sorted(targets)}))
    assert targets, "no rule targets a vault"
    assert targets <= vaults, f"rules target missing vaults: {sorted(targets - vaults)}"


def _volume(aws: dict[str, Any]) -> Mapping[str, Any]:
    """The data volume: on a real account the one behind /stdb (found on the host), in the lab the tagged one."""
    ec2 = current().new("aws.ec2", lambda: _client(aws, "ec2"))
    if _real(aws):
        if not aws.get("volume_id"):
            return {}
        vols = ec2.describe_volumes(VolumeIds=[aws["volume_id"]])["Volumes"]
    else:
        vols = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["spacetimedb-data"]}])["Volumes"]
    return vols[0] if vols else {}


@pytest.mark.check("aws_backup.selection-covers-volume", claim="a backup selection covers the data volume "
                                                              "(tagged Name=spacetimedb-data)")
def test_selection(aws, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_console(plan, "backup_plan"))
    backup = current().new("aws.backup", lambda: _client(aws, "backup"))
    volume = _volume(aws)
    assert volume, "no volume tagged Name=spacetimedb-data"
    tags = {t["Key"]: t["Value"] for t in volume.get("Tags", [])}
    covered, shown = False, []
    for p in _plans(aws):
        try:
            listed = backup.list_backup_selections(BackupPlanId=p["BackupPlanId"])["BackupSelectionsList"]
        except Exception as exc:  # noqa: BLE001 - an API the endpoint lacks is reported, not faked
            check.note("ListBackupSelections", f"{type(exc).__name__}: {str(exc)[:300]}")
            check.not_applicable("this AWS endpoint has no backup selection API (ListBackupSelections fails"
                                 f"{'; moto does not implement it' if aws.get('simulated') else ''})")
        for sel in listed:
            detail = backup.get_backup_selection(BackupPlanId=p["BackupPlanId"],
                                                 SelectionId=sel["SelectionId"])["BackupSelection"]
            shown.append(detail)
            covered = covered or selection_covers(detail, volume["VolumeId"], tags)
    check.note("selections", json.dumps(shown, indent=1, default=str))
    check.note("data volume tags", json.dumps(tags))
    assert covered, f"no selection covers {volume['VolumeId']} (tags {tags})"


@pytest.mark.check("aws_backup.data-volume", claim="the data volume is gp3, at least the documented size, in the "
                                                  "instance's availability zone and attached to it")
def test_data_volume(aws, plan: Plan, check: CheckRecorder) -> None:
    step = _console(plan, "create_and_attach_volume")
    check.ref(step)
    if step is None:
        check.not_applicable("the runbook documents no data volume")
    problems = volume_problems(step.params)
    check.note("the volume the runbook describes, against EC2's rules", json.dumps(
        {"params": step.params, "problems": problems}, indent=1))
    volume = _volume(aws)
    check.note("volume", json.dumps(volume, indent=1, default=str))
    assert volume, "no volume tagged Name=spacetimedb-data"
    assert volume["VolumeType"] == step.params.get("volume_type", "gp3"), f"type {volume['VolumeType']}"
    assert volume["Size"] >= int(step.params.get("size_gb", 0)), f"size {volume['Size']} GB"
    attachments = volume.get("Attachments", [])
    assert attachments, "the volume is not attached"
    ec2 = current().new("aws.ec2", lambda: _client(aws, "ec2"))
    instance = ec2.describe_instances(InstanceIds=[attachments[0]["InstanceId"]])["Reservations"][0]["Instances"][0]
    zone = instance["Placement"]["AvailabilityZone"]
    assert volume["AvailabilityZone"] == zone, f"volume in {volume['AvailabilityZone']}, instance in {zone}"
    assert not problems, "the volume the runbook describes: " + "; ".join(problems)


@pytest.mark.check("aws_backup.cross-region-copy", claim="backups are copied to another region (documented as "
                                                        "optional but recommended)", required=False)
def test_cross_region(aws, plan: Plan, check: CheckRecorder) -> None:
    step = _console(plan, "backup_plan")
    check.ref(step)
    copies = [a for p in _plans(aws) for r in p["Rules"] for a in r.get("CopyActions") or []]
    check.note("copy actions", json.dumps(copies, indent=1))
    if not copies and step is not None and re.search(r"optional", str(step.params.get("copy_to_other_region"))):
        check.not_applicable("the runbook marks the cross-region copy optional and none is configured")
    assert copies, "no rule copies backups to another region"


@pytest.mark.check("aws_backup.recovery-points-fresh", claim="the newest recovery point of the volume is within "
                                                            "the RPO (one hour for the hourly rule)")
def test_recovery_points(aws, run_state: RunState, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_console(plan, "backup_plan"))
    backup = current().new("aws.backup", lambda: _client(aws, "backup"))
    if _real(aws):
        volume = _volume(aws)
        if not volume:
            check.not_applicable(f"no EBS volume found behind /stdb on the host: {aws.get('volume_found', '')}")
        rpo = runbook_target(run_state.runbook, "RPO") if run_state.runbook else None
        if rpo is None:
            check.not_applicable("the runbook states no RPO to judge the recovery points against")
        account = _client(aws, "sts").get_caller_identity()["Account"]
        arn = f"arn:aws:ec2:{aws['region']}:{account}:volume/{volume['VolumeId']}"
        points = backup.list_recovery_points_by_resource(ResourceArn=arn).get("RecoveryPoints", [])
        fresh, said = freshness(points, rpo[0])
        check.note(f"recovery points of {arn}", json.dumps(points[:10], indent=1, default=str))
        assert fresh, said
        return
    try:
        points = backup.list_recovery_points_by_backup_vault(BackupVaultName=aws.get("vault") or "Default")
    except Exception as exc:  # noqa: BLE001 - an API moto lacks is reported, not faked
        check.note("ListRecoveryPointsByBackupVault", f"{type(exc).__name__}: {exc}")
        check.not_applicable(f"the AWS API for recovery points is not available here ({type(exc).__name__})")
    items = points.get("RecoveryPoints", [])
    check.note("recovery points", json.dumps(items, indent=1, default=str))
    if not items and aws.get("simulated"):
        check.not_applicable("simulated account (moto): no backup job ever runs, so no recovery point can exist")
    assert items, "no recovery point exists"


@pytest.mark.check("aws_backup.restore-testing", required=False,
                   claim="AWS Backup tests restores on a schedule (a restore testing plan exists), as the runbook "
                         "asks restores to be tested regularly")
def test_restore_testing(aws, plan: Plan, check: CheckRecorder) -> None:
    check.ref(_console(plan, "backup_plan"))
    if not _real(aws):
        check.not_applicable("simulated account: the runbook asks for restore tests, not for a restore testing "
                             "plan, so the kit creates none and has nothing of the runbook's to read back")
    backup = current().new("aws.backup", lambda: _client(aws, "backup"))
    plans = backup.list_restore_testing_plans().get("RestoreTestingPlans", [])
    check.note("restore testing plans", json.dumps(plans, indent=1, default=str))
    assert plans, "no AWS Backup restore testing plan: restores are not tested on a schedule"
