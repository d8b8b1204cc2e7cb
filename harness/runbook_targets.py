"""The runbook's own recovery targets ("RPO (data loss tolerance): e.g. 1 hour", "RTO ...: e.g. 30 minutes"), read
from its text: what the restore drill and the AWS Backup plan are judged against."""

from __future__ import annotations

import re
from pathlib import Path

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def runbook_target(runbook: str | Path, name: str) -> tuple[float, str, int] | None:
    """(seconds, the words that say it, line) of the runbook's target NAME (RPO, RTO), or None."""
    text = Path(runbook).read_text(encoding="utf-8", errors="replace")
    match = re.search(rf"{name}\b[^\n:]*:\s*(?:e\.g\.\s*)?(\d+(?:\.\d+)?)\s*(second|minute|hour|day)s?", text, re.I)
    if not match:
        return None
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    return seconds, match.group(0).strip(), text.count("\n", 0, match.start()) + 1
