"""Fleets (harness/fleet.py): the summary over recorded conformance.json files, the exit-code order, and the
pool run with a tiny real child command in place of `python -m harness run` (bounded concurrency, prefixed
progress, run.log, signals passed on, a stubborn child killed in bounded time)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.fleet import (
    HostRun,
    Job,
    fleet_exit,
    host_entry,
    host_status,
    render_markdown,
    run_fleet,
    run_pool,
    summarize,
)
from harness.results import CheckResult, Outcome
from harness.run import RunOptions
from harness.staging import load_config
from reports.contract import RunReport

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "tests" / "runbooks" / "console.md"

CHILD = r'''
import json, signal, sys, time
from pathlib import Path

out, marks = Path(sys.argv[1]), Path(sys.argv[3])
spec = json.loads(Path(sys.argv[2]).read_text())[out.name]
out.mkdir(parents=True, exist_ok=True)
(marks / f"{out.name}.start").write_text(str(time.time()))
print(f"hello from {out.name}", flush=True)

def report(interrupted):
    checks = [{"id": cid, "outcome": outcome} for cid, outcome in spec.get("checks", {}).items()]
    data = {"verdict": spec.get("verdict", "pass"), "interrupted": interrupted, "checks": checks}
    (out / "conformance.json").write_text(json.dumps(data))

def stop(signum, frame):
    (marks / f"{out.name}.signal").write_text(signal.Signals(signum).name)
    if spec.get("stubborn"):
        return
    report(True)
    sys.exit(130)

signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
deadline = time.time() + spec.get("sleep", 0)
while time.time() < deadline:
    time.sleep(0.05)
if spec.get("report", True):
    report(False)
(marks / f"{out.name}.end").write_text(str(time.time()))
sys.exit(spec.get("exit", 0))
'''


class Children:
    """The child command and what each host's child does (by host name)."""

    def __init__(self, tmp: Path, spec: dict[str, dict[str, Any]]) -> None:
        self.script = tmp / "child.py"
        self.script.write_text(CHILD)
        self.spec = tmp / "spec.json"
        self.spec.write_text(json.dumps(spec))
        self.marks = tmp / "marks"
        self.marks.mkdir()

    def argv(self, out: Path) -> list[str]:
        return [sys.executable, str(self.script), str(out), str(self.spec), str(self.marks)]

    def command(self, options: RunOptions) -> list[str]:
        return self.argv(options.report_dir)

    def mark(self, name: str, kind: str) -> str | None:
        path = self.marks / f"{name}.{kind}"
        return path.read_text() if path.exists() else None


def _config(tmp: Path, names: list[str], jobs: int = 4) -> Path:
    hosts = "".join(f'\n[[hosts]]\nname = "{n}"\ntarget = "ssh://ops@{n}.example.net"\nurl = "https://{n}.example.net"\n'
                    for n in names)
    path = tmp / "fleet.toml"
    path.write_text(f'runbook = "{RUNBOOK}"\nsuites = ["service"]\nreport_dir = "out"\njobs = {jobs}\n{hosts}')
    return path


# ---------------------------------------------------------------- the summary over recorded reports


def _record(host_dir: Path, outcomes: dict[str, Outcome], *, lab_error: str = "") -> None:
    report = RunReport(run_id="r", backend="ssh", runbook_path="rb.md", runbook_sha256="0", profile="default",
                       checks=[CheckResult(cid, "service", o) for cid, o in outcomes.items()], lab_error=lab_error)
    host_dir.mkdir(parents=True)
    (host_dir / "conformance.json").write_text(json.dumps(report.to_dict()))


def test_summary_over_recorded_reports(tmp_path: Path) -> None:
    p, f, n = Outcome.PASSED, Outcome.FAILED, Outcome.NOT_APPLICABLE
    _record(tmp_path / "a", {"service.unit": p, "routes.publish": p})
    _record(tmp_path / "b", {"service.unit": f, "routes.publish": f, "tls.chain": p})
    _record(tmp_path / "c", {"service.unit": p, "routes.publish": n})
    _record(tmp_path / "d", {}, lab_error="ssh: connection refused")
    (tmp_path / "e").mkdir()  # exit 1 without a report: it crashed
    _record(tmp_path / "g", {"service.unit": f})
    runs = {"a": 0, "b": 1, "c": 4, "d": 3, "e": 1, "g": 1}
    entries = [host_entry(name, HostRun(name, exit=code, seconds=1.0), tmp_path / name, tmp_path,
                          target=f"ssh://ops@{name}") for name, code in runs.items()]
    summary = summarize(entries, False, tmp_path)
    by = {h["name"]: h for h in summary["hosts"]}
    assert [by[x]["status"] for x in runs] == ["pass", "fail", "incomplete", "lab-error", "error", "fail"]
    assert by["b"]["failed"] == ["service.unit", "routes.publish"] and by["a"]["failed"] == []
    assert by["b"]["counts"]["failed"] == 2 and by["b"]["counts"]["passed"] == 1
    assert by["b"]["verdict"] == "fail" and by["b"]["report"] == "b/conformance.json"
    assert "connection refused" in by["d"]["note"] and by["e"]["report"] is None
    assert "no conformance.json" in by["e"]["note"]
    assert summary["failed_checks"] == [{"id": "service.unit", "hosts": ["b", "g"]},
                                        {"id": "routes.publish", "hosts": ["b"]}]
    assert summary["matrix"]["routes.publish"] == {"a": "passed", "b": "failed", "c": "not-applicable", "d": "",
                                                   "e": "", "g": ""}
    assert summary["exit"] == 3 and summary["verdict"] == "lab-error"  # a lab error outranks a failure
    page = render_markdown(summary)
    assert "| `service.unit` | 2/6 | passed | FAILED | passed | - | - | FAILED |" in page
    assert "# Fleet: LAB-ERROR (exit 3)" in page


@pytest.mark.parametrize(("statuses", "interrupted", "code"), [
    (["pass", "pass"], False, 0),
    (["pass", "incomplete"], False, 4),
    (["incomplete", "fail", "pass"], False, 1),
    (["fail", "lab-error"], False, 3),
    (["fail", "host-changed", "pass"], False, 5),
    (["host-changed", "lab-error"], False, 3),
    (["fail", "error"], False, 3),
    (["lab-error", "usage-error"], False, 2),
    (["usage-error", "interrupted"], False, 130),
    (["pass", "not-run"], False, 130),
    (["pass"], True, 130),
])
def test_the_fleets_exit_code_is_the_worst_host_in_the_documented_order(statuses: list[str], interrupted: bool,
                                                                         code: int) -> None:
    assert fleet_exit(statuses, interrupted) == code


def test_host_status_from_exit_code_and_report() -> None:
    report: dict[str, Any] = {"verdict": "pass", "checks": []}
    assert host_status(None, None) == "not-run" and host_status(130, report) == "interrupted"
    assert host_status(2, None) == "usage-error" and host_status(3, report) == "lab-error"
    assert host_status(0, report) == "pass" and host_status(4, report) == "incomplete"
    assert host_status(0, None) == "error" and host_status(-9, report) == "error"
    assert host_status(5, report) == "host-changed" and host_status(5, None) == "error"


# ---------------------------------------------------------------- the pool, with real child processes


def test_pool_bounds_concurrency_and_prefixes_progress(tmp_path: Path) -> None:
    names = ["h1", "h2", "h3", "h4"]
    kids = Children(tmp_path, {n: {"sleep": 0.6} for n in names})
    lines: list[str] = []
    jobs = [Job(n, kids.argv(tmp_path / "out" / n), tmp_path / "out" / n) for n in names]
    runs, interrupted = run_pool(jobs, 2, lines.append)
    assert not interrupted and [r.exit for r in runs] == [0, 0, 0, 0]
    spans = [(float(kids.mark(n, "start") or 0), float(kids.mark(n, "end") or 0)) for n in names]
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap == 2, spans
    assert "[h3] hello from h3" in lines and any(line.startswith("[h1] exit 0 in") for line in lines)
    assert (tmp_path / "out" / "h2" / "run.log").read_text() == "hello from h2\n"


def test_run_fleet_writes_the_summary_and_returns_the_worst_exit(tmp_path: Path) -> None:
    kids = Children(tmp_path, {"a": {}, "b": {"exit": 1, "verdict": "fail", "checks": {"tls.chain": "failed"}},
                               "c": {"exit": 4, "verdict": "incomplete", "checks": {"tls.chain": "not-applicable"}}})
    config = load_config(_config(tmp_path, ["a", "b", "c"]))
    printed: list[str] = []
    code = run_fleet(config, lambda _line: None, jobs=3, command=kids.command, out=printed.append)
    assert code == 1
    data = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert [(h["name"], h["status"], h["exit"]) for h in data["hosts"]] == [("a", "pass", 0), ("b", "fail", 1),
                                                                         ("c", "incomplete", 4)]
    assert data["failed_checks"] == [{"id": "tls.chain", "hosts": ["b"]}] and not data["interrupted"]
    assert data["hosts"][0]["target"] == "ssh://ops@a.example.net" and data["hosts"][0]["url"] == "https://a.example.net"
    assert (tmp_path / "out" / "b" / "conformance.json").is_file()  # <report_dir>/<host>/
    assert "| `tls.chain` | 1/3 | - | FAILED | n/a |" in (tmp_path / "out" / "fleet.md").read_text()
    assert printed and "fleet: fail (exit 1)" in printed[0]


def test_a_stale_report_is_not_read_as_this_runs(tmp_path: Path) -> None:
    kids = Children(tmp_path, {"a": {"exit": 0, "report": False}, "b": {}})
    stale = tmp_path / "out" / "a"
    stale.mkdir(parents=True)
    (stale / "conformance.json").write_text(json.dumps({"verdict": "pass", "checks": []}))
    code = run_fleet(load_config(_config(tmp_path, ["a", "b"])), lambda _line: None, command=kids.command,
                     out=lambda _text: None)
    assert code == 3  # exit 0 without this run's report: counted as a run that could not be judged
    data = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert data["hosts"][0]["status"] == "error"


def _signal_when_started(kids: Children, name: str, sig: int) -> threading.Thread:
    import os

    def fire() -> None:
        deadline = time.monotonic() + 20
        while kids.mark(name, "start") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_passed_on_and_the_fleet_waits(tmp_path: Path, sig: int) -> None:
    kids = Children(tmp_path, {"a": {"sleep": 30}, "b": {"sleep": 30}, "c": {"sleep": 30}})
    lines: list[str] = []
    thread = _signal_when_started(kids, "b", sig)
    started = time.monotonic()
    code = run_fleet(load_config(_config(tmp_path, ["a", "b", "c"], jobs=2)), lines.append, command=kids.command,
                     out=lambda _text: None)
    thread.join()
    assert time.monotonic() - started < 20
    assert code == 130
    name = signal.Signals(sig).name
    assert kids.mark("a", "signal") == name and kids.mark("b", "signal") == name
    assert kids.mark("c", "start") is None  # not started after the signal
    data = json.loads((tmp_path / "out" / "fleet.json").read_text())
    assert data["interrupted"] and [h["status"] for h in data["hosts"]] == ["interrupted", "interrupted", "not-run"]
    assert data["hosts"][0]["signalled"] and data["hosts"][2]["exit"] is None
    assert any(f"fleet: {name}: stopping 2 host run(s)" in line for line in lines)


def test_a_child_that_will_not_stop_is_killed_in_bounded_time(tmp_path: Path) -> None:
    kids = Children(tmp_path, {"a": {"sleep": 60, "stubborn": True}})
    lines: list[str] = []
    thread = _signal_when_started(kids, "a", signal.SIGTERM)
    started = time.monotonic()
    runs, interrupted = run_pool([Job("a", kids.argv(tmp_path / "out" / "a"), tmp_path / "out" / "a")], 1,
                                 lines.append, cleanup_seconds=0.5, kill_seconds=0.5)
    thread.join()
    assert interrupted and runs[0].exit == -signal.SIGKILL and runs[0].signalled
    assert time.monotonic() - started < 15
    assert any("SIGTERM" in line for line in lines) and any("SIGKILL" in line for line in lines)
