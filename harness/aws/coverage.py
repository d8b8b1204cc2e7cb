"""Does an AWS Backup selection cover a volume? (the judgement of aws_backup.selection-covers-volume).

A selection covers the volume when one of its tag conditions (STRINGEQUALS) matches a tag of the volume,
or one of its resource ARNs names the volume or is a wildcard over volumes, and none of its NotResources
names it. Kept apart from the suite so it is tested on its own: moto has no selection API, so in the lab
the check itself reports not-applicable and only this function's tests show a non-covering selection
turns it red.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any


def selection_covers(selection: Mapping[str, Any], volume_id: str, tags: dict[str, str]) -> bool:
    def names_volume(arn: str) -> bool:
        if arn == "*":
            return True
        fields = arn.split(":", 5)
        if len(fields) < 6 or fields[2] not in ("ec2", "*"):
            return False
        return fnmatch.fnmatchcase(f"volume/{volume_id}", fields[5])

    excluded = any(names_volume(arn) for arn in selection.get("NotResources") or [])
    by_tag = any(c.get("ConditionType", "STRINGEQUALS") == "STRINGEQUALS" and tags.get(c["ConditionKey"]) ==
                 c["ConditionValue"] for c in selection.get("ListOfTags") or [])
    by_arn = any(names_volume(arn) for arn in selection.get("Resources") or [])
    return (by_tag or by_arn) and not excluded
