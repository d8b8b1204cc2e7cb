"""`stdb-conformance run`: plan -> lab -> apply -> suites -> reports, always writing a report.

Phases are timed into the report. A failed or interrupted run still writes conformance.json and
junit.xml, and the lab is torn down on success, failure, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import time_ledger
from harness.apply import ApplyResult, apply_plan
from harness.backends.base import Capability, HostAccess
from harness.errors import EXIT_FAIL, EXIT_LAB, EXIT_PASS, VERDICT_EXIT, KitError, LabError
from harness.model import Plan
from harness.paths import PACKAGE_DIR, SUITES_DIR, default_report_dir
from harness.planner import build_plan
from harness.results import CheckResult
from harness.run_state import RunState
from harness.tape import ENV as TAPE_ENV
from harness.targets.base import Target
from harness.testbed import Testbed
from harness.trace import StateTrace, watch_of
from reports.contract import RunReport, write_reports

if TYPE_CHECKING:
    from harness.checkpoint_run import RunCheckpoints

SUITE_ORDER = ["routes", "tls", "firewall", "operator", "aws_backup", "service", "mounts", "backup_restore", "upgrade",
               "findings"]

Progress = Callable[[str], None]


@dataclass
class RunOptions:
    runbook: Path
    profile: str = "default"
    backend: str = "docker"
    spacetimedb: str = "standin"  # standin | real
    report_dir: Path = field(default_factory=default_report_dir)
    suites: list[str] = field(default_factory=list)  # empty = all present
    keep_lab: bool = False
    fail_on: str = "error"
    mutate_host: Path | None = None  # selftest only: host commands run after the apply phase (harness/host_mutants.py)
    # the target: "" = a lab host of `backend` (docker:// or vm://); ssh://user@host[:port] = an existing host
    target: str = ""
    url: str = ""  # https://DOMAIN the host serves (existing hosts; lab hosts use the profile's domain)
    database: str = ""  # an existing database to subscribe to and query (read-only) instead of a probe database
    identity_file: Path | None = None  # ssh private key
    known_hosts: Path | None = None  # ssh known_hosts file (default: the user's)
    accept_new_host_key: bool = False  # trust a first host key (said in the report)
    allow_mutation: bool = False  # existing hosts: run the checks that change the host
    vantage: str = ""  # "" = the machine the kit runs on; ssh://user@host[:port] = another remote vantage point
    expected_version: str = ""  # the SpacetimeDB version the host should run (staging configs)
    resolve: dict[str, str] = field(default_factory=dict)  # name -> address for the vantage (lab hosts kept up)
    ca_file: Path | None = None  # extra CA bundle the vantage trusts (lab hosts kept up: lab CA + ACME root)
    converge_only: bool = False  # `lab up`: bring up and apply, judge nothing, keep the lab
    aws_region: str = ""  # existing hosts: the real AWS account's region to read (read only) for aws_backup
    aws_profile: str = ""  # ... and the profile of ~/.aws/config to read it with ("" = the default chain)
    run_id: str = ""  # "" = a new random id
    from_checkpoint: bool = False  # start from the longest stored checkpoint of the plan (never by default)
    save_checkpoint: str | None = None  # keep checkpoints: "" the longest valid prefix, or also "3,9" (step counts)


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt so cleanup runs."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, _frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_deferred(progress: Progress) -> Iterator[list[int]]:
    """While the lab is torn down and the report written, SIGINT and SIGTERM are noted, not acted on: a second
    Ctrl-C (or a SIGTERM after it) must not stop the teardown half way and leave the lab behind. The signals
    received are yielded; the run then ends as interrupted (exit 130)."""
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def note(signum: int, _frame: Any) -> None:
        if not received:
            progress(f"signal {signal.Signals(signum).name} during teardown: finishing the teardown first")
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class PhaseTimer:
    """Wall time per phase, and (time_ledger) the same time split by kind."""

    def __init__(self, progress: Progress) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.ledger = time_ledger.start()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.progress(f"== {name}")
        started = time.monotonic()
        try:
            with self.ledger.spend(time_ledger.phase_kind(name), phase=name):
                yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - started


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run(options: RunOptions, progress: Progress) -> int:
    """Run the whole conformance job. Returns the CI exit code."""
    from harness.backends import backend_class, parse_target

    runbook_bytes = options.runbook.read_bytes()
    plan = build_plan(options.runbook, options.profile)  # usage errors surface before any lab work
    if hashlib.sha256(runbook_bytes).hexdigest() != plan.runbook_sha256:
        raise KitError(f"runbook {options.runbook} changed while it was being read", hint="run again")
    _require_extras(_suite_files(options.suites))
    url = parse_target(options.target or options.backend)
    backend_cls = backend_class(url.scheme)
    builds = Capability.BUILDS_HOST in backend_cls.capabilities
    if builds:
        _require_console_extra(plan)
    backend_cls.preflight()  # a bad environment is one line before the run prints or creates anything
    checkpoints = _checkpoints(options, plan, backend_cls) if builds else None
    run_id = options.run_id or secrets.token_hex(4)
    timer = PhaseTimer(progress)
    report = RunReport(run_id=run_id, backend=url.scheme, runbook_path=plan.runbook_path,
                       runbook_sha256=plan.runbook_sha256, profile=plan.profile, started=_now(),
                       fail_on=options.fail_on,
                       adaptations=[a.to_dict() for a in plan.adaptations] if builds else [],
                       substitutions=_substitutions(plan),
                       spacetimedb={"implementation": options.spacetimedb if builds else "as installed on the host"},
                       sections=_sections(plan))
    progress(f"run {run_id}: target={url} spacetimedb={report.spacetimedb['implementation']} "
             f"runbook={options.runbook} profile={plan.profile}")
    from harness.lab import runs

    runs.register(run_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"stdbc-{run_id}-run-"))
    runbook_copy, plan_path = _freeze_plan(plan, runbook_bytes, workdir, options.report_dir)
    testbed: Testbed | None = None
    stack = ExitStack()
    try:
        with sigterm_as_interrupt():
            # moto's server takes seconds to import and start: it starts while the lab comes up
            early_moto = _launch_moto(plan, workdir, run_id, stack) if builds else None
            testbed = _bring_up(options, url, run_id, workdir, timer, report, progress, checkpoints)
            target = testbed.target
            if builds:
                testbed.follow_plan(plan)
                seed = checkpoints.trace() if checkpoints is not None else None
                trace = StateTrace.from_dict(seed) if seed else StateTrace(watch_of(plan))
                trace.seconds = 0.0  # what fingerprinting costs this run (replayed fingerprints cost nothing)
                hook = (checkpoints.boundary_hook(run_id=run_id, backend=testbed.backend, lab=testbed.lab,
                                                  trace=trace, progress=progress)
                        if checkpoints is not None else None)
                with timer.phase("apply"):
                    try:
                        if not seed:
                            trace.start(target)
                        applied = apply_plan(plan, target, progress=progress, before_step=testbed.before_step,
                                             after_step=lambda step, host: trace.record(step.index, host),
                                             replayed=checkpoints.replayed() if checkpoints is not None else None,
                                             at_boundary=hook)
                    finally:
                        trace.close()
                if checkpoints is not None:
                    report.environment["checkpoint"] = checkpoints.to_dict()
                    if options.save_checkpoint is not None:  # what the kept checkpoints are, now, for later runs
                        _write_kept(options.report_dir, report.environment["checkpoint"])
                _record_apply(report, applied, workdir)
                report.state_trace = trace.to_dict()
                transcript: list[dict[str, Any]] = applied.transcript()
            else:
                (workdir / "transcript.json").write_text("[]")
                report.apply = {"steps": 0, "skipped": "a host that already exists: the kit applies no step; "
                                "the plan says what the host should look like"}
                transcript = []
            if options.mutate_host is not None:
                from harness.host_mutants import apply_host_mutants

                with timer.phase("selftest_mutant"):
                    apply_host_mutants(options.mutate_host, target, report, progress)
            with timer.phase("facts"):
                report.environment.update(_environment_facts(target))
                report.environment.update(testbed.backend.facts())
                report.environment["reachable_from_remote"] = _reachable_ports(testbed)
                report.spacetimedb.update(_spacetimedb_facts(target, options, builds))
                site, vantage = _site_and_vantage(testbed, options)
                if not builds and vantage.get("kind") == "local":
                    _url_answers(site)
            if options.converge_only:
                _keep(testbed, site, vantage, options)
                return _finish_converge(report, progress)
            digest_before = _digest(testbed, timer, "digest_before") if not builds else None
            aws_state = (_aws_account(plan, workdir, timer, report, progress, stack, early_moto) if builds else
                         _real_aws_account(options, testbed, progress) if options.aws_region else None)
            state = RunState(run_id=run_id, backend=url.scheme, lab=testbed.state(), aws=aws_state,
                             capabilities=sorted(c.value for c in testbed.backend.effective_capabilities()),
                             mutation_allowed=testbed.backend.has(Capability.MUTATION), builds_host=builds,
                             site=site, vantage=vantage, database=options.database,
                             expected_version=options.expected_version, runbook=str(runbook_copy),
                             runbook_source=str(options.runbook), runbook_sha256=plan.runbook_sha256,
                             plan=str(plan_path), profile=options.profile, spacetimedb=report.spacetimedb,
                             transcript=str(workdir / "transcript.json"), workdir=str(workdir))
            state_path = workdir / "lab-state.json"
            state.save(state_path)
            report.checks = _run_suites(options, state_path, workdir, timer, progress, lab=testbed)
            report.environment.update(_scenario_summaries(state_path))
            if digest_before is not None:
                digest = _digest_report(digest_before, _digest(testbed, timer, "digest_after"))
                report.environment["state_digest"] = digest
                report.host_changed = read_only_violation(digest, testbed.backend.has(Capability.MUTATION))
                if report.host_changed:
                    progress(f"the host changed during a read-only run ({len(report.host_changed)} change(s)): "
                             f"the run fails")
            from harness.findings import detect

            report.findings.extend(detect(plan, transcript, report.checks, report.environment))
            if builds:
                _explain(report, plan, trace, applied, timer.timings.get("apply", 0.0))
    except KeyboardInterrupt:
        report.interrupted = True
        progress("interrupted: writing the report and removing the lab")
    except LabError as exc:
        report.lab_error = exc.one_line()
        progress(f"lab error: {report.lab_error}")
    finally:
        with _signals_deferred(progress) as late_signals:
            try:
                stack.close()
            except Exception as exc:  # noqa: BLE001 - a helper server that would not stop must not stop the teardown
                progress(f"teardown problem: {exc}")
            if testbed is not None:
                _existing_host_evidence(testbed, options.report_dir, report)
            _vantage_evidence(workdir, options.report_dir, report)
            if testbed is not None and not options.keep_lab:
                with timer.phase("teardown"):
                    try:
                        testbed.down()
                    except Exception as exc:  # noqa: BLE001 - teardown must not hide the report
                        progress(f"teardown problem: {exc}")
            if late_signals:
                report.interrupted = True
            report.timings = timer.timings
            report.time_by_kind = timer.ledger.to_dict()
            report.finished = _now()
            paths = write_reports(report, options.report_dir)
            _copy_transcript(workdir, options.report_dir)
            _keep_histories(workdir, options.report_dir)
            _remove_tree(workdir)
            if not options.keep_lab:
                runs.unregister(run_id)
            _print_summary(report, paths, progress)
        # a signal after the report was written changes nothing: the run had finished
    if report.interrupted:
        return 130
    if report.lab_error:
        return EXIT_LAB
    return VERDICT_EXIT[report.verdict()]


def _keep(testbed: Testbed, site: dict[str, str], vantage: dict[str, str], options: RunOptions) -> None:
    """`lab up`: record the testbed so `lab list`, `lab down` and the ssh runs that judge it find it."""
    from harness.lab import runs

    testbed.backend.keep()
    runs.keep(testbed.run_id, {"testbed": testbed.state(), "site": site, "vantage": vantage,
                               "backend": testbed.backend.scheme, "runbook": str(options.runbook),
                               "profile": options.profile, "spacetimedb": options.spacetimedb, "since": _now()})


def _finish_converge(report: RunReport, progress: Progress) -> int:
    failed = report.apply.get("failed", 0)
    progress(f"lab up: {report.apply.get('ok', 0)} step(s) applied, {failed} failed")
    return EXIT_FAIL if failed else EXIT_PASS


def _site_and_vantage(testbed: Testbed, options: RunOptions) -> tuple[dict[str, str], dict[str, str]]:
    """Where the remote vantage point connects and what it trusts (state keys `site` and `vantage`)."""
    if testbed.has_lab:
        lab = testbed.lab
        return ({"domain": lab.domain, "url": f"https://{lab.domain}", "address": testbed.backend.address(),
                 "ca_file": str(lab.vantage_ca())},
                {"kind": "lab-client", "container": lab.s.containers.get("client", ""),
                 "ca_dir_host": str(lab.workdir / "ca")})
    from urllib.parse import urlparse

    domain = urlparse(options.url).hostname or ""
    site = {"domain": domain, "url": options.url.rstrip("/"), "address": options.resolve.get(domain, ""),
            "ca_file": str(options.ca_file) if options.ca_file else ""}
    if options.vantage:
        return site, {"kind": "ssh", "url": options.vantage,
                      "identity_file": str(options.identity_file or ""),
                      "known_hosts": str(options.known_hosts or "")}
    return site, {"kind": "local"}


def _url_answers(site: dict[str, str]) -> None:
    """An existing host's URL must resolve and accept a TCP connection on 443 from this machine (one try, 10 s
    bound), else the run stops with one line: every remote check would fail for the same reason."""
    import socket

    domain, address = site["domain"], site.get("address") or ""
    try:
        if not address:
            address = str(socket.getaddrinfo(domain, 443, type=socket.SOCK_STREAM)[0][4][0])
    except OSError as exc:
        raise LabError(f"the URL {site['url']} does not resolve from this machine ({exc})",
                       hint="check --url, or pin it with --resolve NAME=ADDRESS") from None
    try:
        socket.create_connection((address, 443), timeout=10).close()
    except OSError as exc:
        raise LabError(f"the URL {site['url']} does not answer on {address}:443 from this machine ({exc})",
                       hint="is nginx up, is 443 open to this machine? (--vantage ssh://... to look from another)") \
            from None


def _digest(testbed: Testbed, timer: PhaseTimer, phase: str) -> dict[str, Any]:
    from harness.backends.ssh_digest import state_digest

    with timer.phase(phase):
        return state_digest(testbed.target)


def _digest_report(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The host's state digest before and after the suites: equal after a read-only run."""
    from harness.backends.ssh_digest import digest_diff, fingerprint

    changes = digest_diff(before, after)
    return {"before": fingerprint(before), "after": fingerprint(after), "equal": not changes, "changes": changes,
            "digest_before": before, "digest_after": after}


def read_only_violation(digest: dict[str, Any], mutation_allowed: bool) -> list[str]:
    """What changed on a host the run was not allowed to change (its state digest before and after the suites);
    empty when nothing did, or when the run was allowed to change it (--allow-mutation)."""
    if mutation_allowed or digest.get("equal"):
        return []
    return list(digest.get("changes") or ["the state digest changed"])


def _existing_host_evidence(testbed: Testbed, report_dir: Path, report: RunReport) -> None:
    """A backend's own transcript of what it sent to the host (ssh: every command, refused ones marked), and
    the figures it keeps (connections opened, commands sent and refused), into the report."""
    export = getattr(testbed.backend, "export_transcript", None)
    if export is None:
        return
    try:
        report.environment["host_transcript"] = export(report_dir)
        report.environment.update(testbed.backend.facts())
    except Exception as exc:  # noqa: BLE001 - evidence is best effort; the report is still written
        report.environment["host_transcript"] = {"error": str(exc)}


def _real_aws_account(options: RunOptions, testbed: Testbed, progress: Progress) -> dict[str, Any]:
    """The aws_backup suite's view of a real account: read only (harness/aws/real_account.py), the volume behind
    /stdb found on the host from its NVMe serial."""
    from harness.aws.real_account import volume_behind

    volume_id, said = volume_behind(testbed.target)
    progress(f"aws: the real account in {options.aws_region}"
             f"{f' (profile {options.aws_profile})' if options.aws_profile else ''}, read only; the volume behind "
             f"/stdb: {volume_id or 'not an EBS volume (no vol- serial)'}")
    return {"endpoint_url": None, "region": options.aws_region, "profile": options.aws_profile or None,
            "simulated": False, "read_only": True, "volume_id": volume_id, "volume_found": said, "calls": [],
            "adaptations": [], "not_done": []}


def _vantage_evidence(workdir: Path, report_dir: Path, report: RunReport) -> None:
    """An ssh vantage point's transcript (every command the kit sent to that machine), redacted, into the report."""
    from harness.redact import redact_text
    from harness.vantage import VANTAGE_TRANSCRIPT

    source = workdir / VANTAGE_TRANSCRIPT
    if not source.exists():
        return
    text = redact_text(source.read_text(errors="replace"))
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / VANTAGE_TRANSCRIPT).write_text(text)
    report.environment["vantage_transcript"] = {"file": VANTAGE_TRANSCRIPT,
                                                "commands_sent": sum(1 for line in text.splitlines() if line)}


def _freeze_plan(plan: Plan, runbook_bytes: bytes, workdir: Path, report_dir: Path) -> tuple[Path, Path]:
    """One plan per run: the runbook as read at the start (and its plan) are what every suite and scenario
    judges, whatever happens to the file later. The copy and its sha256 stay in the report directory."""
    copy = workdir / "runbook.md"
    copy.write_bytes(runbook_bytes)
    plan_path = workdir / "plan.json"
    plan_path.write_text(json.dumps(plan.to_state(), indent=1))
    report_dir.mkdir(parents=True, exist_ok=True)
    from harness.redact import redact_text

    # the report dir's copy is redacted like every report file (a runbook may carry a token or a key); its
    # .sha256 is that file's, and conformance.json keeps the sha256 of the runbook as read
    text = runbook_bytes.decode("utf-8", errors="replace")
    kept = redact_text(text).encode() if redact_text(text) != text else runbook_bytes
    (report_dir / "runbook.md").write_bytes(kept)
    (report_dir / "runbook.md.sha256").write_text(f"{hashlib.sha256(kept).hexdigest()}  runbook.md\n")
    return copy, plan_path


def _has_console_steps(plan: Plan) -> bool:
    return any(s.kind.value == "console" and s.phase == "apply" for s in plan.steps)


def _launch_moto(plan: Plan, workdir: Path, run_id: str, stack: ExitStack) -> Any:
    """moto's server for the runbook's console steps, started now and waited for in the `aws` phase; stopped with
    the run's other helpers (`stack`). None when the plan has no console step or the 'aws' extra is missing."""
    if not _has_console_steps(plan):
        return None
    try:
        from harness.aws.moto_lab import MotoServer
    except ImportError:
        return None
    moto = MotoServer(log=workdir / "moto.log", run_id=run_id)
    stack.callback(moto.stop)
    return moto.launch()


def _aws_account(plan: Plan, workdir: Path, timer: PhaseTimer, report: RunReport, progress: Progress,
                 stack: ExitStack, early: Any = None) -> dict[str, Any] | None:
    """The runbook's AWS Console steps, performed against a moto server in the lab (simulated): `early`, the one
    `_launch_moto` started, when there is one."""
    if not _has_console_steps(plan):
        return None
    try:
        from harness.aws.moto_lab import REGION, MotoServer
        from harness.aws.provider import ConsoleProvider
    except ImportError as exc:
        progress(f"aws: console steps not performed ({exc}): pip install 'stdb-conformance[aws]'")
        return None
    with timer.phase("aws"):
        moto = stack.enter_context(early if early is not None else MotoServer(log=workdir / "moto.log",
                                                                              run_id=report.run_id))
        record = ConsoleProvider(moto.url, REGION, simulated=True, allow_mutation=False).perform(plan)
    report.environment["aws"] = {"simulated": True, "endpoint": "moto server on 127.0.0.1",
                                 "calls": record.calls, "not_done": record.not_done}
    report.adaptations.append({"id": "aws.simulated", "summary": "AWS Console steps performed through AWS's APIs "
                               "against a moto server (simulated account)", "detail": "; ".join(record.not_done)})
    report.adaptations.extend({**a, "detail": a.get("detail", "")} for a in record.adaptations)
    progress(f"aws (simulated): {len(record.calls)} API calls; not done: {len(record.not_done)}")
    return record.to_state()


def _scenario_summaries(state_path: Path) -> dict[str, Any]:
    """Per scenario: applicable or why not, error, and each event's boot id and duration (boot times)."""
    from harness.scenarios import summarize

    state = RunState.load(state_path)
    found: dict[str, Any] = {}
    for suite, path in state.histories.items():
        try:
            history = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        found[f"scenario_{suite}"] = {
            "applicable": history.get("applicable"), "reason": history.get("reason", ""),
            "error": history.get("error", ""), "seconds": history.get("seconds"),
            "events": [{"name": e.get("name"), "boot_id": e.get("boot_id", ""), "seconds": e.get("seconds"),
                        **({"boot_timing": e["probes"]["boot_timing"]["output"]}
                           if e.get("probes", {}).get("boot_timing") else {})}
                       for e in history.get("events", [])],
            **summarize(suite, history, Path(path).parent)}
    return found


def _sections(plan: Plan) -> list[dict[str, Any]]:
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for step in plan.steps:
        entry = found.setdefault(step.ref.section, {"section": list(step.ref.section),
                                                    "line_start": step.ref.line_start, "steps": 0,
                                                    "phase": step.phase})
        entry["steps"] += 1 if step.runs else 0
    return list(found.values())


def _substitutions(plan: Plan) -> list[dict[str, Any]]:
    return [{"step": s.index, **sub.to_dict()} for s in plan.steps for sub in s.substitutions]


def _checkpoints(options: RunOptions, plan: Plan, backend_cls: Any) -> RunCheckpoints | None:
    from harness.checkpoint_run import RunCheckpoints, parse_save_at

    save_at = parse_save_at(options.save_checkpoint) if options.save_checkpoint is not None else None
    if Capability.CHECKPOINT not in backend_cls.capabilities:
        return None
    return RunCheckpoints.for_run(plan, use=options.from_checkpoint, save_at=save_at)


def _bring_up(options: RunOptions, url: Any, run_id: str, workdir: Path, timer: PhaseTimer,
              report: RunReport, progress: Progress, checkpoints: RunCheckpoints | None = None) -> Testbed:
    """The backend for the target URL; for a backend that builds its host, the lab around it (image, mirror,
    the backend's own artefacts, then services and target side by side)."""
    from harness.backends import backend_class

    backend_cls = backend_class(url.scheme)
    if Capability.BUILDS_HOST not in backend_cls.capabilities:
        access = HostAccess(identity_file=options.identity_file, known_hosts=options.known_hosts,
                            accept_new_host_key=options.accept_new_host_key, allow_mutation=options.allow_mutation)
        testbed = Testbed(run_id, backend_cls.for_run(run_id, url, access, workdir), None)
        with timer.phase("connect"):
            try:
                testbed.up(progress)
            except BaseException:
                with _signals_deferred(progress):
                    testbed.down()
                raise
        return testbed
    from harness.lab.image import ensure_base_image
    from harness.lab.services import LabOptions, LabServices

    with timer.phase("image"):
        image = ensure_base_image(progress=progress)
        report.environment["image"] = {"tag": image.tag, "key": image.key, "built": image.built}
    release_dir = None
    if options.spacetimedb == "standin":
        from fixtures.spacetimedb_standin.release import DEFAULT_VERSIONS, build_release_tree

        release_dir = workdir / "mirror"
        with timer.phase("mirror"):
            # the runbook installs the release before the newest: the upgrade rehearsal publishes the newest
            # before the update steps (harness.scenarios.upgrade), so "latest" really moves
            mutant = os.environ.get("STDBC_STANDIN_MUTANT", "")  # test-only: the self-test's release defects
            if mutant and not mutant.startswith("empty-table-on-upgrade:"):
                raise KitError(f"unknown STDBC_STANDIN_MUTANT {mutant!r}", hint="empty-table-on-upgrade:TABLE")
            info = build_release_tree(release_dir, latest=DEFAULT_VERSIONS[-2],
                                      mutants={DEFAULT_VERSIONS[-1]: mutant} if mutant else None)
            if mutant:
                report.spacetimedb["release_mutant"] = f"{DEFAULT_VERSIONS[-1]}: {mutant} (self-test)"
            report.spacetimedb["served_versions"] = info.get("versions", []) if isinstance(info, dict) else []
    if "prepare" in vars(backend_cls):  # a backend with cached artefacts of its own (e.g. a VM image)
        with timer.phase(f"{url.scheme}_image"):
            report.environment.update(backend_cls.prepare(progress))
    found = None
    if checkpoints is not None:
        from harness.checkpoint_run import release_digest

        lab_inputs = {k: v for k, v in asdict(LabOptions()).items() if k not in ("mirror_dir", "identity", "image")}
        found = checkpoints.choose(backend_cls, {"backend": url.scheme, "image": image.key,
                                                 "release": release_digest(release_dir),
                                                 "spacetimedb": options.spacetimedb, "lab": lab_inputs},
                                          progress)
    while True:
        services = LabServices(run_id, LabOptions(mirror_dir=release_dir, image=image.tag,
                                                  identity=found.identity if found is not None else None))
        backend = backend_cls.for_run(run_id, url, HostAccess(), workdir)
        if found is not None:
            backend.restore_from = (found.directory, found.backend)
        testbed = Testbed(run_id, backend, services)
        with timer.phase("lab_up"):
            try:
                testbed.up(progress)
                differs = checkpoints.verify(testbed.target) if found is not None and checkpoints else ""
                if differs:
                    progress(f"checkpoint: not used: {differs}; starting again from a fresh host")
                    testbed.down()
            except BaseException:
                with _signals_deferred(progress) as late_signals:
                    testbed.down()
                if late_signals:
                    raise KeyboardInterrupt from None
                raise
        if not differs:
            break
        assert checkpoints is not None
        checkpoints.reject(differs)
        found = None
    if checkpoints is not None and (replayed := checkpoints.adaptation()) is not None:
        report.adaptations.append(replayed)
    report.adaptations.extend(testbed.adaptations())
    report.environment["lab_readiness"] = testbed.readiness()  # each bounded wait and its bound
    return testbed


def _write_kept(report_dir: Path, kept: dict[str, Any]) -> None:
    """The checkpoints this run kept, written as soon as its apply phase ends: the selftest starts a baseline's
    mutants from them while the baseline's checks still run."""
    from harness.checkpoint_run import KEPT_FILE

    report_dir.mkdir(parents=True, exist_ok=True)
    partial = report_dir / f".{KEPT_FILE}.partial"
    partial.write_text(json.dumps(kept, indent=1))
    partial.replace(report_dir / KEPT_FILE)


def _record_apply(report: RunReport, applied: ApplyResult, workdir: Path) -> None:
    transcript = applied.transcript()
    (workdir / "transcript.json").write_text(json.dumps(transcript, indent=2))
    report.findings.extend(applied.findings)
    (workdir / "findings-apply.json").write_text(json.dumps([f.to_dict() for f in applied.findings], indent=1))
    report.step_timings = [{"index": r["index"], "summary": r["summary"], "status": r["status"],
                            "duration": r["duration"],
                            **({"replayed": True} if r["note"].startswith("replayed from") else {})}
                           for r in transcript]
    report.apply = {
        "steps": len(transcript),
        "ok": sum(r["status"] == "ok" for r in transcript),
        "failed": sum(r["status"] == "failed" for r in transcript),
        "skipped": sum(r["status"] == "skipped" for r in transcript),
        "stopped_at": applied.stopped_at.index if applied.stopped_at else None,
        "transcript": "transcript.json",
    }
    for record in applied.records:
        for sub in record.resolved:
            report.substitutions.append({"step": record.step.index, **sub.to_dict()})


def _environment_facts(target: Target) -> dict[str, Any]:
    """What the host is (OS, kernel, versions, listening sockets, fstab, the /stdb mount): one command each, all in
    the read-only catalogue, so a host the kit did not build answers them too."""
    from harness.backends.ssh_catalogue import MutationRefused

    probes = {
        "os": "cat /etc/os-release",
        "kernel": "uname -r",
        "systemd": "systemctl --version | head -1",
        "nginx": "nginx -v 2>&1",
        "certbot": "dpkg-query -W -f '${Version}' certbot 2>&1",
        "python3": "python3 --version 2>&1",
        "ufw_status": "ufw status verbose 2>&1",
        "listening": "ss -Hltn 2>&1",
        "fstab": "cat /etc/fstab 2>&1",
        "stdb_mount": "findmnt -n -o SOURCE,FSTYPE,OPTIONS --target /stdb 2>&1",
    }
    def ask(command: str) -> str | None:
        try:
            res = target.run(command, timeout=30)
        except MutationRefused:
            return None
        return res.stdout.strip() if res.ok else None

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=5) as pool:  # one command each, a few at a time: a vm answers slowly
        facts: dict[str, Any] = dict(zip(probes, pool.map(ask, probes.values()), strict=True))
    if facts["os"]:
        pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', facts["os"], re.MULTILINE)
        facts["os"] = pretty.group(1) if pretty else None
    return facts


REMOTE_PORTS = (22, 80, 443, 3000)


def _reachable_ports(testbed: Testbed) -> dict[int, bool]:
    """Which of the target's TCP ports accept a connection from the lab's remote client (bounded: one try
    each). A host the kit did not build: the firewall suite judges from the vantage point instead."""
    if not testbed.has_lab:
        return {}
    client = testbed.lab.client
    ip = testbed.backend.address()
    script = "; ".join(f"nc -z -w 2 {ip} {port} && echo {port}=open || echo {port}=closed" for port in REMOTE_PORTS)
    res = client.run(script, timeout=30)
    found = {}
    for line in res.stdout.split():
        port, _, state = line.partition("=")
        if port.isdigit():
            found[int(port)] = state == "open"
    return found


def _spacetimedb_facts(target: Target, options: RunOptions, builds: bool) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    if builds:
        facts = {"install_url": "https://install.spacetimedb.com",
                 "served_by": "lab mirror (stand-in)" if options.spacetimedb == "standin" else "real installer URL"}
    res = target.run("curl -s --max-time 5 http://127.0.0.1:3000/v1/health", timeout=15)
    if res.ok and res.stdout.strip().startswith("{"):
        try:
            facts["health"] = json.loads(res.stdout)
        except json.JSONDecodeError:
            pass
    res = target.run("readlink /stdb/bin/current", timeout=15)
    if res.ok and res.stdout.strip():
        facts["version"] = res.stdout.strip()
    elif isinstance(facts.get("health"), dict) and facts["health"].get("version"):
        facts["version"] = f"{facts['health']['version']} (from /v1/health; /stdb/bin/current not readable)"
    return facts


def _run_suites(options: RunOptions, state_path: Path, workdir: Path, timer: PhaseTimer,
                progress: Progress, lab: Testbed | None = None) -> list[CheckResult]:
    from harness.scenarios import generate

    results: list[CheckResult] = []
    for suite in _suite_files(options.suites):
        name = suite.stem.removeprefix("test_")
        if lab is not None:
            generate(name, lab=lab, state_path=state_path, timer=timer, progress=progress)
        with timer.phase(f"suite:{name}"):
            # everything the suite asks the live world is taped (harness.tape): `judge` replays it
            suite_results = run_suite_process(suite, state_path, workdir,
                                              tape=f"record:{workdir / f'tape-{name}.jsonl.gz'}")
            counts = _count(suite_results)
            progress(f"   {name}: {counts}")
            results.extend(suite_results)
        # the suite's process measured what of its time was the runbook's own commands or lab setup
        timer.ledger.reassign(f"suite:{name}", time_ledger.read_suite_split(
            time_ledger.suite_split_path(workdir / f"checks-{suite.stem}.json")))
    return results


SUITE_TIMEOUT = float(os.environ.get("STDB_SUITE_TIMEOUT") or 1800)  # seconds per suite's pytest process


def run_suite_process(suite: Path, state_path: Path, workdir: Path, *, tape: str) -> list[CheckResult]:
    """One suite's checks in their own pytest process, run from `workdir` with the run state at `state_path`;
    `tape` is STDBC_TAPE for it (harness.tape: record, or replay when a run is judged again)."""
    name = suite.stem.removeprefix("test_")
    out = workdir / f"checks-{suite.stem}.json"
    cmd = [sys.executable, "-m", "pytest", str(suite), "-p", "harness.pytest_plugin",
           "--lab-state", str(state_path), "--checks-out", str(out), "-q", "--no-header",
           "-p", "no:cacheprovider", "--rootdir", str(suite.parent), "-c", os.devnull, "-o", "addopts=",
           # where a suite's time goes, in its log (pytest-SUITE.log in the report folder)
           "--durations=12", "--durations-min=0.3"]
    # the suites are found from the package and run from the run's own folder, never from the
    # current directory (a conftest.py or pytest.ini there must not change what is judged); no plugin is
    # loaded but the kit's own: whatever else is installed beside the kit (testinfra's, xdist's, anyio's,
    # Hypothesis's) must not change what is judged either, and importing them cost each suite's process
    # 2-3 s of a loaded 2-core machine (Hypothesis is used as a library, with no need of its plugin)
    pythonpath = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")) if p)
    try:
        proc = _run_process_group(cmd, timeout=SUITE_TIMEOUT, cwd=workdir,
                                  env={**os.environ, "PYTHONPATH": pythonpath, TAPE_ENV: tape,
                                       "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    except subprocess.TimeoutExpired as exc:
        partial = (_text(exc.stdout) + _text(exc.stderr)).strip()
        (workdir / f"pytest-{name}.log").write_text(partial)
        raise LabError(f"suite {name} did not finish within {SUITE_TIMEOUT:.0f}s and was stopped "
                       f"(last output: {_last_line(partial)})",
                       hint="set STDB_SUITE_TIMEOUT (seconds) to allow longer") from None
    (workdir / f"pytest-{name}.log").write_text(proc.stdout + proc.stderr)
    suite_results = [CheckResult.from_dict(d) for d in json.loads(out.read_text())] if out.exists() else []
    if not suite_results and proc.returncode not in (0, 5):
        raise LabError(f"suite {name} could not run (pytest exit {proc.returncode}): "
                       f"{_last_line(proc.stdout + proc.stderr)}")
    return suite_results


def _run_process_group(cmd: list[str], *, timeout: float, cwd: Path,
                       env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in a process group of its own, bounded by `timeout`. On the timeout (TimeoutExpired, with the
    output so far) or an interrupt of the run, the whole group (pytest and what it started: docker exec,
    agents) is stopped: TERM, then KILL after 5 s."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                out, err = proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            out, err = "", ""
        if isinstance(exc, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


# suites whose dependencies are optional extras of the package: (importable module, extra)
SUITE_EXTRAS = {"tls": [("sslyze", "tls")], "aws_backup": [("boto3", "aws"), ("moto", "aws")]}


def _require_extras(suites: list[Path]) -> None:
    """A selected suite whose extra is not installed stops the run before any lab work, in one line."""
    import importlib.util

    for suite in suites:
        name = suite.stem.removeprefix("test_")
        for module, extra in SUITE_EXTRAS.get(name, []):
            if importlib.util.find_spec(module) is None:
                raise KitError(f"suite {name} needs the '{extra}' extra ({module} is not installed)",
                               hint=f"pip install 'stdb-conformance[{extra}]', or leave the suite out with "
                                    f"--suites")


def _require_console_extra(plan: Plan) -> None:
    """The runbook's AWS Console steps are performed in the lab (a moto server, through boto3) whatever the
    suites: without the 'aws' extra that is one line before any lab work, not a traceback after it."""
    import importlib.util

    console = [s for s in plan.steps if s.kind.value == "console" and s.phase == "apply"]
    missing = [m for m in ("boto3", "moto") if importlib.util.find_spec(m) is None]
    if console and missing:
        where = console[0].ref
        raise KitError(f"the runbook's AWS Console steps (the first at line {where.line_start}) are performed in the "
                       f"lab through the 'aws' extra, and {', '.join(missing)} is not installed",
                       hint="pip install 'stdb-conformance[aws]', or pass a --profile that leaves the console "
                            "sections out")


def _suite_files(selected: list[str]) -> list[Path]:
    present = {p.stem.removeprefix("test_"): p for p in SUITES_DIR.glob("test_*.py")}
    unknown = [s for s in selected if s not in present]
    if unknown:
        raise KitError(f"unknown suite(s): {', '.join(unknown)}", hint=f"known: {', '.join(sorted(present))}")
    names = selected or sorted(present, key=lambda n: (SUITE_ORDER.index(n) if n in SUITE_ORDER else 99, n))
    return [present[n] for n in names]


def _count(results: list[CheckResult]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no checks"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _explain(report: RunReport, plan: Plan, trace: StateTrace, applied: ApplyResult, apply_seconds: float) -> None:
    """Root causes of the failed checks from the state trace (harness.blame), into the report's data."""
    from harness.blame import root_causes

    stopped = applied.stopped_at.index if applied.stopped_at is not None else None
    causes, unexplained = root_causes(plan, trace, report.checks, stopped)
    report.root_causes = [c.to_dict() for c in causes]
    report.unexplained = unexplained
    from harness.findings import attach_root_causes

    attach_root_causes(report.findings, report.root_causes)
    report.state_trace["cost"] = {"seconds": round(trace.seconds, 2), "apply_seconds": round(apply_seconds, 2),
                                  "share_of_apply": round(trace.seconds / apply_seconds, 3) if apply_seconds else None}


def _copy_transcript(workdir: Path, report_dir: Path) -> None:
    from harness.redact import redact_text

    for name in ["transcript.json"] + [p.name for p in workdir.glob("pytest-*.log")]:
        src = workdir / name
        if src.exists():
            report_dir.mkdir(parents=True, exist_ok=True)
            (report_dir / name).write_text(redact_text(src.read_text()))


# what a finished run keeps of its recording (REPORT_DIR/histories/): the plan, the run state and every
# scenario's history with the files it names (relative to it); never a volume image or a token
KEPT_RECORDINGS = ("plan.json", "history-*.json", "findings-apply.json", "restore-drill/expected.json",
                   "restore-drill/original.json", "restore-drill/restored.json", "restore-drill/ack.jsonl",
                   "restore-drill/livecopy-*.json", "upgrade-rehearsal/dump-*.json")


def _keep_histories(workdir: Path, report_dir: Path) -> None:
    """The run's recordings, redacted, in REPORT_DIR/histories/: a finished run can be judged again from them,
    and a fixed checker tried on old runs. The run state's paths are rewritten relative to that folder."""
    from harness.redact import redact_text

    out = report_dir / "histories"
    for pattern in KEPT_RECORDINGS:
        for src in workdir.glob(pattern):
            dest = out / src.relative_to(workdir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(redact_text(src.read_text(errors="replace")))
    for src in workdir.glob("tape-*.jsonl.gz"):  # redacted as they were written (harness.tape)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / src.name)
    state_path = workdir / "lab-state.json"
    if not state_path.exists():
        return
    try:
        data = RunState.load(state_path).to_dict()
    except KitError:
        return
    data["histories"] = {suite: Path(path).name for suite, path in (data.get("histories") or {}).items()}
    for key in ("plan", "runbook", "transcript", "workdir"):
        if isinstance(data.get(key), str) and data[key].startswith(str(workdir)):
            data[key] = str(Path(data[key]).relative_to(workdir))
    out.mkdir(parents=True, exist_ok=True)
    (out / "lab-state.json").write_text(redact_text(json.dumps(data, indent=1, default=str)))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _print_summary(report: RunReport, paths: dict[str, Path], progress: Progress) -> None:
    counts = report.counts()
    progress(f"verdict: {report.verdict().upper()}  ({', '.join(f'{v} {k}' for k, v in counts.items())}; "
             f"{len(report.findings)} finding(s))")
    for finding in report.findings:
        progress(f"  finding [{finding.severity.value}] {finding.id}: {finding.summary}")
    for check in report.checks:
        if check.outcome.value in ("failed", "error"):
            progress(f"  {check.outcome.value}: {check.id}: {check.message.splitlines()[0] if check.message else ''}")
    progress(f"report: {paths['html']}  json: {paths['json']}  junit: {paths['junit']}")
