"""The console-step provider: performs the runbook's AWS Console steps through AWS's APIs, from the parameters
the parser read out of the runbook (volume type/size/AZ, backup rules and retention, selection tag), and
records every call. Choices the runbook leaves open (vault and plan names, cron times, the retention used
for a "6-12 months" range) are the kit's, recorded as adaptations.

Against real AWS the provider refuses to change anything unless mutation is allowed (--allow-mutation);
in the lab it targets moto, and the report says "simulated".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.aws.moto_lab import client
from harness.aws.rules import retention_hours
from harness.errors import UsageError
from harness.model import Plan, StepKind

DEFAULT_VAULT = "Default"
PLAN_NAME = "spacetimedb-data"
SCHEDULES = {"hourly": "cron(0 * * * ? *)", "daily": "cron(0 5 * * ? *)", "weekly": "cron(0 5 ? * 1 *)",
             "monthly": "cron(0 5 1 * ? *)", "quarterly": "cron(0 5 1 1/3 ? *)", "yearly": "cron(0 5 1 1 ? *)"}
ROLE = "arn:aws:iam::123456789012:role/service-role/AWSBackupDefaultServiceRole"


def retention_days(retention: dict[str, Any]) -> int:
    """AWS Backup keeps recovery points for whole days (at least 1): 48 hours -> 2 days; a range takes its upper
    bound (a kit choice, recorded)."""
    hours = retention_hours(retention)
    if hours is None:
        raise ValueError(f"unknown retention {retention}")
    return max(1, math.ceil(round(hours / 24, 6)))


@dataclass
class AwsRecord:
    endpoint_url: str | None
    region: str
    simulated: bool
    calls: list[dict[str, Any]] = field(default_factory=list)
    adaptations: list[dict[str, str]] = field(default_factory=list)
    instance_id: str = ""
    availability_zone: str = ""
    volume_id: str = ""
    vault: str = ""
    plan_id: str = ""
    selection_id: str = ""
    not_done: list[str] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ConsoleProvider:
    def __init__(self, endpoint_url: str | None, region: str, *, simulated: bool, allow_mutation: bool) -> None:
        if not simulated and not allow_mutation:
            raise UsageError("refusing to create AWS resources in a real account",
                             hint="pass --allow-mutation to let the kit perform the console steps")
        self.ec2 = client("ec2", endpoint_url, region)
        self.backup = client("backup", endpoint_url, region)
        self.record = AwsRecord(endpoint_url, region, simulated)

    def _call(self, api: Any, operation: str, **params: Any) -> dict[str, Any]:
        self.record.calls.append({"service": api.meta.service_model.service_name, "operation": operation,
                                  "params": {k: v for k, v in params.items() if "Secret" not in k}})
        return getattr(api, operation)(**params)

    def perform(self, plan: Plan, phase: str = "apply") -> AwsRecord:
        for step in plan.steps:
            if step.kind is not StepKind.CONSOLE or step.phase != phase:
                continue
            params = getattr(step, "params", None) or {}
            action = params.get("action")
            if action == "create_and_attach_volume":
                self._volume(params)
            elif action == "backup_plan":
                self._backup(params)
            else:
                self.record.not_done.append(f"line {step.ref.line_start}: {action or 'unparsed console step'}")
        return self.record

    def _instance(self) -> None:
        image = self._call(self.ec2, "describe_images", Owners=["amazon"])["Images"]
        ami = image[0]["ImageId"] if image else "ami-12c6146b"
        found = self._call(self.ec2, "run_instances", ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t3.medium",
                           TagSpecifications=[{"ResourceType": "instance",
                                               "Tags": [{"Key": "Name", "Value": "spacetimedb"}]}])
        self.record.instance_id = found["Instances"][0]["InstanceId"]
        self.record.availability_zone = found["Instances"][0]["Placement"]["AvailabilityZone"]
        self.record.adaptations.append({"id": "aws.instance", "summary": "the EC2 instance the runbook assumes is "
                                        f"created by the kit ({self.record.instance_id})"})

    def _volume(self, params: dict[str, Any]) -> None:
        if not self.record.instance_id:
            self._instance()
        zone = self.record.availability_zone
        if not params.get("same_az", True):  # the runbook names no zone: the console's first one (a kit choice)
            zones = self._call(self.ec2, "describe_availability_zones")["AvailabilityZones"]
            zone = sorted(z["ZoneName"] for z in zones)[0] if zones else zone
            self.record.adaptations.append({"id": "aws.volume-zone", "summary": "the runbook names no availability "
                                            f"zone for the data volume: the kit created it in {zone}"})
        volume = self._call(self.ec2, "create_volume", AvailabilityZone=zone, Size=int(params.get("size_gb", 200)),
                            VolumeType=params.get("volume_type", "gp3"),
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": [{"Key": "Name", "Value": "spacetimedb-data"}]}])
        self.record.volume_id = volume["VolumeId"]
        self._call(self.ec2, "attach_volume", VolumeId=volume["VolumeId"], InstanceId=self.record.instance_id,
                   Device="/dev/sdf")

    def _backup(self, params: dict[str, Any]) -> None:
        # the vault the runbook's plan targets: the one it names, else the console's choice, the region's Default
        # vault (AWS Backup makes it itself); created only when the runbook says so, or as AWS would (Default)
        vault = params.get("vault") or DEFAULT_VAULT
        self.record.vault = vault
        if params.get("creates_vault") or vault == DEFAULT_VAULT:
            self._call(self.backup, "create_backup_vault", BackupVaultName=vault)
            if vault == DEFAULT_VAULT:
                self.record.adaptations.append({"id": "aws.default-vault", "summary": "the runbook names no backup "
                                                "vault: the plan targets the region's Default vault, which AWS "
                                                "Backup creates itself (the kit created it in the simulation)"})
        rules = []
        for rule in params.get("rules", []):
            rules.append({"RuleName": rule["name"], "TargetBackupVaultName": vault,
                          "ScheduleExpression": SCHEDULES[rule["schedule"]],
                          "Lifecycle": {"DeleteAfterDays": retention_days(rule["retention"])}})
        created = self._call(self.backup, "create_backup_plan",
                             BackupPlan={"BackupPlanName": PLAN_NAME, "Rules": rules})
        self.record.plan_id = created["BackupPlanId"]
        tags = (params.get("selection") or {}).get("tag") or {"Name": "spacetimedb-data"}
        try:
            selection = self._call(self.backup, "create_backup_selection", BackupPlanId=self.record.plan_id,
                                   BackupSelection={"SelectionName": "spacetimedb-data-volume", "IamRoleArn": ROLE,
                                                    "ListOfTags": [{"ConditionType": "STRINGEQUALS",
                                                                    "ConditionKey": k, "ConditionValue": v}
                                                                   for k, v in tags.items()]})
            self.record.selection_id = selection["SelectionId"]
        except Exception as exc:  # noqa: BLE001 - an API the endpoint lacks is reported, not faked
            self.record.not_done.append(f"backup selection (tags {tags}): CreateBackupSelection failed on this "
                                        f"endpoint ({type(exc).__name__}: {str(exc)[:120]})")
        if params.get("copy_to_other_region"):
            self.record.not_done.append(f"cross-region copy: {params['copy_to_other_region']} in the runbook; "
                                        "not configured by the kit")
        self.record.adaptations.append({"id": "aws.backup-names", "summary": f"plan {PLAN_NAME!r}, cron times and "
                                        "day-granular retention are the kit's choices (the runbook names none)"})
