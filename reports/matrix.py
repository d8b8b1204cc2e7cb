"""Traceability: each runbook section (and the claims checked in it) -> the checks that prove it."""

from __future__ import annotations

from typing import Any


def traceability(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows {section, lines, steps, checks: [{id, outcome, claim}], status} in runbook order. A section with
    runnable steps and no check is 'not covered'; one whose checks all passed is 'proven'."""
    rows: dict[str, dict[str, Any]] = {}
    for section in report.get("sections", []):
        key = " > ".join(section["section"])
        rows[key] = {"section": key, "line": section["line_start"], "steps": section["steps"],
                     "phase": section.get("phase", ""), "checks": []}
    for check in report.get("checks", []):
        ref = check.get("runbook_ref") or {}
        key = " > ".join(ref.get("section", [])) or "(no runbook reference)"
        row = rows.setdefault(key, {"section": key, "line": ref.get("line_start", 0), "steps": 0, "phase": "",
                                    "checks": []})
        row["checks"].append({"id": check["id"], "outcome": check["outcome"], "claim": check.get("claim", ""),
                              "line": ref.get("line_start", 0)})
    for row in rows.values():
        outcomes = {c["outcome"] for c in row["checks"]}
        if not row["checks"]:
            row["status"] = "not covered" if row["steps"] else "no steps"
        elif "failed" in outcomes or "error" in outcomes:
            row["status"] = "contradicted"
        elif outcomes == {"passed"}:
            row["status"] = "proven"
        else:
            row["status"] = "partly decided"
    return sorted(rows.values(), key=lambda r: (r["line"] or 10**9, r["section"]))
