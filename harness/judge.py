"""`stdb-conformance judge REPORT_DIR`: judge a finished run again, without a lab.

A run keeps in REPORT_DIR/histories/ what it recorded: the plan, the run state, the scenarios' histories, the
apply findings and one tape per suite (harness.tape: every question a suite put to the host, the vantage and
the lab, and the answer). Judging again runs the suites' checks, today's code, against those answers, then
the findings and root causes, and writes the same four reports to OUT (default REPORT_DIR/judged). A check
that asks something the recorded run never asked is an error saying so: the recording cannot answer it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import KitError
from harness.results import CheckResult, Finding, Outcome
from harness.run_state import RunState
from reports.contract import RunReport

HISTORIES = "histories"


@dataclass
class Judgement:
    report: RunReport
    paths: dict[str, Path]
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # check id, recorded, judged again
    suites: list[str] = field(default_factory=list)


def load_report(report_dir: Path) -> RunReport:
    """The recorded conformance.json as a RunReport (one line naming the problem when it is not one)."""
    path = report_dir / "conformance.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KitError(f"{report_dir} holds no conformance.json", hint="pass the report dir of a finished run") \
            from None
    except ValueError as exc:
        raise KitError(f"{path} is not JSON ({exc})", hint="pass the report dir of a finished run") from None
    try:
        return RunReport(
            run_id=data["run_id"], backend=data["backend"], runbook_path=data["runbook"]["path"],
            runbook_sha256=data["runbook"]["sha256"], profile=data["profile"],
            spacetimedb=data.get("spacetimedb") or {},
            checks=[CheckResult.from_dict(c) for c in data.get("checks", [])],
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            timings=data.get("timings") or {}, step_timings=data.get("step_timings") or [],
            time_by_kind=data.get("time_by_kind") or {},
            adaptations=data.get("adaptations") or [], substitutions=data.get("substitutions") or [],
            environment=data.get("environment") or {}, apply=data.get("apply") or {},
            started=data.get("started", ""), finished=data.get("finished", ""),
            interrupted=bool(data.get("interrupted")), lab_error=data.get("lab_error", ""),
            fail_on=data.get("fail_on", "error"), sections=data.get("sections") or [],
            state_trace=data.get("state_trace") or {}, root_causes=data.get("root_causes") or [],
            unexplained=data.get("unexplained") or [], host_changed=data.get("host_changed") or [])
    except (KeyError, TypeError, ValueError) as exc:
        raise KitError(f"{path} is not a report this kit wrote (missing or bad {exc})",
                       hint="judge runs written by this version of stdb-conformance") from None


def _suites_on_tape(histories: Path, report: RunReport) -> list[str]:
    """The suites the run ran, in its order (the order of its checks), that left a tape."""
    order: list[str] = []
    for check in report.checks:
        if check.suite not in order:
            order.append(check.suite)
    taped = {p.name.removeprefix("tape-").removesuffix(".jsonl.gz") for p in histories.glob("tape-*.jsonl.gz")}
    return [s for s in order if s in taped] + sorted(taped - set(order))


def _state_for_replay(histories: Path, report_dir: Path, workdir: Path) -> Path:
    """The recorded run state with its paths pointing into REPORT_DIR (they were kept relative to histories/)."""
    state = RunState.load(histories / "lab-state.json")
    data = state.to_dict()
    data["histories"] = {suite: str(histories / name) for suite, name in (data.get("histories") or {}).items()}
    data["plan"] = str(histories / "plan.json")
    data["runbook"] = str(report_dir / "runbook.md")
    data["transcript"] = str(report_dir / "transcript.json")
    data["workdir"] = str(workdir)
    path = workdir / "lab-state.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    RunState.load(path)  # what the suites will read must load
    return path


def judge(report_dir: Path, out_dir: Path | None = None, *, suites_dir: Path | None = None) -> Judgement:
    """Judge the run recorded in `report_dir` again with the suites in `suites_dir` (default: the kit's own);
    write the reports to `out_dir`."""
    from harness.findings import attach_root_causes, detect
    from harness.paths import SUITES_DIR
    from harness.run import run_suite_process
    from harness.run_state import plan_of_run
    from reports.contract import write_reports

    recorded = load_report(report_dir)
    histories = report_dir / HISTORIES
    if not (histories / "lab-state.json").exists():
        raise KitError(f"{report_dir} keeps no recording ({HISTORIES}/lab-state.json is missing)",
                       hint="only runs of a kit that keeps histories can be judged again")
    suites = _suites_on_tape(histories, recorded)
    if recorded.checks and not suites:
        raise KitError(f"{report_dir} has no suite tapes ({HISTORIES}/tape-*.jsonl.gz)",
                       hint="runs recorded before tapes existed cannot be judged again: run again")
    out_dir = out_dir or report_dir / "judged"
    workdir = Path(tempfile.mkdtemp(prefix="stdbc-judge-"))
    try:
        state_path = _state_for_replay(histories, report_dir, workdir)
        state = RunState.load(state_path)
        checks: list[CheckResult] = []
        for suite in suites:
            tape = histories / f"tape-{suite}.jsonl.gz"
            checks += run_suite_process((suites_dir or SUITES_DIR) / f"test_{suite}.py", state_path, workdir,
                                        tape=f"replay:{tape}")
        plan = plan_of_run(state)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = recorded
    changed = _changes(recorded.checks, checks)
    report.checks = checks
    transcript = _json(report_dir / "transcript.json", [])
    apply_findings = [Finding.from_dict(f) for f in _json(histories / "findings-apply.json", [])]
    report.findings = apply_findings + detect(plan, transcript, checks, report.environment)
    if state.builds_host and report.state_trace:
        from harness.blame import root_causes
        from harness.trace import StateTrace

        causes, unexplained = root_causes(plan, StateTrace.from_dict(report.state_trace), checks,
                                          report.apply.get("stopped_at"))
        report.root_causes = [c.to_dict() for c in causes]
        report.unexplained = unexplained
        attach_root_causes(report.findings, report.root_causes)
    report.environment["judged_again"] = {"from": str(report_dir), "suites": suites,
                                          "changed": [list(c) for c in changed]}
    paths = write_reports(report, out_dir)
    return Judgement(report=report, paths=paths, changed=changed, suites=suites)


def _changes(before: list[CheckResult], after: list[CheckResult]) -> list[tuple[str, str, str]]:
    was = {c.id: c.outcome.value for c in before}
    now = {c.id: c.outcome.value for c in after}
    return [(cid, was.get(cid, "absent"), now.get(cid, "absent")) for cid in sorted(set(was) | set(now))
            if was.get(cid) != now.get(cid)]


def _json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def outcome_counts(checks: list[CheckResult]) -> dict[str, int]:
    return {o.value: sum(c.outcome is o for c in checks) for o in Outcome if any(c.outcome is o for c in checks)}
