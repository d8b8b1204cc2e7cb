"""A real AWS account, read only (issue 17): writes refused before sending, the volume found from the host's NVMe
serial, recovery-point freshness and restore testing judged from recorded responses (botocore's Stubber) where
moto has no API, against moto where it has."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.aws.moto_lab import CREDENTIALS, MotoServer
from harness.aws.real_account import (
    AwsWriteRefused,
    freshness,
    read_only_client,
    volume_behind,
    volume_id_from_serial,
)
from harness.targets.base import CommandResult

pytest.importorskip("moto")
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _session() -> Any:
    import boto3

    return boto3.Session(aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_a_write_is_refused_before_it_is_sent_and_reads_pass(moto: MotoServer) -> None:
    backup = read_only_client("backup", region="us-east-1", endpoint_url=moto.url, session=_session())
    before = backup.list_backup_vaults()["BackupVaultList"]
    with pytest.raises(AwsWriteRefused, match="CreateBackupVault"):
        backup.create_backup_vault(BackupVaultName="stdbc-must-not-exist")
    with pytest.raises(AwsWriteRefused, match="DeleteBackupPlan"):
        backup.delete_backup_plan(BackupPlanId="x")
    assert backup.list_backup_vaults()["BackupVaultList"] == before  # nothing reached the account
    ec2 = read_only_client("ec2", region="us-east-1", endpoint_url=moto.url, session=_session())
    assert "Volumes" in ec2.describe_volumes()
    with pytest.raises(AwsWriteRefused):
        ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)
    assert ec2.describe_volumes()["Volumes"] == []


def test_the_volume_behind_stdb_comes_from_its_nvme_serial() -> None:
    assert volume_id_from_serial("vol0123456789abcdef0") == "vol-0123456789abcdef0"
    assert volume_id_from_serial("stdbc-data") is None and volume_id_from_serial("QEMU HARDDISK") is None

    class _Host:
        def run(self, command: str, **_: Any) -> CommandResult:
            out = ("/dev/nvme1n1\n" if command.startswith("findmnt") else
                   "nvme0n1 vol0aaaaaaaaaaaaaaaa1\nnvme1n1 vol0123456789abcdef0\n")
            return CommandResult(command, 0, out, "", 0.1)

    found, said = volume_behind(_Host())
    assert found == "vol-0123456789abcdef0" and "/dev/nvme1n1" in said


def _stubbed(operation: str, response: dict[str, Any], params: dict[str, Any] | None = None) -> Any:
    from botocore.stub import Stubber

    backup = read_only_client("backup", region="us-east-1", session=_session())
    stubber = Stubber(backup)
    stubber.add_response(operation, response, params)
    stubber.activate()
    return backup


@pytest.mark.parametrize(("age_hours", "fresh"), [(0.5, True), (3.0, False)])
def test_recovery_point_freshness_against_the_rpo(age_hours: float, fresh: bool) -> None:
    arn = "arn:aws:ec2:us-east-1:111122223333:volume/vol-0123456789abcdef0"
    created = NOW - timedelta(hours=age_hours)
    backup = _stubbed("list_recovery_points_by_resource", {"RecoveryPoints": [
        {"RecoveryPointArn": "arn:aws:ec2:us-east-1::snapshot/snap-1", "CreationDate": created, "Status": "COMPLETED"},
        {"RecoveryPointArn": "arn:aws:ec2:us-east-1::snapshot/snap-0", "CreationDate": NOW - timedelta(days=2),
         "Status": "COMPLETED"}]}, {"ResourceArn": arn})
    points = backup.list_recovery_points_by_resource(ResourceArn=arn)["RecoveryPoints"]
    ok, said = freshness(points, 3600, now=NOW)
    assert ok is fresh and f"{age_hours:.1f} h old" in said
    assert freshness([], 3600, now=NOW) == (False, "the volume has no completed recovery point")


def test_restore_testing_plans_are_listed_read_only() -> None:
    backup = _stubbed("list_restore_testing_plans", {"RestoreTestingPlans": [
        {"RestoreTestingPlanArn": "arn:aws:backup:us-east-1:111122223333:restore-testing-plan:monthly",
         "RestoreTestingPlanName": "monthly", "CreationTime": NOW, "ScheduleExpression": "cron(0 5 1 * ? *)"}]})
    plans = backup.list_restore_testing_plans()["RestoreTestingPlans"]
    assert [p["RestoreTestingPlanName"] for p in plans] == ["monthly"]


def test_the_suite_reads_a_real_account_without_writing(moto: MotoServer, runbook_path: Path, tmp_path: Path) -> None:
    """The aws_backup suite on a "real" account (moto standing in, simulated=False): read-only clients, the volume
    by the id found on the host; the account is unchanged afterwards."""
    import urllib.request

    from harness.aws.provider import ConsoleProvider
    from harness.planner import build_plan
    from tests.test_aws_backup import _suite

    urllib.request.urlopen(urllib.request.Request(f"{moto.url}/moto-api/reset", method="POST"), timeout=30).close()
    lab = ConsoleProvider(moto.url, "us-east-1", simulated=True, allow_mutation=False)
    made = lab.perform(build_plan(runbook_path, "default")).to_state()
    backup = read_only_client("backup", region="us-east-1", endpoint_url=moto.url, session=_session())
    before = backup.list_backup_plans()["BackupPlansList"]
    real = {"endpoint_url": moto.url, "region": "us-east-1", "profile": None, "simulated": False, "read_only": True,
            "volume_id": made["volume_id"], "volume_found": "", "calls": [], "adaptations": [], "not_done": []}
    outcomes = _suite(real, runbook_path, tmp_path, env=dict(CREDENTIALS))
    for check in ("aws_backup.plan-rules", "aws_backup.vault-exists", "aws_backup.data-volume"):
        assert outcomes[check] == "passed", outcomes
    assert backup.list_backup_plans()["BackupPlansList"] == before


SELECTION_BY_TAG = {
    "list_backup_selections": {"BackupSelectionsList": [
        {"SelectionId": "sel-1", "SelectionName": "stdb", "BackupPlanId": "plan-1",
         "IamRoleArn": "arn:aws:iam::111122223333:role/backup"}]},
    "get_backup_selection": {"SelectionId": "sel-1", "BackupPlanId": "plan-1", "BackupSelection": {
        "SelectionName": "stdb", "IamRoleArn": "arn:aws:iam::111122223333:role/backup",
        "ListOfTags": [{"ConditionType": "STRINGEQUALS", "ConditionKey": "Name",
                        "ConditionValue": "spacetimedb-data"}]}},
}


def _points(hours_ago: float) -> dict[str, Any]:
    return {"list_recovery_points_by_resource": {"RecoveryPoints": [
        {"RecoveryPointArn": "arn:aws:ec2:us-east-1::snapshot/snap-1", "CreationDate": {"hours_ago": hours_ago},
         "Status": "COMPLETED"}]}}


def _restore_plans(count: int) -> dict[str, Any]:
    return {"list_restore_testing_plans": {"RestoreTestingPlans": [
        {"RestoreTestingPlanArn": f"arn:aws:backup:us-east-1:111122223333:restore-testing-plan:p{n}",
         "RestoreTestingPlanName": f"p{n}", "CreationTime": {"hours_ago": 100},
         "ScheduleExpression": "cron(0 5 1 * ? *)"} for n in range(count)]}}


def _real_account_outcomes(moto: MotoServer, runbook: Path, tmp_path: Path, recorded: dict[str, Any]) -> dict[str, str]:
    """The suite on a "real" account: moto for what it has (plans, vaults, volumes, made from `runbook`), the
    recorded responses for the rest (tests/aws_recorded_responses.py)."""
    import json
    import urllib.request

    from harness.aws.provider import ConsoleProvider
    from harness.planner import build_plan
    from tests.test_aws_backup import _suite

    urllib.request.urlopen(urllib.request.Request(f"{moto.url}/moto-api/reset", method="POST"), timeout=30).close()
    made = ConsoleProvider(moto.url, "us-east-1", simulated=True, allow_mutation=False).perform(
        build_plan(runbook, "default")).to_state()
    real = {"endpoint_url": moto.url, "region": "us-east-1", "profile": None, "simulated": False, "read_only": True,
            "volume_id": made["volume_id"], "volume_found": "", "calls": [], "adaptations": [], "not_done": []}
    tmp_path.mkdir(parents=True, exist_ok=True)
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps({"backup": recorded}))
    return _suite(real, runbook, tmp_path, env={**CREDENTIALS, "STDBC_TEST_AWS_RESPONSES": str(responses)},
                  plugins=("tests.aws_recorded_responses",))


def _variant(runbook_path: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = runbook_path.read_text()
    assert old in text, old
    variant = tmp_path / "variant.md"
    variant.write_text(text.replace(old, new, 1))
    return variant


MOTO_LACKS = ("aws_backup.selection-covers-volume", "aws_backup.restore-testing", "aws_backup.recovery-points-fresh")
SELECTION_BY_ANOTHER_TAG = {**SELECTION_BY_TAG, "get_backup_selection": {
    **SELECTION_BY_TAG["get_backup_selection"], "BackupSelection": {
        **SELECTION_BY_TAG["get_backup_selection"]["BackupSelection"],  # type: ignore[dict-item]
        "ListOfTags": [{"ConditionType": "STRINGEQUALS", "ConditionKey": "Name", "ConditionValue": "other"}]}}}


def test_each_check_moto_cannot_show_goes_red_on_a_real_account(moto: MotoServer, runbook_path: Path,
                                                                 tmp_path: Path) -> None:
    """Issue 17: the checks the lab reports not-applicable (moto has no such API) are judged on a real account:
    green on one that has what the runbook asks (a selection by the volume's tag, a restore testing plan, a
    recovery point half an hour old against the runbook's 1 hour RPO), each red on one that lacks it (a selection
    by another tag, no plan, a point three hours old)."""
    green = {**SELECTION_BY_TAG, **_restore_plans(1), **_points(0.5)}
    red = {**SELECTION_BY_ANOTHER_TAG, **_restore_plans(0), **_points(3.0)}
    as_green = _real_account_outcomes(moto, runbook_path, tmp_path / "green", green)
    as_red = _real_account_outcomes(moto, runbook_path, tmp_path / "red", red)
    assert {c: as_green[c] for c in MOTO_LACKS} == dict.fromkeys(MOTO_LACKS, "passed"), as_green
    assert {c: as_red[c] for c in MOTO_LACKS} == dict.fromkeys(MOTO_LACKS, "failed"), as_red


def test_a_runbook_whose_rpo_is_shorter_than_the_backups_are_fresh_is_red(moto: MotoServer, runbook_path: Path,
                                                                         tmp_path: Path) -> None:
    """The account of the green case above (a half-hour-old recovery point, fresh for the runbook's 1 hour RPO)
    with a variant of the runbook that promises 15 minutes: stale."""
    variant = _variant(runbook_path, tmp_path, "RPO (data loss tolerance): e.g. 1 hour",
                       "RPO (data loss tolerance): e.g. 15 minutes")
    outcomes = _real_account_outcomes(moto, variant, tmp_path / "variant", _points(0.5))
    assert outcomes["aws_backup.recovery-points-fresh"] == "failed"
