"""`stdb-conformance diff A B`: what changed between two finished runs (report directories), so an operator can
see that a change to the runbook did what it should: checks whose outcome changed, findings and root causes added
or gone, and the timing deltas. Exit 0 when B has no failure A did not have, 1 when it has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import EXIT_FAIL, EXIT_PASS, UsageError

RED = ("failed", "error")


def load_report(directory: Path, name: str) -> dict[str, Any]:
    path = directory / "conformance.json"
    try:
        data = json.loads(path.read_text())
    except OSError:
        raise UsageError(f"{name} {directory}: no conformance.json (not a report directory)",
                         hint="pass the --report-dir of two finished runs") from None
    except ValueError as exc:
        raise UsageError(f"{name} {directory}: conformance.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or "checks" not in data:
        raise UsageError(f"{name} {directory}: conformance.json is not a run's report")
    return data


def _finding_key(finding: dict[str, Any]) -> str:
    """A finding by what it says, not by its line: a fix that adds lines to the runbook moves every later one."""
    return f"{finding['id']}: {finding.get('summary', '')[:120]}"


def _cause_key(cause: dict[str, Any]) -> str:
    section = (cause.get("section") or ["?"])[-1]
    return f"`{cause.get('command', '')[:80]}` ({cause.get('kind')}; {section[:60]})"


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    before = {c["id"]: c["outcome"] for c in a.get("checks", [])}
    after = {c["id"]: c["outcome"] for c in b.get("checks", [])}
    changed = [{"check": cid, "a": before.get(cid, "absent"), "b": after.get(cid, "absent")}
               for cid in sorted(set(before) | set(after)) if before.get(cid) != after.get(cid)]
    new_failures = [c["check"] for c in changed if c["b"] in RED and c["a"] not in RED]
    fixed = [c["check"] for c in changed if c["a"] in RED and c["b"] not in RED]
    fa = {_finding_key(f) for f in a.get("findings", [])}
    fb = {_finding_key(f) for f in b.get("findings", [])}
    ca = {_cause_key(c) for c in a.get("root_causes", [])}
    cb = {_cause_key(c) for c in b.get("root_causes", [])}
    ta, tb = a.get("timings", {}), b.get("timings", {})
    timings = {k: {"a": ta.get(k), "b": tb.get(k),
                   "delta": round(tb[k] - ta[k], 2) if k in ta and k in tb else None}
               for k in sorted(set(ta) | set(tb))}
    return {"a": {"run_id": a.get("run_id"), "verdict": a.get("verdict"), "counts": a.get("counts")},
            "b": {"run_id": b.get("run_id"), "verdict": b.get("verdict"), "counts": b.get("counts")},
            "changed": changed, "new_failures": new_failures, "fixed": fixed,
            "findings_gone": sorted(fa - fb), "findings_new": sorted(fb - fa),
            "root_causes_gone": sorted(ca - cb), "root_causes_new": sorted(cb - ca), "timings": timings,
            "ok": not new_failures}


def render(d: dict[str, Any]) -> str:
    lines = [f"A: run {d['a']['run_id']} {str(d['a']['verdict']).upper()} {d['a']['counts']}",
             f"B: run {d['b']['run_id']} {str(d['b']['verdict']).upper()} {d['b']['counts']}", ""]
    lines.append(f"checks that changed: {len(d['changed'])} (fixed {len(d['fixed'])}, new failures "
                 f"{len(d['new_failures'])})")
    lines += [f"  {c['check']}: {c['a']} -> {c['b']}" for c in d["changed"]]
    for label, key in (("root causes gone", "root_causes_gone"), ("root causes new", "root_causes_new"),
                       ("findings gone", "findings_gone"), ("findings new", "findings_new")):
        lines.append(f"{label}: {len(d[key])}")
        lines += [f"  {item}" for item in d[key]]
    deltas = [(k, t) for k, t in d["timings"].items() if t["delta"] is not None and abs(t["delta"]) >= 1.0]
    lines.append("timings (s, A -> B, changes of a second or more):")
    lines += [f"  {k}: {t['a']:.1f} -> {t['b']:.1f} ({t['delta']:+.1f})" for k, t in deltas] or ["  none"]
    lines.append("")
    lines.append("B has no new failure" if d["ok"] else f"B has {len(d['new_failures'])} new failure(s): "
                 + ", ".join(d["new_failures"]))
    return "\n".join(lines)


def diff_command(a_dir: Path, b_dir: Path, as_json: bool) -> int:
    d = compare(load_report(a_dir, "A"), load_report(b_dir, "B"))
    print(json.dumps(d, indent=1) if as_json else render(d))
    return EXIT_PASS if d["ok"] else EXIT_FAIL
