"""A real AWS account, read only: what a staging run (`--aws-profile`, `--aws-region`) asks of it, and nothing else.

Every client made here refuses, before it is sent, any API call whose name does not start with Describe, List or
Get (a botocore `before-call` hook), so a mistake in a check cannot change the account. The volume behind /stdb
is found on the host itself: on EC2 Nitro an EBS volume's NVMe serial is its id without the dash (`vol0abc...`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from harness.errors import KitError, UsageError

READ_PREFIXES = ("Describe", "List", "Get")
_SERIAL = re.compile(r"^vol(?P<id>[0-9a-f]{8,17})$")


class AwsWriteRefused(KitError):
    """An AWS call that could change the account, refused before it was sent."""


def refuse_writes(model: Any, **_: Any) -> None:
    """botocore `before-call` hook: only reading operations pass."""
    name = model.name
    if not name.startswith(READ_PREFIXES):
        raise AwsWriteRefused(f"refused the AWS call {name}: a staging run reads the account, it never changes it",
                              hint="the kit sends only Describe*, List* and Get* calls to a real account")


def read_only_client(service: str, *, region: str, profile: str | None = None,
                     endpoint_url: str | None = None, session: Any = None) -> Any:
    """A boto3 client for `service` that can only read (`session` for tests: a boto3 Session)."""
    import boto3
    from botocore.config import Config

    if session is None:
        try:
            session = boto3.Session(profile_name=profile, region_name=region)
        except Exception as exc:  # noqa: BLE001 - botocore's ProfileNotFound and friends: one line
            raise UsageError(f"cannot use the AWS profile {profile!r}: {exc}",
                             hint="name a profile of ~/.aws/config (--aws-profile) or leave it out") from None
    made = session.client(service, region_name=region, endpoint_url=endpoint_url,
                          config=Config(retries={"max_attempts": 2}))
    made.meta.events.register("before-call.*.*", refuse_writes)
    return made


def volume_id_from_serial(serial: str) -> str | None:
    """`vol0123456789abcdef0` (the NVMe serial EC2 gives an EBS volume) -> `vol-0123456789abcdef0`."""
    match = _SERIAL.match(serial.strip())
    return f"vol-{match.group('id')}" if match else None


def volume_behind(target: Any, mount_point: str = "/stdb") -> tuple[str | None, str]:
    """(the EBS volume id behind `mount_point`, what the host said), from read-only catalogue commands."""
    source = target.run(f"findmnt -n -o SOURCE --target {mount_point}", timeout=30).stdout.strip()
    disks = target.run("lsblk -dn -o NAME,SERIAL", timeout=30).stdout
    said = f"{mount_point} is on {source or '?'}; disks and serials:\n{disks.strip()}"
    device = source.rsplit("/", 1)[-1]
    for line in disks.splitlines():
        name, _, serial = line.strip().partition(" ")
        if name and device.startswith(name):
            return volume_id_from_serial(serial), said
    return None, said


def newest_recovery_point(points: list[dict[str, Any]]) -> datetime | None:
    done = [p["CreationDate"] for p in points if p.get("Status") in ("COMPLETED", None) and p.get("CreationDate")]
    return max(done) if done else None


def freshness(points: list[dict[str, Any]], rpo_seconds: float, now: datetime | None = None) -> tuple[bool, str]:
    """Whether the newest completed recovery point is younger than the RPO, and the sentence that says so."""
    newest = newest_recovery_point(points)
    if newest is None:
        return False, "the volume has no completed recovery point"
    age = ((now or datetime.now(UTC)) - newest).total_seconds()
    verdict = "within" if age <= rpo_seconds else "older than"
    return age <= rpo_seconds, (f"the newest recovery point is {age / 3600:.1f} h old ({newest.isoformat()}), "
                                f"{verdict} the runbook's RPO of {rpo_seconds / 3600:g} h")
