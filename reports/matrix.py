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


def scenario_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario event (boot ids and durations), or one row saying why a scenario did not apply."""
    rows: list[dict[str, Any]] = []
    env = report.get("environment", {})
    for key in sorted(k for k in env if k.startswith("scenario_")):
        item = env[key] or {}
        name = key.removeprefix("scenario_")
        if not item.get("applicable"):
            rows.append({"scenario": name, "event": "-", "boot_id": "", "seconds": "", "note":
                         f"not applicable: {item.get('reason', '')}"})
            continue
        for event in item.get("events", []):
            rows.append({"scenario": name, "event": event.get("name", ""), "boot_id": event.get("boot_id", ""),
                         "seconds": event.get("seconds") if event.get("seconds") is not None else "",
                         "note": (event.get("boot_timing") or "").splitlines()[0] if event.get("boot_timing")
                         else ""})
        if item.get("error"):
            rows.append({"scenario": name, "event": "error", "boot_id": "", "seconds": "", "note": item["error"]})
    return rows


def restore_drill(report: dict[str, Any]) -> dict[str, Any] | None:
    """The restore drill's figures for the report: {"facts": [(label, value)], "tables": [row dicts]}."""
    item = (report.get("environment", {}).get("scenario_backup_restore") or {})
    restore = item.get("restore")
    if not item.get("applicable") or not restore:
        return None
    seq = restore.get("seq") or {}

    def secs(value: Any) -> str:
        return f"{value:.1f} s" if isinstance(value, (int, float)) else "not measured"

    copies = "; ".join(f"copy {n}: {c.get('outcome')} ({c.get('copy_seconds')} s to copy)"
                       for n, c in enumerate(restore.get("live_copies", []), start=1)) or "not run"
    facts = [
        ("oracle verdict", restore.get("verdict")),
        ("mutant", restore.get("mutant") or "none"),
        ("seed", restore.get("seed")),
        ("snapshot", f"{restore.get('consistency')} ({secs(restore.get('snapshot_seconds'))})"),
        ("last write acknowledged before the snapshot began (seq)", seq.get("last_acked_before_snapshot")),
        ("highest restored seq / restored seq rows",
         f"{seq.get('restored_max_seq')} / {seq.get('restored_seq_rows')}"),
        ("last acknowledged seq / highest attempted",
         f"{seq.get('last_acked_seq')} / {seq.get('max_attempted_seq')}"),
        ("loss window",
         f"{restore.get('loss_window_seq')} acknowledged writes, {secs(restore.get('loss_window_seconds'))}"),
        ("RTO (restore start to verified data)", f"{secs(restore.get('rto_seconds'))} (service answering after "
                                                  f"{secs(restore.get('rto_service_ready_seconds'))})"),
        ("copies of the live /stdb while writing (evidence)", copies),
    ]
    return {"facts": facts, "tables": restore.get("tables", [])}


def upgrade_rehearsal(report: dict[str, Any]) -> dict[str, Any] | None:
    """The upgrade rehearsal's figures: {"facts": [(label, value)], "stages": [row dicts], "tables": [row dicts]}."""
    item = (report.get("environment", {}).get("scenario_upgrade") or {})
    if not item:
        return None
    if not item.get("applicable"):
        return {"facts": [("not run", item.get("reason") or "the rehearsal did not apply")], "stages": [],
                "tables": []}
    down = item.get("downtime") or {}
    rollback = item.get("rollback") or {}
    outcome = rollback.get("outcome", "")
    said = {"worked": f"worked: {rollback.get('version')} runs again, data intact={rollback.get('data_identical')}",
            "refused": f"refused by the server: {rollback.get('message', '')}",
            "skipped": f"skipped: {rollback.get('reason', '')}"}.get(
        outcome, f"broken: wanted {rollback.get('version')}, running {rollback.get('version_running') or 'nothing'}")
    data = item.get("data") or {}
    facts = [
        ("version before / after / after the way back",
         f"{item.get('version_before') or '?'} / {item.get('version_after') or '?'} / "
         f"{item.get('version_rolled_back') or '-'}"),
        ("release published before the update (lab mirror)", item.get("released") or "none"),
        ("main PID before / after / after the way back", " / ".join(str(p or "-") for p in item.get("main_pid", []))),
        ("downtime (a read-only GET through the site every 0.5 s, from the vantage)",
         f"GET {down.get('path')}: longest {down.get('longest_seconds')} s, {down.get('failed')} of "
         f"{down.get('samples')} probes failed, answering at the end: {down.get('up_at_end')}"
         if down.get("samples") else "not measured: " + ("; ".join(down.get("errors") or []) or "no probe")),
        ("data after the upgrade", "identical" if data.get("identical") else
         (data.get("reason") or "changed" if data else "not compared (no database to watch)")),
        ("rollback", said),
    ]
    left = item.get("left") or {}
    if left:
        how = ("as the rehearsal found it" if left.get("as_found") else
               f"NOT as found: service {left.get('service_was')} -> {left.get('service_now')}, version "
               f"{left.get('version_was') or '?'} -> {left.get('version_now') or '?'}")
        if left.get("restarted_by_the_kit"):
            how += " (the kit started the service again)"
        facts.append(("host left", how))
    digest = report.get("environment", {}).get("state_digest") or {}
    if digest:
        changes = digest.get("changes") or []
        facts.append(("what changed in the host's state digest (before the suites -> after)",
                      "nothing" if digest.get("equal") else "; ".join(changes[:12])
                      + (f"; ... ({len(changes)} in all)" if len(changes) > 12 else "")))
    if item.get("error"):
        facts.append(("error", item["error"]))
    stages = [{"stage": s["name"], "seconds": s.get("seconds"),
               "steps": "; ".join(f"`{r['command']}` exit {r['exit_status']}" for r in s.get("steps", []))}
              for s in item.get("stages", [])]
    tables = [{"table": t, **v} for t, v in (data.get("tables") or {}).items()]
    return {"facts": facts, "stages": stages, "tables": tables}
