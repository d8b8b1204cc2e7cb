"""What AWS itself accepts, and what the runbook's own targets ask, for the backup plan and the data volume the
runbook describes. In the lab the AWS account is a simulation the kit fills from the runbook's words, so reading
it back proves nothing; these judgements are what can make the aws_backup checks red there.

Sources of the limits (AWS's documentation, as facts): EBS volume sizes per type; a volume attaches only to an
instance in its own availability zone; AWS Backup keeps recovery points for whole days, at least one, and a plan
rule runs at most once an hour.
"""

from __future__ import annotations

import math
from typing import Any

# GiB: (smallest, largest) for each EBS volume type
VOLUME_SIZES = {"gp3": (1, 16384), "gp2": (1, 16384), "io1": (4, 16384), "io2": (4, 65536), "st1": (125, 16384),
                "sc1": (125, 16384), "standard": (1, 1024)}
# hours between two runs of a rule of each schedule the runbook can name
RULE_INTERVAL_HOURS = {"hourly": 1, "daily": 24, "weekly": 24 * 7, "monthly": 24 * 31, "quarterly": 24 * 92,
                       "yearly": 24 * 366}
_HOURS_PER = {"hours": 1, "days": 24, "weeks": 24 * 7, "months": 24 * 30, "years": 24 * 365}


def volume_problems(params: dict[str, Any]) -> list[str]:
    """What EC2 would refuse, or what would not work, in the data volume the runbook describes."""
    problems = []
    kind = str(params.get("volume_type") or "")
    size = params.get("size_gb")
    if kind and kind not in VOLUME_SIZES:
        problems.append(f"`{kind}` is not an EBS volume type ({', '.join(sorted(VOLUME_SIZES))})")
    elif kind and size is not None:
        low, high = VOLUME_SIZES[kind]
        if not low <= int(size) <= high:
            problems.append(f"a {kind} volume is {low}-{high} GiB: the runbook's {size} GB cannot be created")
    if not params.get("same_az", False):
        problems.append("the runbook does not say to create the volume in the instance's availability zone: EBS "
                        "attaches a volume only to an instance in its own zone")
    return problems


def retention_hours(retention: dict[str, Any], *, low: bool = False) -> float | None:
    """A retention the runbook gives ({"hours": 48}, {"months_min": 6, "months_max": 12}...) in hours: a range by
    its upper bound, or its lower one with `low`; a month is 30 days and a year 365, as AWS Backup counts."""
    for unit, hours in _HOURS_PER.items():
        key = f"{unit}_min" if low and f"{unit}_min" in retention else f"{unit}_max"
        value = retention.get(key, retention.get(unit))
        if value is not None:
            return float(value) * hours
    return None


def plan_problems(rules: list[dict[str, Any]], rpo_seconds: float | None) -> tuple[list[str], list[str]]:
    """(problems, notes) of the backup plan the runbook describes, against AWS Backup's rules and the runbook's
    own RPO. A problem fails the plan; a note is a rounding AWS does that the report should show."""
    problems: list[str] = []
    notes: list[str] = []
    for rule in rules:
        schedule = rule.get("schedule", "")
        if schedule not in RULE_INTERVAL_HOURS:
            problems.append(f"`{schedule}` backups: AWS Backup has no such schedule")
            continue
        kept = retention_hours(rule.get("retention", {}), low=True)
        if kept is None:
            problems.append(f"{schedule} backups: no retention AWS Backup can keep")
        elif kept < 24:
            notes.append(f"{schedule} backups kept {kept:g} hours: AWS Backup keeps whole days, so 1 day")
        if kept is not None and kept < RULE_INTERVAL_HOURS[schedule]:
            problems.append(f"{schedule} backups kept {kept:g} hours: each is deleted before the next is taken, "
                            "so for a while no such backup exists")
    if rpo_seconds is not None and rules:
        every = min(RULE_INTERVAL_HOURS.get(r.get("schedule", ""), math.inf) for r in rules)
        if every * 3600 > rpo_seconds:
            problems.append(f"the most frequent rule runs every {every:g} h, but the runbook's RPO is "
                            f"{rpo_seconds / 3600:g} h: a failure just before the next backup loses more than that")
    return problems, notes
