"""The selftest's judge: reads what the runs recorded (each unit's unit.json, result.json and the run's
conformance.json) and nothing else, so a selftest can be judged again, or shards merged, without a lab.

A mutant is detected when every check in its expect_red is failed or error in its group's run. Unexpected
outcomes: a baseline check that is red (beyond the config's known_red, which must be non-required checks);
a check red in a group's run that no member expects or allows; an expected check that did not run at all;
a run without a report, with a lab error or interrupted; a run of another runbook than the unit's; a host
mutant command that failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.host_mutants import ADAPTATION_ID
from harness.selftest.catalogue import RED

SCHEMA = 1


@dataclass
class UnitRecord:
    """What one unit left in its directory."""

    meta: dict[str, Any]  # unit.json
    result: dict[str, Any] | None  # result.json (exit status, seconds), None when it never ran
    report: dict[str, Any] | None  # run/conformance.json
    directory: Path

    @property
    def id(self) -> str:
        return str(self.meta["id"])


def load_unit(directory: Path) -> UnitRecord:
    meta = json.loads((directory / "unit.json").read_text())
    return UnitRecord(meta=meta, result=_json(directory / "result.json"),
                      report=_json(directory / "run" / "conformance.json"), directory=directory)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Judgement:
    mutants: list[dict[str, Any]] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)

    @property
    def detected(self) -> int:
        return sum(m["status"] == "detected" for m in self.mutants)

    @property
    def total(self) -> int:
        return len(self.mutants)

    @property
    def percent(self) -> float:
        return round(100.0 * self.detected / self.total, 1) if self.total else 0.0

    @property
    def ok(self) -> bool:
        return self.total > 0 and self.detected == self.total and not self.unexpected

    def score_line(self) -> str:
        return f"detection score: {self.detected}/{self.total} ({self.percent:g}%)"

    def to_dict(self) -> dict[str, Any]:
        return {"score": {"detected": self.detected, "total": self.total, "percent": self.percent},
                "ok": self.ok, "mutants": self.mutants, "baselines": self.baselines,
                "unexpected": self.unexpected, "units": self.units}


def judge(planned: list[dict[str, Any]], records: dict[str, UnitRecord]) -> Judgement:
    """`planned`: every unit of the (merged) plan as {"id", "config", "members": [mutant ids]}; `records`:
    what the units that ran recorded, by unit id."""
    out = Judgement()
    for unit in planned:
        record = records.get(unit["id"])
        if record is None:
            out.units.append({"id": unit["id"], "kind": "group" if unit["members"] else "baseline",
                              "config": unit["config"], "members": unit["members"], "ran": False})
            for mutant_id in unit["members"]:
                out.mutants.append({"id": mutant_id, "config": unit["config"], "unit": unit["id"],
                                    "status": "not run", "expect_red": [], "observed": {},
                                    "why": "its unit was not run (interrupted, or in no shard given to --merge)"})
            if not unit["members"]:
                out.baselines.append({"config": unit["config"], "unit": unit["id"], "clean": False, "red": [],
                                      "why": "not run"})
            continue
        _judge_unit(record, out)
    return out


def _flag(out: Judgement, unit: str, what: str, detail: str, check: str = "") -> None:
    out.unexpected.append({"unit": unit, "what": what, "check": check, "detail": detail})


def _judge_unit(record: UnitRecord, out: Judgement) -> None:
    meta, report, uid = record.meta, record.report, record.id
    members = meta.get("members", [])
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    if report is not None:
        for check in report.get("checks", []):
            outcomes[check["id"]] = check["outcome"]
            messages[check["id"]] = (check.get("message") or "").strip().splitlines()[0][:200] \
                if (check.get("message") or "").strip() else ""
    red = {c for c, o in outcomes.items() if o in RED}
    result = record.result or {}
    out.units.append({"id": uid, "kind": meta.get("kind"), "config": meta.get("config"),
                      "members": [m["id"] for m in members], "ran": record.result is not None,
                      "exit": result.get("exit"), "seconds": result.get("seconds"),
                      "verdict": (report or {}).get("verdict"), "report": str(record.directory / "run"),
                      "red": sorted(red)})
    _run_problems(record, out)
    known = meta.get("known_red", {})
    required = {c["id"]: c.get("required", True) for c in (report or {}).get("checks", [])}
    for check_id in sorted(set(known) & red):
        if required.get(check_id, True):
            _flag(out, uid, "known_red check is required", f"{check_id} is listed as known red on config "
                  f"{meta.get('config')} but the suite requires it: a required check may not be excused", check_id)
    if not members:
        unexplained = sorted(red - set(known))
        for check_id in unexplained:
            _flag(out, uid, "baseline red", f"{outcomes[check_id]}: {messages.get(check_id, '')}", check_id)
        out.baselines.append({"config": meta.get("config"), "unit": uid, "clean": not unexplained and report is not
                              None, "red": unexplained, "known_red_seen": sorted(red & set(known))})
        return
    allowed = set(known)
    for member in members:
        allowed |= set(member["expect_red"]) | set(member.get("may_also_fail", []))
    for check_id in sorted(red - allowed):
        _flag(out, uid, "red, expected by no member", f"{outcomes[check_id]}: {messages.get(check_id, '')}",
              check_id)
    for member in members:
        observed = {c: outcomes.get(c, "absent") for c in member["expect_red"]}
        missing = [c for c, o in observed.items() if o not in RED]
        for check_id in (c for c, o in observed.items() if o == "absent"):
            if report is not None:
                _flag(out, uid, "expected check did not run", f"mutant {member['id']} expects {check_id} red, "
                      f"and the run has no such check", check_id)
        collateral = sorted(red & set(member.get("may_also_fail", [])))
        out.mutants.append({"id": member["id"], "config": meta.get("config"), "unit": uid,
                            "description": member.get("description", ""), "kind": member.get("kind"),
                            "expect_red": member["expect_red"], "may_also_fail": member.get("may_also_fail", []),
                            "observed": observed, "collateral_red": collateral,
                            "status": "undetected" if missing else "detected",
                            "why": "; ".join(f"{c} is {observed[c]}" for c in missing)})


def _run_problems(record: UnitRecord, out: Judgement) -> None:
    uid, report, result, meta = record.id, record.report, record.result, record.meta
    if result is None:
        _flag(out, uid, "not finished", "the unit started but recorded no result (interrupted?)")
    if report is None:
        exit_code = (result or {}).get("exit")
        _flag(out, uid, "no report", f"the run wrote no conformance.json (exit {exit_code}); see "
              f"{record.directory / 'run.log'}")
        return
    if report.get("lab_error"):
        _flag(out, uid, "lab error", str(report["lab_error"]))
    if report.get("interrupted"):
        _flag(out, uid, "interrupted", "the run was interrupted before its checks were all decided")
    sha = (report.get("runbook") or {}).get("sha256")
    if meta.get("runbook_sha256") and sha != meta["runbook_sha256"]:
        _flag(out, uid, "other runbook", f"the run applied a runbook with sha256 {sha}, not the unit's "
              f"{meta['runbook_sha256']}")
    host = [a for a in report.get("adaptations", []) if a.get("id") == ADAPTATION_ID]
    wanted = meta.get("host_commands", [])
    if len(host) != len(wanted):
        _flag(out, uid, "host mutant not applied", f"{len(wanted)} host command(s) planned, {len(host)} recorded "
              f"in the report (did the apply phase finish?)")
    for item in host:
        if item.get("exit_status") != 0:
            _flag(out, uid, "host mutant command failed", f"{item.get('summary')}: {item.get('detail')}")


# ---------------------------------------------------------------- rendering


def render_table(j: Judgement) -> str:
    rows = [("mutant", "unit", "expected red", "result")]
    for m in j.mutants:
        result = m["status"] if m["status"] != "undetected" else f"UNDETECTED ({m['why']})"
        rows.append((m["id"], m["unit"], ", ".join(m["expect_red"]) or "-", result))
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(3)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    for b in j.baselines:
        state = "clean" if b["clean"] else f"NOT CLEAN ({', '.join(b['red']) or b.get('why', 'no report')})"
        lines.append(f"baseline {b['unit']}: {state}")
    if j.unexpected:
        lines.append(f"unexpected outcomes: {len(j.unexpected)}")
        lines += [f"  {u['unit']}: {u['what']}{': ' + u['check'] if u['check'] else ''} -- {u['detail']}"
                  for u in j.unexpected]
    else:
        lines.append("unexpected outcomes: none")
    lines.append(j.score_line())
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    score = data["score"]
    lines = ["# stdb-conformance selftest", "",
             f"Backend: `{data.get('backend')}`. Lab runs: {data.get('lab_runs')}; wall time "
             f"{data.get('wall_seconds', 0):.0f} s{'; interrupted' if data.get('interrupted') else ''}.", "",
             f"**detection score: {score['detected']}/{score['total']} ({score['percent']:g}%)**, "
             f"unexpected outcomes: {len(data['unexpected'])}", "",
             "| mutant | unit | expected red | observed | result |", "|---|---|---|---|---|"]
    for m in data["mutants"]:
        observed = ", ".join(f"{c}: {o}" for c, o in m.get("observed", {}).items())
        lines.append(f"| `{m['id']}` | {m['unit']} | {', '.join(m['expect_red'])} | {observed} | {m['status']} |")
    lines += ["", "## Unexpected outcomes", ""]
    lines += [f"- {u['unit']}: {u['what']}{' `' + u['check'] + '`' if u['check'] else ''}: {u['detail']}"
              for u in data["unexpected"]] or ["None."]
    lines += ["", "## Lab runs", "", "| unit | kind | members | exit | seconds | verdict | red checks |",
              "|---|---|---|---|---|---|---|"]
    for u in data["units"]:
        seconds = f"{u['seconds']:.0f}" if isinstance(u.get("seconds"), int | float) else "-"
        lines.append(f"| {u['id']} | {u['kind']} | {', '.join(u['members']) or '-'} | {u.get('exit', '-')} | "
                     f"{seconds} | {u.get('verdict') or '-'} | {', '.join(u.get('red', [])) or '-'} |")
    return "\n".join(lines) + "\n"
