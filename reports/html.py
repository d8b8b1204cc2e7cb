"""report.html: one self-contained file (inline CSS and SVG, no scripts, no external assets).

First screen: the verdict, the run's identity (backend, SpacetimeDB, versions), the findings and the
traceability matrix; then evidence for every failed check, adaptations, and timings with a bar chart."""

from __future__ import annotations

from html import escape
from typing import Any

from reports.matrix import restore_drill, scenario_rows, traceability, upgrade_rehearsal

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:18px 24px}
.verdict{padding:14px 22px;border-radius:8px;color:#fff;display:flex;gap:24px;align-items:center}
.verdict h1{margin:0;font-size:30px;letter-spacing:.5px}
.pass{background:#1f7a3a}.fail,.host-changed{background:#b42318}.incomplete{background:#b54708}
.meta{font-size:13px;opacity:.95}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-top:14px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:10px 14px;margin-top:14px}
h2{font-size:16px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f2f4f7}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:11.5px;margin:1px;white-space:nowrap}
.passed,.proven{background:#d1fadf;color:#05603a}.failed,.contradicted,.error{background:#fee4e2;color:#912018}
.not-applicable,.partly{background:#fef0c7;color:#93370d}.not{background:#eaecf0;color:#344054}
.sev-error{color:#b42318;font-weight:600}.sev-warning{color:#b54708;font-weight:600}.sev-info{color:#175cd3}
pre{background:#0f1728;color:#e4e7ec;padding:8px;border-radius:6px;overflow:auto;max-height:260px;font-size:12px}
code{font-size:12px}
"""


def _badge(text: str) -> str:
    css = text.split()[0].replace(" ", "-")
    return f'<span class="badge {escape(css)}">{escape(text)}</span>'


def _bars(timings: dict[str, float]) -> str:
    if not timings:
        return "<p>No timings.</p>"
    top = max(timings.values()) or 1.0
    rows, y = [], 0
    for name, seconds in timings.items():
        width = max(1.0, 560 * seconds / top)
        rows.append(f'<text x="0" y="{y + 13}" font-size="12">{escape(name)}</text>'
                    f'<rect x="150" y="{y + 2}" width="{width:.0f}" height="14" fill="#4e5ba6" rx="2"/>'
                    f'<text x="{156 + width:.0f}" y="{y + 13}" font-size="12">{seconds:.1f} s</text>')
        y += 20
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{y}" role="img">{"".join(rows)}</svg>'


def _root_causes(report: dict[str, Any]) -> str:
    """The first screen's answer to "what do I change": each root cause, its step, the fix, what it explains."""
    from reports.markdown import root_cause_headline

    if not any(c["outcome"] in ("failed", "error") for c in report.get("checks", [])):
        return ""
    items = "".join(
        f'<li><b>step {c["step"]}, line {c["line_start"]}</b> <code>{escape(c["command"][:160])}</code><br>'
        f'{escape(c["summary"])}<br><i>fix: {escape(c["fix"])}</i><br><small>explains: '
        f'{escape(", ".join(c["explains"] + c.get("explains_through", [])))}</small></li>'
        for c in report.get("root_causes") or [])
    unexplained = report.get("unexplained") or []
    rest = (f'<p><small>not explained by a root cause: '
            f'{escape(", ".join(u["check"] for u in unexplained))}</small></p>') if unexplained else ""
    return (f'<section class="causes"><h2>Root causes: {escape(root_cause_headline(report))}</h2>'
            f'<ol>{items}</ol>{rest}</section>')


def render_html(report: dict[str, Any]) -> str:
    env, stdb, verdict = report.get("environment", {}), report.get("spacetimedb", {}), report["verdict"]
    counts = ", ".join(f"{v} {k}" for k, v in report.get("counts", {}).items())
    findings = report.get("findings", [])
    head = (f'<div class="verdict {escape(verdict)}"><h1>{escape(verdict.upper())}</h1><div class="meta">'
            f'backend <b>{escape(report["backend"])}</b> · profile <b>{escape(report["profile"])}</b> · '
            f'SpacetimeDB <b>{escape(str(stdb.get("implementation", "?")))} {escape(str(stdb.get("version", "")))}'
            f'</b><br>{escape(str(env.get("os")))} · kernel {escape(str(env.get("kernel")))} · '
            f'{escape(str(env.get("nginx")))} · {escape(str(env.get("certbot")))}<br>checks: {escape(counts)} · '
            f'findings: {len(findings)} · run {escape(report["run_id"])} · runbook '
            f'<code>{escape(report["runbook"]["path"])}</code></div></div>')
    if report.get("lab_error"):
        head += f'<section><b>Lab error:</b> {escape(report["lab_error"])}</section>'
    if report.get("host_changed"):
        changed = report["host_changed"]
        items = "".join(f"<li>{escape(c)}</li>" for c in changed[:20])
        head += (f'<section><b>The host changed during a read-only run</b> ({len(changed)} change(s); the run '
                 f'fails):<ul>{items}</ul></section>')
    head += _root_causes(report)
    frows = "".join(
        f'<tr><td class="sev-{escape(f["severity"])}">{escape(f["severity"])}</td><td><code>{escape(f["id"])}</code>'
        f'</td><td>{escape(str((f.get("runbook_ref") or {}).get("line_start", "")))}</td><td>{escape(f["summary"])}'
        + (f'<br><i>fix: {escape(f["suggestion"])}</i>' if f.get("suggestion") else "")
        + (f'<pre>{escape(f["patch"])}</pre>' if f.get("patch") else "") + "</td></tr>"
        for f in findings) or '<tr><td colspan="4">None.</td></tr>'
    finding_table = (f'<section><h2>Findings about the runbook</h2><table><tr><th>severity</th><th>id</th>'
                     f'<th>line</th><th>what was observed</th></tr>{frows}</table></section>')
    mrows = "".join(
        f'<tr><td>{row["line"] or ""}</td><td>{escape(row["section"])}</td><td>{_badge(row["status"])}</td><td>'
        + "".join(_badge(f'{c["outcome"]}') + f' <code>{escape(c["id"])}</code><br>' for c in row["checks"])
        + "</td></tr>" for row in traceability(report))
    matrix = (f'<section><h2>Traceability: runbook section → checks</h2><table><tr><th>line</th><th>section</th>'
              f'<th>status</th><th>checks</th></tr>{mrows}</table></section>')
    failed = [c for c in report.get("checks", []) if c["outcome"] in ("failed", "error")]
    evidence = "".join(
        f'<section><h2>{_badge(c["outcome"])} <code>{escape(c["id"])}</code> (runbook line '
        f'{escape(str((c.get("runbook_ref") or {}).get("line_start", "?")))})</h2><p>{escape(c.get("claim", ""))}'
        f'</p><pre>{escape(c.get("message", ""))}</pre>'
        + "".join(f'<p><b>{escape(e["label"])}</b>' + (f' <code>{escape(e["command"][:300])}</code>'
                                                       if e.get("command") else "")
                  + (f' (status {escape(str(e["status"]))})' if e.get("status") is not None else "") + "</p>"
                  + (f'<pre>{escape(e["output"][-2000:])}</pre>' if e.get("output") else "")
                  for e in c.get("evidence", [])[:6]) + "</section>" for c in failed)
    adaptations = "".join(f'<li><b>{escape(str(a.get("id")))}</b>: {escape(str(a.get("summary")))}'
                          f'<br><small>{escape(str(a.get("detail", "")))}</small></li>'
                          for a in report.get("adaptations", []))
    slow = sorted(report.get("step_timings", []), key=lambda s: -s["duration"])[:10]
    steps = "".join(f'<tr><td>{escape(s["summary"][:100])}</td><td>{s["duration"]:.1f}</td>'
                    f'<td>{escape(s["status"])}</td></tr>' for s in slow)
    brows = "".join(f'<tr><td>{escape(r["scenario"])}</td><td>{escape(r["event"])}</td><td><code>'
                    f'{escape(r["boot_id"])}</code></td><td>{escape(str(r["seconds"]))}</td>'
                    f'<td>{escape(r["note"])}</td></tr>' for r in scenario_rows(report))
    boots = (f'<section><h2>Boots and scenarios</h2><table><tr><th>scenario</th><th>event</th><th>boot id</th>'
             f'<th>s</th><th>note</th></tr>{brows}</table></section>') if brows else ""
    drill = restore_drill(report)
    drill_html = ""
    if drill:
        facts = "".join(f"<tr><th>{escape(label)}</th><td>{escape(str(value))}</td></tr>"
                        for label, value in drill["facts"])
        rows = "".join(f'<tr><td>{escape(t["table"])}</td><td>{t["expected_rows"]}</td><td>{t["restored_rows"]}</td>'
                       f'<td><code>{escape(t["expected_sha256"][:16])}</code></td>'
                       f'<td><code>{escape((t["restored_sha256"] or "-")[:16])}</code></td></tr>'
                       for t in drill["tables"])
        drill_html = (f'<section><h2>Restore drill</h2><table>{facts}</table><table><tr><th>table</th><th>expected '
                      f'rows</th><th>restored rows</th><th>expected sha256</th><th>restored sha256</th></tr>{rows}'
                      f'</table></section>')
    boots += drill_html
    upgrade = upgrade_rehearsal(report)
    if upgrade:
        facts = "".join(f"<tr><th>{escape(label)}</th><td>{escape(str(value))}</td></tr>"
                        for label, value in upgrade["facts"])
        stages = "".join(f'<tr><td>{escape(s["stage"])}</td><td>{escape(str(s["seconds"]))}</td>'
                         f'<td>{escape(s["steps"])}</td></tr>' for s in upgrade["stages"])
        tables = "".join(f'<tr><td>{escape(t["table"])}</td><td>{t["rows_before"]}</td><td>{t["rows_after"]}</td>'
                         f'<td><code>{escape(t["checksum_before"])}</code></td>'
                         f'<td><code>{escape(t["checksum_after"] or "-")}</code></td><td>{t["identical"]}</td></tr>'
                         for t in upgrade["tables"])
        boots += (f'<section><h2>Upgrade rehearsal</h2><table>{facts}</table><table><tr><th>stage</th><th>s</th>'
                  f'<th>steps</th></tr>{stages}</table><table><tr><th>table</th><th>rows before</th><th>rows after'
                  f'</th><th>sha256 before</th><th>sha256 after</th><th>identical</th></tr>{tables}</table>'
                  f'</section>')
    body = (f'{head}<div class="grid">{finding_table}{matrix}</div>'
            f'<section><h2>Evidence for failed checks ({len(failed)})</h2></section>{evidence}'
            f'<section><h2>Adaptations made to run the runbook</h2><ul>{adaptations or "<li>None.</li>"}</ul>'
            f'</section>{boots}<section><h2>Timings</h2>{_bars(report.get("timings", {}))}'
            f'<h3>Where the time went</h3>{_bars((report.get("time_by_kind") or {}).get("by_kind") or {})}'
            f'<table><tr><th>runbook step'
            f'</th><th>s</th><th>status</th></tr>{steps}</table></section>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>stdb-conformance: '
            f'{escape(verdict)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n')
