"""conformance.md: the report for a human, verdict first."""

from __future__ import annotations

from typing import Any

from reports.matrix import restore_drill, scenario_rows, traceability, upgrade_rehearsal


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def root_cause_headline(report: dict[str, Any]) -> str:
    """"N root causes explain M of K failures" (K: failed and errored checks)."""
    causes = report.get("root_causes") or []
    failed = sum(1 for c in report.get("checks", []) if c["outcome"] in ("failed", "error"))
    explained = sum(len(c["explains"]) + len(c.get("explains_through", [])) for c in causes)
    return (f"{len(causes)} root cause{'s' if len(causes) != 1 else ''} explain{'' if len(causes) != 1 else 's'} "
            f"{explained} of {failed} failure{'s' if failed != 1 else ''}")


def root_cause_lines(report: dict[str, Any]) -> list[str]:
    failed = [c for c in report.get("checks", []) if c["outcome"] in ("failed", "error")]
    if not failed:
        return []
    out = ["", f"## Root causes: {root_cause_headline(report)}", ""]
    for n, cause in enumerate(report.get("root_causes") or [], start=1):
        section = " > ".join(cause.get("section") or [])
        out.append(f"{n}. **step {cause['step']}, line {cause['line_start']}** ({_cell(section)}): "
                   f"`{_cell(cause['command'][:160])}`")
        out.append(f"   - what: {_cell(cause['summary'])}")
        out.append(f"   - fix: {_cell(cause['fix'])}")
        through = cause.get("explains_through") or []
        out.append(f"   - explains: {', '.join(f'`{c}`' for c in cause['explains'])}"
                   + (f"; through them: {', '.join(f'`{c}`' for c in through)}" if through else ""))
    unexplained = report.get("unexplained") or []
    if unexplained:
        out += ["", "Failed checks no root cause explains (see their evidence below):", ""]
        out += [f"- `{u['check']}`: {_cell(u['why'])}" for u in unexplained]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    stdb = report.get("spacetimedb", {})
    counts = report.get("counts", {})
    out = [f"# Conformance: {report['verdict'].upper()}", ""]
    out.append(f"- backend: **{report['backend']}**, profile **{report['profile']}**, run `{report['run_id']}`")
    out.append(f"- SpacetimeDB: **{stdb.get('implementation', '?')}** {stdb.get('version', '')} "
               f"({stdb.get('served_by', '')})")
    out.append(f"- host: {env.get('os')}, kernel {env.get('kernel')}, {env.get('nginx')}, {env.get('certbot')}")
    out.append(f"- runbook: `{report['runbook']['path']}` (sha256 `{report['runbook']['sha256'][:16]}...`)")
    out.append("- checks: " + ", ".join(f"{v} {k}" for k, v in counts.items()) +
               f"; findings: {len(report.get('findings', []))}")
    if report.get("lab_error"):
        out.append(f"- **lab error**: {report['lab_error']}")
    if report.get("host_changed"):
        changed = report["host_changed"]
        out.append(f"- **the host changed during a read-only run** ({len(changed)} change(s); the run fails): "
                   + "; ".join(_cell(c) for c in changed[:10]) + (" ..." if len(changed) > 10 else ""))
    if report.get("interrupted"):
        out.append("- **interrupted**: the run was cut short")
    out += root_cause_lines(report)
    out += ["", "## Findings about the runbook", ""]
    if not report.get("findings"):
        out.append("None.")
    for f in report.get("findings", []):
        ref = f.get("runbook_ref") or {}
        out.append(f"- **[{f['severity']}] {f['id']}** (line {ref.get('line_start', '?')}): {f['summary']}")
        if f.get("suggestion"):
            out.append(f"  - suggested fix: {f['suggestion']}")
        if f.get("patch"):
            out += ["", "    ```diff"] + [f"    {line}" for line in f["patch"].rstrip("\n").splitlines()] + ["    ```"]
    out += ["", "## Traceability (runbook section -> checks)", "", "| line | section | status | checks |",
            "|---|---|---|---|"]
    for row in traceability(report):
        checks = ", ".join(f"`{c['id']}` {c['outcome']}" for c in row["checks"]) or "-"
        out.append(f"| {row['line'] or ''} | {_cell(row['section'])} | {row['status']} | {_cell(checks)} |")
    failed = [c for c in report.get("checks", []) if c["outcome"] in ("failed", "error")]
    out += ["", "## Evidence for failed checks", ""]
    if not failed:
        out.append("No check failed.")
    for c in failed:
        ref = c.get("runbook_ref") or {}
        out += [f"### {c['id']} ({c['outcome']}, runbook line {ref.get('line_start', '?')})", "", c.get("message", ""),
                ""]
        for e in c.get("evidence", [])[:6]:
            out.append(f"- {e['label']}" + (f" — `{e['command'][:200]}`" if e.get("command") else "") +
                       (f" (status {e['status']})" if e.get("status") is not None else ""))
            if e.get("output"):
                out += ["", "```", e["output"][-1500:], "```", ""]
    na = [c for c in report.get("checks", []) if c["outcome"] == "not-applicable"]
    if na:
        out += ["", "## Not decided on this backend", ""] + [f"- `{c['id']}`: {c.get('message', '')}" for c in na]
    out += ["", "## Adaptations made to run the runbook", ""]
    out += [f"- **{a.get('id')}**: {a.get('summary')}" + (f" — {a['detail']}" if a.get("detail") else "")
            for a in report.get("adaptations", [])] or ["None."]
    subs = report.get("substitutions", [])
    if subs:
        out += ["", "## Substitutions", "", "| step | placeholder | value | line |", "|---|---|---|---|"]
        seen = set()
        for s in subs:
            key = (s.get("placeholder"), s.get("value"), s.get("line"))
            if key not in seen:
                seen.add(key)
                out.append(f"| {s.get('step')} | `{s.get('placeholder')}` | `{s.get('value')}` | {s.get('line')} |")
    boots = scenario_rows(report)
    if boots:
        out += ["", "## Boots and scenarios", "", "| scenario | event | boot id | seconds | note |",
                "|---|---|---|---|---|"]
        out += [f"| {r['scenario']} | {r['event']} | `{r['boot_id']}` | {r['seconds']} | {_cell(r['note'])} |"
                for r in boots]
    drill = restore_drill(report)
    if drill:
        out += ["", "## Restore drill", "", "| | |", "|---|---|"]
        out += [f"| {label} | {_cell(str(value))} |" for label, value in drill["facts"]]
        out += ["", "| table | expected rows | restored rows | expected sha256 | restored sha256 |",
                "|---|---|---|---|---|"]
        out += [f"| {t['table']} | {t['expected_rows']} | {t['restored_rows']} | `{t['expected_sha256'][:16]}` | "
                f"`{(t['restored_sha256'] or '-')[:16]}` |" for t in drill["tables"]]
    upgrade = upgrade_rehearsal(report)
    if upgrade:
        out += ["", "## Upgrade rehearsal", "", "| | |", "|---|---|"]
        out += [f"| {label} | {_cell(str(value))} |" for label, value in upgrade["facts"]]
        if upgrade["stages"]:
            out += ["", "| stage | seconds | steps |", "|---|---|---|"]
            out += [f"| {s['stage']} | {s['seconds']} | {_cell(s['steps'])} |" for s in upgrade["stages"]]
        if upgrade["tables"]:
            out += ["", "| table | rows before | rows after | sha256 before | sha256 after | identical |",
                    "|---|---|---|---|---|---|"]
            out += [f"| {t['table']} | {t['rows_before']} | {t['rows_after']} | `{t['checksum_before']}` | "
                    f"`{t['checksum_after'] or '-'}` | {t['identical']} |" for t in upgrade["tables"]]
    out += ["", "## Timings (seconds)", "", "| phase | seconds |", "|---|---|"]
    out += [f"| {k} | {v:.1f} |" for k, v in report.get("timings", {}).items()]
    by_kind = (report.get("time_by_kind") or {}).get("by_kind") or {}
    if by_kind:
        share = report["time_by_kind"].get("share", {})
        out += ["", "| where the time went | seconds | share |", "|---|---|---|"]
        out += [f"| {k} | {v:.1f} | {share.get(k, 0):.0%} |" for k, v in by_kind.items()]
    slow = sorted(report.get("step_timings", []), key=lambda s: -s["duration"])[:10]
    if slow:
        out += ["", "| runbook step | seconds | status |", "|---|---|---|"]
        out += [f"| {_cell(s['summary'][:90])} | {s['duration']:.1f} | {s['status']} |" for s in slow]
    return "\n".join(out) + "\n"
