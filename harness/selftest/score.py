"""The selftest's judge: reads what the runs recorded (each unit's unit.json, result.json and the run's
conformance.json) and nothing else, so a selftest can be judged again, or shards merged, without a lab.

The score is Stryker's, stricter than PIT's (which counts a crash as a kill). Each mutant ends in one of:
- detected: its unit ran as planned, its config's baseline ran clean, and every check in its expect_red ended
  `failed` (a check that errored proves nothing about the host);
- missed: the unit ran as planned and an expected check did not go red (passed, not-applicable, skipped);
- invalid: the run cannot tell (a lab error, no report, interrupted, another runbook, a host mutant command
  that failed or was not applied, an expected check that errored or never ran, checks that no member of the
  unit can touch went red: which is what a broken lab looks like, or a baseline of its config that is not
  clean or was not run). Invalid mutants are counted apart and left out of the score, and they fail the
  self-test, like a missed one;
- not run: its unit never ran (interrupted, or in no shard given to --merge).
score = detected / (detected + missed). The self-test passes only when every mutant is detected, every
baseline is clean and the forced-fail unit (the catalogue's sentinel mutant: a defect that must turn its
checks red, as mutmut checks that the tests can fail at all) detected its mutant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.host_mutants import ADAPTATION_ID

SCHEMA = 2
DETECTED, MISSED, INVALID, NOT_RUN = "detected", "missed", "invalid", "not run"


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
    sentinel: str = ""  # the forced-fail mutant's id ("" when the plan has none)

    def count(self, status: str) -> int:
        return sum(m["status"] == status for m in self.mutants)

    @property
    def detected(self) -> int:
        return self.count(DETECTED)

    @property
    def missed(self) -> int:
        return self.count(MISSED)

    @property
    def invalid(self) -> int:
        return self.count(INVALID)

    @property
    def not_run(self) -> int:
        return self.count(NOT_RUN)

    @property
    def scored(self) -> int:
        """The mutants the score is over: detected + missed (invalid and not-run ones are counted apart)."""
        return self.detected + self.missed

    @property
    def total(self) -> int:
        return len(self.mutants)

    @property
    def percent(self) -> float:
        return round(100.0 * self.detected / self.scored, 1) if self.scored else 0.0

    @property
    def sentinel_detected(self) -> bool:
        return not self.sentinel or any(m["id"] == self.sentinel and m["status"] == DETECTED for m in self.mutants)

    @property
    def ok(self) -> bool:
        return (self.total > 0 and self.detected == self.total and not self.unexpected and self.sentinel_detected
                and bool(self.baselines) and all(b["clean"] for b in self.baselines))

    def score_line(self) -> str:
        return (f"detection score: {self.detected}/{self.scored} ({self.percent:g}%); detected {self.detected}, "
                f"missed {self.missed}, invalid {self.invalid}, not run {self.not_run}")

    def to_dict(self) -> dict[str, Any]:
        return {"score": {"detected": self.detected, "missed": self.missed, "invalid": self.invalid,
                          "not_run": self.not_run, "scored": self.scored, "total": self.total,
                          "percent": self.percent},
                "ok": self.ok, "sentinel": {"id": self.sentinel, "detected": self.sentinel_detected},
                "mutants": self.mutants, "baselines": self.baselines, "unexpected": self.unexpected,
                "units": self.units}


Records = Mapping[str, Sequence[UnitRecord]]


def judge(planned: list[dict[str, Any]], records: Records, sentinel: str = "") -> Judgement:
    """`planned`: every unit of the (merged) plan as {"id", "config", "members": [mutant ids]}; `records`: what
    the units that ran recorded, by unit id (a gate unit, a baseline or the forced-fail unit, may have been
    recorded by several shards: every copy is judged); `sentinel`: the forced-fail mutant's id."""
    out = Judgement(sentinel=sentinel)
    clean: dict[str, bool] = {}
    for unit in (u for u in planned if not u["members"]):
        copies = records.get(unit["id"], ())
        if not copies:
            out.units.append(_not_run_unit(unit))
            out.baselines.append({"config": unit["config"], "unit": unit["id"], "clean": False, "red": [],
                                  "why": "not run"})
        for record in copies:
            out.baselines.append(_judge_baseline(record, out))
        clean[unit["config"]] = bool(copies) and all(b["clean"] for b in out.baselines
                                                     if b["unit"] == unit["id"])
    for unit in (u for u in planned if u["members"]):
        copies = records.get(unit["id"], ())
        if not copies:
            out.units.append(_not_run_unit(unit))
            for mutant_id in unit["members"]:
                out.mutants.append({"id": mutant_id, "config": unit["config"], "unit": unit["id"],
                                    "status": NOT_RUN, "expect_red": [], "observed": {},
                                    "why": "its unit was not run (interrupted, or in no shard given to --merge)"})
            continue
        judged = [_judge_group(record, out, clean) for record in copies]
        for per_member in zip(*judged, strict=True):  # every copy must agree: the worst one counts
            out.mutants.append(min(per_member, key=lambda m: _RANK[m["status"]]))
    return out


_RANK = {INVALID: 0, MISSED: 1, NOT_RUN: 2, DETECTED: 3}


def _not_run_unit(unit: dict[str, Any]) -> dict[str, Any]:
    return {"id": unit["id"], "kind": "group" if unit["members"] else "baseline", "config": unit["config"],
            "members": unit["members"], "ran": False}


def _flag(out: Judgement, unit: str, what: str, detail: str, check: str = "") -> None:
    out.unexpected.append({"unit": unit, "what": what, "check": check, "detail": detail})


def _outcomes(record: UnitRecord) -> tuple[dict[str, str], dict[str, str]]:
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for check in (record.report or {}).get("checks", []):
        outcomes[check["id"]] = check["outcome"]
        text = (check.get("message") or "").strip()
        messages[check["id"]] = text.splitlines()[0][:200] if text else ""
    return outcomes, messages


def _record_unit(record: UnitRecord, out: Judgement, red: set[str]) -> None:
    result = record.result or {}
    out.units.append({"id": record.id, "kind": record.meta.get("kind"), "config": record.meta.get("config"),
                      "members": [m["id"] for m in record.meta.get("members", [])],
                      "ran": record.result is not None, "exit": result.get("exit"), "seconds": result.get("seconds"),
                      "verdict": (record.report or {}).get("verdict"), "report": str(record.directory / "run"),
                      "red": sorted(red)})


def _known_red_problems(record: UnitRecord, red: set[str], out: Judgement) -> None:
    known = record.meta.get("known_red", {})
    required = {c["id"]: c.get("required", True) for c in (record.report or {}).get("checks", [])}
    for check_id in sorted(set(known) & red):
        if required.get(check_id, True):
            _flag(out, record.id, "known_red check is required", f"{check_id} is listed as known red on config "
                  f"{record.meta.get('config')} but the suite requires it: a required check may not be excused",
                  check_id)


def _judge_baseline(record: UnitRecord, out: Judgement) -> dict[str, Any]:
    outcomes, messages = _outcomes(record)
    red = {c for c, o in outcomes.items() if o in ("failed", "error")}
    _record_unit(record, out, red)
    problems = _run_problems(record)
    for what, detail in problems:
        _flag(out, record.id, what, detail)
    _known_red_problems(record, red, out)
    known = record.meta.get("known_red", {})
    unexplained = sorted(red - set(known))
    for check_id in unexplained:
        _flag(out, record.id, "baseline red", f"{outcomes[check_id]}: {messages.get(check_id, '')}", check_id)
    return {"config": record.meta.get("config"), "unit": record.id, "clean": not unexplained and not problems,
            "red": unexplained, "known_red_seen": sorted(red & set(known)),
            "why": "; ".join(f"{w}: {d}" for w, d in problems)}


def _judge_group(record: UnitRecord, out: Judgement, clean: dict[str, bool]) -> list[dict[str, Any]]:
    meta, uid = record.meta, record.id
    members = meta.get("members", [])
    outcomes, messages = _outcomes(record)
    red = {c for c, o in outcomes.items() if o in ("failed", "error")}
    _record_unit(record, out, red)
    problems = []
    for what, detail in _run_problems(record):
        _flag(out, uid, what, detail)
        problems.append(f"{what}: {detail}")
    _known_red_problems(record, red, out)
    allowed = set(meta.get("known_red", {}))
    for member in members:
        allowed |= set(member["expect_red"]) | set(member.get("may_also_fail", []))
    stray = sorted(red - allowed)
    for check_id in stray:
        _flag(out, uid, "red, expected by no member", f"{outcomes[check_id]}: {messages.get(check_id, '')}",
              check_id)
    if stray:
        problems.append(f"checks no member can touch went red ({', '.join(stray[:6])}"
                        f"{', ...' if len(stray) > 6 else ''}): the run cannot tell a detection from a broken lab")
    config = meta.get("config", "")
    if not clean.get(config, False):
        problems.append(f"the baseline of config {config} is not clean or was not run: a mutant is judged only "
                        f"against a clean baseline")
    judged = []
    for member in members:
        observed = {c: outcomes.get(c, "absent") for c in member["expect_red"]}
        why = list(problems)
        for check_id, outcome in observed.items():
            if outcome == "absent" and record.report is not None:
                _flag(out, uid, "expected check did not run", f"mutant {member['id']} expects {check_id} red, "
                      f"and the run has no such check", check_id)
                why.append(f"{check_id} did not run")
            elif outcome == "error":
                why.append(f"{check_id} errored: {messages.get(check_id, '')} (an error is not a detection)")
        missing = [c for c, o in observed.items() if o not in ("failed", "error", "absent")]
        if why:
            status = INVALID
        elif missing:
            status, why = MISSED, [f"{c} is {observed[c]}" for c in missing]
        else:
            status = DETECTED
        judged.append({"id": member["id"], "config": config, "unit": uid,
                       "description": member.get("description", ""), "kind": member.get("kind"),
                       "expect_red": member["expect_red"], "may_also_fail": member.get("may_also_fail", []),
                       "observed": observed, "collateral_red": sorted(red & set(member.get("may_also_fail", []))),
                       "collateral_unseen": sorted(set(member.get("may_also_fail", [])) - red),
                       "status": status, "why": "; ".join(why)})
    return judged


def _run_problems(record: UnitRecord) -> list[tuple[str, str]]:
    """What makes a unit's run unfit to judge: (what, detail) each."""
    report, result, meta = record.report, record.result, record.meta
    found: list[tuple[str, str]] = []
    if result is None:
        found.append(("not finished", "the unit started but recorded no result (interrupted?)"))
    if report is None:
        exit_code = (result or {}).get("exit")
        found.append(("no report", f"the run wrote no conformance.json (exit {exit_code}); see "
                      f"{record.directory / 'run.log'}"))
        return found
    if report.get("lab_error"):
        found.append(("lab error", str(report["lab_error"])))
    if report.get("interrupted"):
        found.append(("interrupted", "the run was interrupted before its checks were all decided"))
    sha = (report.get("runbook") or {}).get("sha256")
    if meta.get("runbook_sha256") and sha != meta["runbook_sha256"]:
        found.append(("other runbook", f"the run applied a runbook with sha256 {sha}, not the unit's "
                      f"{meta['runbook_sha256']}"))
    host = [a for a in report.get("adaptations", []) if a.get("id") == ADAPTATION_ID]
    wanted = meta.get("host_commands", [])
    if len(host) != len(wanted):
        found.append(("host mutant not applied", f"{len(wanted)} host command(s) planned, {len(host)} recorded in "
                      f"the report (did the apply phase finish?)"))
    for item in host:
        if item.get("exit_status") != 0:
            found.append(("host mutant command failed", f"{item.get('summary')}: {item.get('detail')}"))
    return found


# ---------------------------------------------------------------- rendering


def render_table(j: Judgement) -> str:
    rows = [("mutant", "unit", "expected red", "result")]
    for m in j.mutants:
        result = m["status"] if m["status"] in (DETECTED, NOT_RUN) else f"{m['status'].upper()} ({m['why']})"
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
    if j.sentinel:
        lines.append(f"forced-fail mutant {j.sentinel}: {'detected' if j.sentinel_detected else 'NOT DETECTED'}")
    lines.append(j.score_line())
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    score = data["score"]
    lines = ["# stdb-conformance selftest", "",
             f"Backend: `{data.get('backend')}`. Lab runs: {data.get('lab_runs')}; wall time "
             f"{data.get('wall_seconds', 0):.0f} s{'; interrupted' if data.get('interrupted') else ''}.", "",
             f"**detection score: {score['detected']}/{score['scored']} ({score['percent']:g}%)**: detected "
             f"{score['detected']}, missed {score['missed']}, invalid {score['invalid']}, not run {score['not_run']}; "
             f"unexpected outcomes: {len(data['unexpected'])}", "",
             f"Forced-fail mutant: `{data['sentinel']['id'] or '-'}`, "
             f"{'detected' if data['sentinel']['detected'] else 'NOT detected'}.", "",
             "| mutant | unit | expected red | observed | result |", "|---|---|---|---|---|"]
    for m in data["mutants"]:
        observed = ", ".join(f"{c}: {o}" for c, o in m.get("observed", {}).items())
        status = m["status"] + (f": {m['why']}" if m["status"] in (MISSED, INVALID) else "")
        lines.append(f"| `{m['id']}` | {m['unit']} | {', '.join(m['expect_red'])} | {observed} | {status} |")
    lines += ["", "## Unexpected outcomes", ""]
    lines += [f"- {u['unit']}: {u['what']}{' `' + u['check'] + '`' if u['check'] else ''}: {u['detail']}"
              for u in data["unexpected"]] or ["None."]
    loose = [(m["id"], m["collateral_unseen"]) for m in data["mutants"] if m.get("collateral_unseen")]
    lines += ["", "## may_also_fail not seen red in this run", "",
              "Collateral a mutant is allowed but did not cause here: keep `may_also_fail` as tight as the evidence "
              "allows (drop an entry once runs on every backend agree).", ""]
    lines += [f"- `{mid}`: {', '.join(f'`{c}`' for c in unseen)}" for mid, unseen in loose] or ["None."]
    lines += ["", "## Lab runs", "", "| unit | kind | members | exit | seconds | verdict | red checks |",
              "|---|---|---|---|---|---|---|"]
    for u in data["units"]:
        seconds = f"{u['seconds']:.0f}" if isinstance(u.get("seconds"), int | float) else "-"
        lines.append(f"| {u['id']} | {u['kind']} | {', '.join(u['members']) or '-'} | {u.get('exit', '-')} | "
                     f"{seconds} | {u.get('verdict') or '-'} | {', '.join(u.get('red', [])) or '-'} |")
    return "\n".join(lines) + "\n"
