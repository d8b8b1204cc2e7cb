"""The checker of the upgrade rehearsal's recorded history (harness.scenarios.upgrade records; this judges).

Pure functions of the history and the dumps it names, so a finished run can be judged again. The data
comparison reuses the restore oracle's pieces (harness.fidelity: schema comparison, canonical table digests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.fidelity import compare_schema, table_summary


def stage(history: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in history.get("stages", []) if s.get("name") == name), None)


def observed(history: dict[str, Any], name: str) -> dict[str, Any]:
    found = stage(history, name)
    return (found or {}).get("observed") or {}


def version_of(seen: dict[str, Any]) -> str:
    """The version that runs: bin/current's target, else what /v1/health says."""
    return str(seen.get("bin_current") or seen.get("health_version") or "").removeprefix("v")


def main_pid(seen: dict[str, Any]) -> str:
    return str((seen.get("properties") or {}).get("MainPID", ""))


def downtime(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """From the prober's samples: how many, the first and last failed sample, the longest run of failures
    (seconds, between the last success before it and the first after it), and whether it answered at the end."""
    probes = [s for s in samples if "t" in s]
    errors = [s["error"] for s in samples if "error" in s]
    ok = [s.get("status") == 200 and s.get("who") == "backend" for s in probes]
    longest, start = 0.0, None
    windows = []
    for i, (sample, good) in enumerate(zip(probes, ok, strict=True)):
        if not good and start is None:
            start = probes[i - 1]["t"] if i else sample["t"]
        if good and start is not None:
            windows.append((start, sample["t"]))
            longest = max(longest, sample["t"] - start)
            start = None
    if start is not None and probes:
        windows.append((start, probes[-1]["t"]))
        longest = max(longest, probes[-1]["t"] - start)
    return {"samples": len(probes), "failed": ok.count(False), "longest_seconds": round(longest, 2),
            "windows": [[round(a, 2), round(b, 2)] for a, b in windows[:10]],
            "up_at_end": bool(ok and ok[-1]), "errors": errors}


def load_dump(history: dict[str, Any], name: str, base: Path) -> dict[str, Any] | None:
    rel = (history.get("files") or {}).get(name)
    if not rel:
        return None
    try:
        return json.loads((base / rel).read_text())
    except (OSError, ValueError):
        return None


def compare_dumps(before: dict[str, Any], after: dict[str, Any] | None) -> dict[str, Any]:
    """Schema and every table's row count and canonical checksum of `after` against `before`."""
    if after is None:
        return {"identical": False, "reason": "no dump could be taken", "tables": {}}
    schema = {t: [{"name": n, "type": ty} for n, ty in cols] for t, entry in before.items()
              if (cols := _columns(entry)) is not None}
    schema_diff = compare_schema(schema, after)
    tables: dict[str, Any] = {}
    for table, entry in before.items():
        if _columns(entry) is None:
            continue
        was = table_summary(entry)
        now = table_summary(after.get(table)) if _columns(after.get(table)) is not None else None
        same = now is not None and was["count"] == now["count"] and was["checksum"] == now["checksum"]
        tables[table] = {"rows_before": was["count"], "rows_after": now["count"] if now else None,
                         "checksum_before": was["checksum"][:16],
                         "checksum_after": now["checksum"][:16] if now else None, "identical": same}
    identical = (not schema_diff["missing_tables"] and not schema_diff["column_differences"]
                 and all(t["identical"] for t in tables.values()) and bool(tables))
    return {"identical": identical, "schema": schema_diff, "tables": tables}


def _columns(entry: Any) -> list[tuple[str, str]] | None:
    from harness.fidelity import dump_columns

    if not (isinstance(entry, dict) and entry.get("schema") is not None and entry.get("rows") is not None):
        return None
    return [(n, t) for n, t in dump_columns(entry)]


def summary(history: dict[str, Any], base: Path) -> dict[str, Any]:
    """What the report's "Upgrade rehearsal" section shows: versions, stages and durations, the data comparison,
    the downtime, the rollback's outcome."""
    if not history.get("applicable"):
        return {"applicable": False, "reason": history.get("reason", "")}
    before, after, back = (observed(history, n) for n in ("before", "after", "rolled-back"))
    upgrade = stage(history, "upgrade") or {}
    original = load_dump(history, "before", base)
    data = compare_dumps(original, load_dump(history, "after", base)) if original is not None else None
    data_back = (compare_dumps(original, load_dump(history, "rolled-back", base))
                 if original is not None and stage(history, "rolled-back") else None)
    return {
        "applicable": True,
        "version_before": version_of(before), "version_after": version_of(after),
        "version_rolled_back": version_of(back) if back else None,
        "released": (stage(history, "release") or {}).get("version"),
        "main_pid": [main_pid(before), main_pid(after), main_pid(back) if back else None],
        "stages": [{"name": s["name"], "seconds": s.get("seconds"),
                    "steps": [{"command": r["command"], "exit_status": r["exit_status"]} for r in s.get("steps", [])]}
                   for s in history.get("stages", [])],
        "downtime": {**downtime(upgrade.get("probe") or []), "path": upgrade.get("probe_path", "")},
        "data": data, "data_after_rollback": data_back,
        "rollback": rollback_outcome(history, base),
        "left": history.get("left") or {},
        "error": history.get("error", ""),
    }


def rollback_outcome(history: dict[str, Any], base: Path) -> dict[str, Any]:
    """worked (the starting version runs, data intact) | refused (the server would not start on the data and said
    why in its journal) | broken (anything else) | skipped (with the reason)."""
    info = history.get("rollback") or {}
    if "skipped" in info or not stage(history, "rolled-back"):
        return {"outcome": "skipped", "reason": info.get("skipped", "the rollback did not run")}
    back = observed(history, "rolled-back")
    running = (back.get("properties") or {}).get("ActiveState") == "active" and back.get("ping") == "200"
    original = load_dump(history, "before", base)
    data = compare_dumps(original, load_dump(history, "rolled-back", base)) if original is not None else None
    wanted = str(info.get("version", "")).removeprefix("v")
    if running and version_of(back) == wanted and (data is None or data["identical"]):
        return {"outcome": "worked", "version": wanted, "data_identical": data["identical"] if data else None}
    journal = str(back.get("journal_tail") or "")
    refusal = next((line for line in journal.splitlines() if "incompatible" in line or "metadata.toml" in line), "")
    if not running and refusal:
        return {"outcome": "refused", "version": wanted, "message": refusal.strip()[:300]}
    return {"outcome": "broken", "version": wanted, "running": running, "version_running": version_of(back),
            "data_identical": data["identical"] if data else None, "journal_tail": journal[-600:]}
