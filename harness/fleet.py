"""`stdb-conformance run --config FILE` with several hosts: judge them at the same time, one run per host.

Each host is judged by its own `python -m harness run ...` process with that host's flags (so its signals,
cleanup and report are exactly those of a single run), at most `jobs` at a time. Its output is kept in
<report_dir>/<host>/run.log and shown prefixed with the host's name; its reports go to <report_dir>/<host>/.
fleet.json and fleet.md in the report dir summarize the hosts: verdict, exit code, counts and failed checks per
host, and per failed check the hosts failing it.

SIGINT and SIGTERM are passed on to the running host runs (SIGINT to the run's process group, as a terminal's
Ctrl-C would; SIGTERM to the run itself, as `kill` would); hosts not started yet are not started. Each run gets
CLEANUP_SECONDS to write its report and remove what it made, then SIGTERM, then SIGKILL.

The fleet's exit code is the worst of its hosts, in this order (FLEET_EXIT_HELP).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import (
    EXIT_FAIL,
    EXIT_HOST_CHANGED,
    EXIT_INCOMPLETE,
    EXIT_LAB,
    EXIT_PASS,
    EXIT_USAGE,
    KitError,
    UsageError,
)
from harness.run import RunOptions
from harness.staging import StagingConfig

Progress = Callable[[str], None]
Command = Callable[[RunOptions], list[str]]
EXIT_INTERRUPTED = 130
CLEANUP_SECONDS = 300.0  # how long an interrupted host run gets to write its report and remove what it made
KILL_SECONDS = 60.0  # after SIGTERM, before SIGKILL
SCHEMA = 1
FLEET_EXIT_HELP = """fleet exit code (run --config with several hosts): the worst host, in this order:
  130  interrupted (the fleet got SIGINT/SIGTERM, or a host run was interrupted or never started)
  2    a host run stopped on a usage or configuration error
  3    a host run had a lab error, or ended without a report (killed, crashed)
  5    a read-only host run changed its host (host-changed)
  1    a host failed
  4    a host was incomplete
  0    every host passed"""

# a host's status, from its exit code and report, worst first; each with the fleet exit code it makes
STATUS_EXIT = {"interrupted": EXIT_INTERRUPTED, "not-run": EXIT_INTERRUPTED, "usage-error": EXIT_USAGE,
               "lab-error": EXIT_LAB, "error": EXIT_LAB, "host-changed": EXIT_HOST_CHANGED, "fail": EXIT_FAIL,
               "incomplete": EXIT_INCOMPLETE, "pass": EXIT_PASS}
EXIT_VERDICT = {EXIT_INTERRUPTED: "interrupted", EXIT_USAGE: "usage-error", EXIT_LAB: "lab-error",
                EXIT_HOST_CHANGED: "host-changed", EXIT_FAIL: "fail", EXIT_INCOMPLETE: "incomplete", EXIT_PASS: "pass"}
_CELL = {"failed": "FAILED", "passed": "passed", "not-applicable": "n/a", "error": "error"}


# ---------------------------------------------------------------- one host's command line


def run_argv(options: RunOptions) -> list[str]:
    """The `python -m harness run ...` that judges one host with these options (the CLI parses it back)."""
    argv = [sys.executable, "-m", "harness", "run", "--runbook", str(options.runbook), "--profile", options.profile,
            "--spacetimedb", options.spacetimedb, "--report-dir", str(options.report_dir),
            "--fail-on", options.fail_on, "--target", options.target or f"{options.backend}://"]
    if options.suites:
        argv += ["--suites", ",".join(options.suites)]
    if options.keep_lab:
        argv.append("--keep-lab")
    for flag, value in (("--url", options.url), ("--database", options.database),
                        ("--identity-file", options.identity_file), ("--known-hosts", options.known_hosts),
                        ("--vantage", options.vantage), ("--expected-version", options.expected_version),
                        ("--ca-file", options.ca_file)):
        if value:
            argv += [flag, str(value)]
    for name, address in options.resolve.items():
        argv += ["--resolve", f"{name}={address}"]
    if options.accept_new_host_key:
        argv.append("--accept-new-host-key")
    if options.allow_mutation:
        argv.append("--allow-mutation")
    return argv


# ---------------------------------------------------------------- the pool


@dataclass
class Job:
    name: str
    argv: list[str]
    host_dir: Path  # the host's report dir: run.log is written there, conformance.json is read from it


@dataclass
class HostRun:
    name: str
    exit: int | None = None  # None: never started, or could not be started (note says which)
    seconds: float = 0.0
    signalled: bool = False  # a signal was passed on to it
    note: str = ""


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    started: float
    relay: threading.Thread
    stage: int = 0  # 0 running; 1 signal passed on; 2 SIGTERM after the cleanup time; 3 SIGKILL


def child_env() -> dict[str, str]:
    """The host runs find this kit (`-m harness`) even from a checkout that is not installed."""
    from harness.paths import PACKAGE_DIR

    pythonpath = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath}


def run_pool(jobs: list[Job], limit: int, progress: Progress, *, env: dict[str, str] | None = None,
             cleanup_seconds: float = CLEANUP_SECONDS, kill_seconds: float = KILL_SECONDS,
             poll: float = 0.1) -> tuple[list[HostRun], bool]:
    """Run the jobs, at most `limit` at a time; returns each job's record (in job order) and whether the pool
    was interrupted by SIGINT/SIGTERM."""
    lock = threading.Lock()

    def emit(line: str) -> None:
        with lock:
            progress(line)

    received: list[int] = []
    previous = _catch_signals(received)
    records = {job.name: HostRun(job.name) for job in jobs}
    pending = list(jobs)
    running: list[_Running] = []
    forwarded_at: float | None = None
    try:
        while pending or running:
            while pending and not received and len(running) < limit:
                job = pending.pop(0)
                started = _start(job, env, emit, records[job.name])
                if started is not None:
                    running.append(started)
                    emit(f"[{job.name}] started ({len(jobs) - len(pending)}/{len(jobs)})")
            if received and forwarded_at is None:
                forwarded_at = time.monotonic()
                sig = signal.Signals(received[0])
                emit(f"fleet: {sig.name}: stopping {len(running)} host run(s), each writes its report first; "
                     f"{len(pending)} not started")
                for item in running:
                    _forward(item, sig)
                    records[item.job.name].signalled = True
            if forwarded_at is not None:
                _escalate(running, time.monotonic() - forwarded_at, cleanup_seconds, kill_seconds, emit)
            for item in list(running):
                code = item.proc.poll()
                if code is None:
                    continue
                running.remove(item)
                item.relay.join(timeout=5)
                record = records[item.job.name]
                record.exit, record.seconds = code, round(time.monotonic() - item.started, 1)
                emit(f"[{item.job.name}] exit {code} in {record.seconds:.0f} s")
            if received and not running:
                break
            time.sleep(poll)
    finally:
        _restore_signals(previous)
    for job in pending:
        records[job.name].note = "not started (the fleet was interrupted)"
    return [records[job.name] for job in jobs], bool(received)


def _start(job: Job, env: dict[str, str] | None, emit: Progress, record: HostRun) -> _Running | None:
    job.host_dir.mkdir(parents=True, exist_ok=True)
    (job.host_dir / "conformance.json").unlink(missing_ok=True)  # a report read later is this run's
    log = (job.host_dir / "run.log").open("wb")
    try:
        # a session of its own: a terminal's Ctrl-C reaches the fleet only, which passes one signal on, so a
        # host's cleanup is never interrupted twice
        proc = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env if env is not None else child_env(),
                                start_new_session=True)
    except OSError as exc:
        log.close()
        record.note = f"could not start: {exc}"
        emit(f"[{job.name}] could not start: {exc}")
        return None
    assert proc.stdout is not None
    relay = threading.Thread(target=_relay, args=(proc.stdout, log, job.name, emit), daemon=True)
    relay.start()
    return _Running(job, proc, time.monotonic(), relay)


def _relay(stream: IO[bytes], log: IO[bytes], name: str, emit: Progress) -> None:
    try:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            emit(f"[{name}] {raw.decode('utf-8', errors='replace').rstrip()}")
    finally:
        log.close()
        stream.close()


def _forward(item: _Running, sig: signal.Signals) -> None:
    item.stage = 1
    if sig is signal.SIGINT:
        _signal_group(item.proc, signal.SIGINT)
    else:
        try:
            item.proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _escalate(running: list[_Running], waited: float, cleanup: float, kill: float, emit: Progress) -> None:
    for item in running:
        if item.stage == 1 and waited > cleanup:
            emit(f"[{item.job.name}] did not stop within {cleanup:.0f} s: SIGTERM")
            _signal_group(item.proc, signal.SIGTERM)
            item.stage = 2
        elif item.stage == 2 and waited > cleanup + kill:
            emit(f"[{item.job.name}] did not stop within {kill:.0f} s after SIGTERM: SIGKILL")
            _signal_group(item.proc, signal.SIGKILL)
            item.stage = 3


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _catch_signals(received: list[int]) -> dict[int, Any] | None:
    if threading.current_thread() is not threading.main_thread():
        return None

    def note(signum: int, _frame: Any) -> None:
        received.append(signum)

    return {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any] | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


# ---------------------------------------------------------------- the summary


def load_report(host_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The host's conformance.json, or None and why not."""
    path = host_dir / "conformance.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no conformance.json"
    except (OSError, ValueError) as exc:
        return None, f"conformance.json unreadable ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("checks", []), list):
        return None, "conformance.json is not a conformance report"
    return data, ""


def host_status(exit_code: int | None, report: dict[str, Any] | None) -> str:
    if exit_code is None:
        return "not-run"
    named = {EXIT_INTERRUPTED: "interrupted", EXIT_USAGE: "usage-error", EXIT_LAB: "lab-error"}
    if exit_code in named:
        return named[exit_code]
    if report is not None and exit_code in (EXIT_PASS, EXIT_FAIL, EXIT_INCOMPLETE, EXIT_HOST_CHANGED):
        return {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_INCOMPLETE: "incomplete",
                EXIT_HOST_CHANGED: "host-changed"}[exit_code]
    return "error"  # killed, crashed, or ended without its report


def fleet_exit(statuses: list[str], interrupted: bool) -> int:
    codes = [STATUS_EXIT[s] for s in statuses]
    for code in (EXIT_INTERRUPTED, EXIT_USAGE, EXIT_LAB, EXIT_HOST_CHANGED, EXIT_FAIL, EXIT_INCOMPLETE):
        if code in codes or (interrupted and code == EXIT_INTERRUPTED):
            return code
    return EXIT_PASS


def host_entry(name: str, run: HostRun, host_dir: Path, report_dir: Path, *, target: str = "",
               url: str = "") -> dict[str, Any]:
    report, why = load_report(host_dir)
    checks = [c for c in (report or {}).get("checks", []) if isinstance(c, dict)]
    counts = (report or {}).get("counts") or {}
    if report is not None and not counts:
        for check in checks:
            counts[str(check.get("outcome"))] = counts.get(str(check.get("outcome")), 0) + 1
    status = host_status(run.exit, report)
    notes = [n for n in (run.note, why if run.exit is not None else "", (report or {}).get("lab_error", "")) if n]
    return {"name": name, "target": target, "url": url, "status": status,
            "verdict": (report or {}).get("verdict") or status, "exit": run.exit, "seconds": run.seconds,
            "signalled": run.signalled, "counts": counts,
            "failed": [str(c.get("id")) for c in checks if c.get("outcome") == "failed"],
            "outcomes": {str(c.get("id")): str(c.get("outcome")) for c in checks},
            "report": _relative(host_dir / "conformance.json", report_dir) if report is not None else None,
            "note": "; ".join(notes)}


def summarize(entries: list[dict[str, Any]], interrupted: bool, report_dir: Path) -> dict[str, Any]:
    """fleet.json's content: the hosts, the fleet's exit code and the failed-check matrix."""
    failing: dict[str, list[str]] = {}
    for entry in entries:
        for check_id in entry["failed"]:
            failing.setdefault(check_id, []).append(entry["name"])
    rows = sorted(failing.items(), key=lambda item: (-len(item[1]), item[0]))
    matrix = {cid: {e["name"]: e["outcomes"].get(cid, "") for e in entries} for cid, _ in rows}
    code = fleet_exit([e["status"] for e in entries], interrupted)
    hosts = [{k: v for k, v in e.items() if k != "outcomes"} for e in entries]
    return {"schema": SCHEMA, "verdict": EXIT_VERDICT[code], "exit": code, "interrupted": interrupted,
            "report_dir": str(report_dir), "hosts": hosts,
            "failed_checks": [{"id": cid, "hosts": names} for cid, names in rows], "matrix": matrix}


def write_summary(report_dir: Path, summary: dict[str, Any]) -> dict[str, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": report_dir / "fleet.json", "markdown": report_dir / "fleet.md"}
    from harness.redact import redact, redact_text

    summary = redact(summary)
    for key, text in (("json", json.dumps(summary, indent=1) + "\n"), ("markdown", render_markdown(summary))):
        tmp = paths[key].with_suffix(paths[key].suffix + ".tmp")
        tmp.write_text(redact_text(text), encoding="utf-8")
        tmp.replace(paths[key])
    return paths


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no checks"


def render_table(summary: dict[str, Any]) -> str:
    hosts = summary["hosts"]
    width = max([len(h["name"]) for h in hosts] + [4])
    lines = [f"{'host':<{width}}  {'verdict':<11}  exit  checks"]
    for h in hosts:
        exit_text = "-" if h["exit"] is None else str(h["exit"])
        failed = f"; failed: {', '.join(h['failed'])}" if h["failed"] else ""
        note = f" ({h['note']})" if h["note"] and not h["report"] else ""
        lines.append(f"{h['name']:<{width}}  {h['verdict']:<11}  {exit_text:<4}  {_count_text(h['counts'])}"
                     f"{failed}{note}")
    lines.append(f"fleet: {summary['verdict']} (exit {summary['exit']})")
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any]) -> str:
    hosts = summary["hosts"]
    out = [f"# Fleet: {summary['verdict'].upper()} (exit {summary['exit']})", "",
           f"{len(hosts)} host(s){'; interrupted' if summary['interrupted'] else ''}.", "",
           "| host | target | verdict | exit | checks | failed checks | report |", "|---|---|---|---|---|---|---|"]
    for h in hosts:
        report = f"[{h['report']}]({h['report']})" if h["report"] else h["note"] or "-"
        exit_text = "-" if h["exit"] is None else str(h["exit"])
        out.append(f"| {h['name']} | {h['target'] or '-'} | {h['verdict']} | {exit_text} | {_count_text(h['counts'])} "
                   f"| {', '.join(f'`{c}`' for c in h['failed']) or '-'} | {report} |")
    out += ["", "## Failed checks", ""]
    if not summary["failed_checks"]:
        out.append("No host failed a check.")
    else:
        names = [h["name"] for h in hosts]
        out += [f"| check | failing | {' | '.join(names)} |", f"|---|---|{'---|' * len(names)}"]
        for row in summary["failed_checks"]:
            cells = [_CELL.get(summary["matrix"][row["id"]].get(n, ""), "-") for n in names]
            out.append(f"| `{row['id']}` | {len(row['hosts'])}/{len(names)} | {' | '.join(cells)} |")
    out += ["", "```", FLEET_EXIT_HELP, "```", ""]
    return "\n".join(out)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- the whole fleet


def preflight(config: StagingConfig, name: str, options: RunOptions) -> None:
    """What each run checks first (its plan, its suites and their extras), here before any host starts."""
    from harness import run as run_module
    from harness.planner import build_plan

    try:
        build_plan(options.runbook, options.profile)
        run_module._require_extras(run_module._suite_files(options.suites))
    except KitError as exc:
        raise UsageError(f"{config.path}: host {name!r}: {exc.one_line()}") from None


def run_fleet(config: StagingConfig, progress: Progress, *, jobs: int | None = None, command: Command = run_argv,
              out: Callable[[str], None] = print, env: dict[str, str] | None = None, check_plans: bool = True,
              cleanup_seconds: float = CLEANUP_SECONDS) -> int:
    """Judge every host of the config, `jobs` (default: the config's) at a time; returns the fleet's exit code."""
    options = {host.name: config.to_run_options(host) for host in config.hosts}
    if check_plans:
        for name, opts in options.items():
            preflight(config, name, opts)
    limit = jobs or config.jobs
    report_dir = config.report_dir
    work = [Job(name, command(opts), opts.report_dir) for name, opts in options.items()]
    progress(f"fleet: {len(work)} hosts from {config.path}, {min(limit, len(work))} at a time; reports in {report_dir}")
    runs, interrupted = run_pool(work, limit, progress, env=env, cleanup_seconds=cleanup_seconds)
    entries = [host_entry(run.name, run, job.host_dir, report_dir, target=options[run.name].target
                          or f"{options[run.name].backend}://", url=options[run.name].url)
               for run, job in zip(runs, work, strict=True)]
    summary = summarize(entries, interrupted, report_dir)
    paths = write_summary(report_dir, summary)
    out(render_table(summary))
    progress(f"fleet: {summary['verdict']} (exit {summary['exit']}); {paths['markdown']}  json: {paths['json']}")
    return int(summary["exit"])
