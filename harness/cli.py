"""The `stdb-conformance` command: plan, run (a lab host, an existing host, or a staging config's fleet), lab,
selftest, clean."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import EXIT_USAGE, VERDICT_EXIT, KitError, UsageError
from harness.paths import default_report_dir, default_runbook

if TYPE_CHECKING:
    from harness.run import RunOptions
    from harness.staging import StagingConfig

DEFAULT_RUNBOOK_HINT = "pass --runbook PATH or set STDB_RUNBOOK"

EXIT_CODES = """exit codes:
  0    pass: every required check passed, no finding at --fail-on severity
  1    fail: a required check failed, or a finding at --fail-on severity
  2    usage or configuration error (bad argument, runbook, profile, missing extra)
  3    lab error: the lab could not be brought up (docker, qemu, image, keyring)
  4    incomplete: nothing failed, but a required check could not be decided on this backend
  5    host-changed: a read-only run (ssh:// without --allow-mutation) found the host's state digest changed;
       the report names each change, whatever the checks said
  130  interrupted (Ctrl-C or SIGTERM): the report is still written and the lab removed"""


RUN_DESCRIPTION = """Judge one host: a fresh lab host (docker://, vm://: built, then the runbook applied), or
a host that already exists (--target ssh://user@host --url https://DOMAIN: nothing is applied; the runbook
says what the host should look like). With --config FILE: the host, or every host of a fleet, of a staging
config."""


def _runbook_path(value: str | None) -> Path:
    path = Path(value).expanduser() if value else default_runbook()
    if path is None:
        raise UsageError("no runbook given", hint=DEFAULT_RUNBOOK_HINT)
    if not path.is_file():
        raise UsageError(f"runbook not found: {path}", hint=DEFAULT_RUNBOOK_HINT)
    return path


def version_text() -> str:
    """The kit's version and the SpacetimeDB stand-in versions its lab mirror serves."""
    from importlib import metadata

    from fixtures.spacetimedb_standin.release import DEFAULT_VERSIONS

    try:
        kit = metadata.version("stdb-conformance")
    except metadata.PackageNotFoundError:
        kit = "unknown (not installed)"
    return f"stdb-conformance {kit} (SpacetimeDB stand-in {', '.join(DEFAULT_VERSIONS)})"


_pending = {"line": ""}


def _progress(message: str) -> None:
    """Progress on stderr. On a terminal a step's "..." line is rewritten in place by its outcome (a live
    progress line); in logs (CI) every line is kept."""
    live = sys.stderr.isatty()
    if live and _pending["line"]:
        if message.startswith(_pending["line"]):
            print("\r\033[K" + message, file=sys.stderr, flush=True)
            _pending["line"] = ""
            return
        print(file=sys.stderr)
        _pending["line"] = ""
    if live and message.endswith(" ..."):
        print(message, end="", file=sys.stderr, flush=True)
        _pending["line"] = message[:-4]
        return
    print(message, file=sys.stderr, flush=True)


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.plan_render import render_json, render_text
    from harness.planner import build_plan

    plan = build_plan(_runbook_path(args.runbook), args.profile)
    print(render_json(plan) if args.json else render_text(plan))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.run import run

    if args.config:
        config = _staging_config(args)
        if config.is_fleet:
            from harness.fleet import run_fleet

            return run_fleet(config, _line_progress, jobs=_jobs(args))
        return run(config.to_run_options(config.hosts[0]), _progress)
    if args.jobs is not None:
        raise UsageError("--jobs: only with --config, for the hosts of a fleet judged at the same time",
                         hint="drop --jobs, or give --config FILE listing several hosts")
    return run(run_options(args), _progress)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value is not None else None


def run_options(args: argparse.Namespace) -> RunOptions:
    """`run`'s flags (no --config) as RunOptions; every value checked before anything runs."""
    from harness import staging as st
    from harness.run import RunOptions

    backend = args.backend or "docker"
    target = ""
    if args.target is not None:
        parsed = st.check_target(args.target, "--target")
        if args.backend and args.backend != parsed.scheme:
            raise UsageError(f"--backend {args.backend} contradicts --target {args.target}",
                             hint="drop --backend: the target decides the backend")
        backend = parsed.scheme
        target = str(parsed) if parsed.scheme not in st.LAB_SCHEMES else ""
    identity = _path(args.identity_file)
    known_hosts = _path(args.known_hosts)
    ca_file = _path(args.ca_file)
    options = RunOptions(
        runbook=_runbook_path(args.runbook), profile=args.profile or "default", backend=backend,
        spacetimedb=args.spacetimedb or "standin",
        report_dir=Path(args.report_dir) if args.report_dir else default_report_dir(),
        suites=st.check_suites([s for s in (args.suites or "").split(",") if s], "--suites"), keep_lab=args.keep_lab,
        fail_on=args.fail_on or "error", mutate_host=_mutate_host(args.mutate_host), target=target,
        url=st.check_url(args.url, "--url") if args.url is not None else "",
        database=st.check_database(args.database, "--database") if args.database is not None else "",
        identity_file=st.check_identity_file(identity, "--identity-file") if identity else None,
        known_hosts=known_hosts, accept_new_host_key=args.accept_new_host_key, allow_mutation=args.allow_mutation,
        vantage=st.check_vantage(args.vantage, "--vantage") if args.vantage is not None else "",
        expected_version=st.check_version(args.expected_version, "--expected-version")
        if args.expected_version is not None else "",
        resolve=st.check_resolve_items(args.resolve or [], "--resolve"),
        ca_file=st.check_ca_file(ca_file, "--ca-file") if ca_file else None,
        aws_region=_aws_region(args), aws_profile=getattr(args, "aws_profile", None) or "",
        from_checkpoint=bool(getattr(args, "from_checkpoint", False)),
        save_checkpoint=_save_checkpoint(getattr(args, "save_checkpoint", None)),
    )
    if (options.from_checkpoint or options.save_checkpoint is not None) and options.target.startswith("ssh"):
        raise UsageError("--from-checkpoint/--save-checkpoint are for lab hosts the kit builds, not --target ssh://",
                         hint="leave them out for an existing host")
    if (options.aws_region or options.aws_profile) and not options.target:
        raise UsageError("--aws-region/--aws-profile read a real account: only for a host the kit did not build "
                         "(--target ssh://...)", hint="a lab run's AWS account is simulated from the runbook")
    if options.aws_profile and not options.aws_region:
        raise UsageError("--aws-profile needs --aws-region", hint="--aws-region us-east-1 (the volume's region)")
    st.check_combination(options, _flag)
    return options


def _aws_region(args: argparse.Namespace) -> str:
    region = getattr(args, "aws_region", None) or ""
    if region and not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", region):
        raise UsageError(f"--aws-region {region!r} is not an AWS region", hint="e.g. --aws-region eu-west-1")
    return region


def _jobs(args: argparse.Namespace) -> int | None:
    from harness.staging import check_jobs

    return check_jobs(args.jobs, "--jobs") if args.jobs is not None else None


def _staging_config(args: argparse.Namespace) -> StagingConfig:
    """The config with the flags given beside --config in place of its defaults (a host's own table still wins);
    every host's options are checked here, before any host is judged."""
    from harness import staging as st

    for field in ("target", "url", "database", "mutate_host"):
        if getattr(args, field) is not None:
            raise UsageError(f"{_flag(field)}: not with --config (each host's target, url and database are in "
                             "the file)",
                             hint=f"drop {_flag(field)}, or set it in the host's [[hosts]] table")
    _jobs(args)
    config = st.load_config(Path(args.config).expanduser())
    identity, known_hosts, ca_file = _path(args.identity_file), _path(args.known_hosts), _path(args.ca_file)
    overrides: dict[str, Any] = {
        "runbook": _runbook_path(args.runbook) if args.runbook else None, "profile": args.profile,
        "suites": st.check_suites([s for s in args.suites.split(",") if s], "--suites") if args.suites else None,
        "allow_mutation": True if args.allow_mutation else None,
        "accept_new_host_key": True if args.accept_new_host_key else None,
        "expected_version": st.check_version(args.expected_version, "--expected-version")
        if args.expected_version is not None else None,
        "vantage": st.check_vantage(args.vantage, "--vantage") if args.vantage is not None else None,
        "identity_file": st.check_identity_file(identity, "--identity-file") if identity else None,
        "known_hosts": known_hosts, "fail_on": args.fail_on, "spacetimedb": args.spacetimedb,
        "report_dir": Path(args.report_dir) if args.report_dir else None,
        "resolve": st.check_resolve_items(args.resolve, "--resolve") if args.resolve else None,
        "ca_file": st.check_ca_file(ca_file, "--ca-file") if ca_file else None,
        "keep_lab": True if args.keep_lab else None,
    }
    config = config.with_overrides(overrides)
    for host in config.hosts:
        if args.backend and args.backend != host.scheme:
            raise UsageError(f"--backend {args.backend} contradicts host {host.name!r} of {config.path} "
                             f"(target {host.target})", hint="drop --backend: each host's target decides its backend")
        config.to_run_options(host)
    return config


def _line_progress(message: str) -> None:
    """Progress on stderr, every line kept (several hosts write at once)."""
    print(message, file=sys.stderr, flush=True)


def _mutate_host(value: str | None) -> Path | None:
    """`run --mutate-host FILE.json` (hidden; the selftest's host-state mutants), checked before any lab work."""
    if not value:
        return None
    from harness.host_mutants import load_host_mutants

    load_host_mutants(Path(value))
    return Path(value)


def cmd_selftest(args: argparse.Namespace) -> int:
    from harness.selftest.runner import selftest

    return selftest(args, _progress)


def _lab_hosts() -> Any:
    """harness.lab_hosts, imported when a `lab` subcommand runs."""
    try:
        return importlib.import_module("harness.lab_hosts")
    except ModuleNotFoundError as exc:
        if exc.name != "harness.lab_hosts":
            raise
        raise UsageError("the lab subcommands are not available in this version of the kit (no harness.lab_hosts)",
                         hint="update the kit, or use `run --keep-lab`") from None


def cmd_lab_up(args: argparse.Namespace) -> int:
    from harness.run import RunOptions

    options = RunOptions(runbook=_runbook_path(args.runbook), profile=args.profile, backend=args.backend,
                         spacetimedb=args.spacetimedb, keep_lab=True,
                         report_dir=Path(args.report_dir) if args.report_dir else default_report_dir())
    result = _lab_hosts().lab_up(options, _progress)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def _save_checkpoint(value: str | None) -> str | None:
    if value is None:
        return None
    from harness.checkpoint_run import parse_save_at

    parse_save_at(value)  # a bad value is one line before any lab work
    return value


def cmd_lab_list(args: argparse.Namespace) -> int:
    rows = list(_lab_hosts().lab_list())
    print(json.dumps(rows, default=str) if args.json else lab_table(rows))
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    if not args.run_id.strip():
        raise UsageError("lab down: no run id", hint="give a run id shown by `stdb-conformance lab list`")
    _lab_hosts().lab_down(args.run_id.strip(), _progress)
    return 0


LAB_COLUMNS = (("run id", "run_id"), ("backend", "backend"), ("target", "target"), ("url", "url"), ("age", "age"))


def lab_table(rows: list[dict[str, Any]], now: float | None = None) -> str:
    """`lab list`: one line per lab host kept up."""
    if not rows:
        return "no lab hosts kept up (stdb-conformance lab up --runbook R)"
    now = time.time() if now is None else now
    cells = [[h for h, _ in LAB_COLUMNS]]
    for row in rows:
        cells.append([_age(row, now) if key == "age" else str(row.get(key) or "-") for _, key in LAB_COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(LAB_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _age(row: dict[str, Any], now: float) -> str:
    """A row's age: `age` (seconds, or text as given), else from `since`/`started`/`created` (epoch or ISO)."""
    import datetime as dt

    value = row.get("age")
    if isinstance(value, str) and value:
        return value
    seconds: float | None = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    for key in ("since", "started", "created"):
        stamp = row.get(key)
        if seconds is not None or stamp in (None, ""):
            continue
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            seconds = now - float(stamp)
        elif isinstance(stamp, str):
            try:
                when = dt.datetime.fromisoformat(stamp)
            except ValueError:
                continue
            seconds = now - (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.lab.cleanup import clean

    removed = clean(all_runs=args.all, progress=_progress)
    _progress(f"clean: removed {len(removed)} resource(s)")
    return 0


def runbook_args(p: argparse.ArgumentParser, profile_default: str | None = "default") -> None:
    p.add_argument("--runbook", help="path to the runbook Markdown (default: $STDB_RUNBOOK)")
    p.add_argument("--profile", default=profile_default,
                   help="built-in profile name or path to a profile .toml (default: default)")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """`run`'s flags (also `upgrade-rehearsal`'s)."""
    runbook_args(p, profile_default=None)  # None: not given (a --config file's default stays)
    p.add_argument("--backend", default=None, choices=["docker", "vm"],
                       help="the lab backend (default: docker); --target, when given, decides it instead")
    p.add_argument("--spacetimedb", default=None, choices=["standin", "real"],
                       help="stand-in served by the lab mirror (default) or the real install URL")
    p.add_argument("--report-dir", default=None,
                       help="where the reports go (default: reports/out under the current directory; with a "
                            "fleet, one folder per host in it, and fleet.json / fleet.md)")
    p.add_argument("--suites", help="comma-separated suites to run (default: all)")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab running (debugging)")
    p.add_argument("--fail-on", default=None, choices=["error", "warning", "never"],
                       help="finding severity that fails the verdict (default: error)")
    p.add_argument("--mutate-host", help=argparse.SUPPRESS)  # selftest only (harness/host_mutants.py)
    kept = p.add_argument_group(
        "checkpoints", "lab hosts only (docker): a run may start from the host as a stored checkpoint left it after\n"
                       "the plan's first steps (the report lists those steps as replayed); selftest and CI use them")
    start = kept.add_mutually_exclusive_group()
    start.add_argument("--fresh", action="store_true",
                       help="run every step on a fresh host (the default)")
    start.add_argument("--from-checkpoint", action="store_true",
                       help="start from the stored checkpoint of the longest prefix of this plan, when there is one")
    kept.add_argument("--save-checkpoint", nargs="?", const="", default=None, metavar="K,...",
                      help="keep checkpoints of this run's host: after the longest prefix that can be kept, and "
                           "also after the first K steps for each K given")
    existing = p.add_argument_group(
        "the target", "a lab host the kit builds (docker://, vm://) or a host that already exists (ssh://);\n"
                      "on an existing host nothing is applied: the runbook is the plan of what the host should be")
    existing.add_argument("--target", metavar="URL",
                          help="docker://, vm:// or ssh://user@host[:port] (decides the backend; --backend must "
                               "not say otherwise)")
    existing.add_argument("--url", metavar="https://DOMAIN",
                          help="the site the host serves (required with ssh://; https, a host name, no path)")
    existing.add_argument("--database", metavar="NAME",
                          help="an existing database to query and subscribe to, read-only (default: a probe database)")
    existing.add_argument("--identity-file", metavar="FILE", help="ssh private key (must exist and be readable)")
    existing.add_argument("--known-hosts", metavar="FILE", help="ssh known_hosts file (default: the user's)")
    existing.add_argument("--accept-new-host-key", action="store_true",
                          help="trust the host key on first contact (said in the report)")
    existing.add_argument("--allow-mutation", action="store_true",
                          help="ssh:// only: also run the checks that change the host (restarts, kill -9, writes); "
                               "without it they are not-applicable. On lab backends the kit may always change its "
                               "own host, so the flag changes nothing there")
    existing.add_argument("--aws-region", metavar="REGION",
                          help="read the real AWS account of an existing host (read only: Describe/List/Get calls "
                               "only) for the aws_backup suite: the plan, the selection covering the volume behind "
                               "/stdb, recovery points within the RPO, restore testing")
    existing.add_argument("--aws-profile", metavar="NAME",
                          help="the ~/.aws/config profile to read it with (default: the usual credential chain)")
    existing.add_argument("--vantage", metavar="URL",
                          help="where the remote checks run from: \"\" = this machine (default), or "
                               "ssh://user@host[:port]")
    existing.add_argument("--expected-version", metavar="V", help="the SpacetimeDB version the host should run")
    existing.add_argument("--resolve", metavar="NAME=ADDRESS", action="append",
                          help="the vantage reaches NAME at ADDRESS (an IP), instead of asking DNS; repeatable")
    existing.add_argument("--ca-file", metavar="FILE",
                          help="a PEM bundle the vantage trusts besides the system's (e.g. a kept lab host's CA)")
    staging = p.add_argument_group(
        "staging configs", "one host or a fleet in a TOML file (docs/staging.md). Which value wins: a host's own\n"
                           "table, then a flag given with --config, then the file's top-level defaults, then the\n"
                           "kit's defaults. --target, --url and --database are not taken with --config.")
    staging.add_argument("--config", metavar="FILE", help="judge the host(s) of this staging .toml")
    staging.add_argument("--jobs", metavar="N",
                         help="with --config: hosts judged at the same time (default: the file's jobs, else 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stdb-conformance",
        description="Apply the SpacetimeDB self-hosting runbook to a fresh Ubuntu 24.04 lab host and "
                    "prove the result with evidence.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)

    p_plan = sub.add_parser("plan", help="print the plan: every step, kind, section, line, substitution")
    runbook_args(p_plan)
    p_plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    p_plan.set_defaults(func=cmd_plan)

    from harness.fleet import FLEET_EXIT_HELP

    p_run = sub.add_parser("run", help="bring up a lab (or reach an existing host), apply the runbook, run the "
                                       "suites, write reports",
                           description=RUN_DESCRIPTION, epilog=f"{EXIT_CODES}\n\n{FLEET_EXIT_HELP}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(p_run)
    p_run.set_defaults(func=cmd_run)

    p_ur = sub.add_parser("upgrade-rehearsal", help="rehearse the runbook's update section with data: observe, "
                          "update, compare, go back (suites service, routes, tls, upgrade)",
                          description=UPGRADE_REHEARSAL_DESCRIPTION, epilog=EXIT_CODES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(p_ur)
    backup = p_ur.add_argument_group("a host that already exists: its data first")
    backup.add_argument("--snapshot-volume", metavar="VOLUME_ID",
                        help="snapshot this EBS volume (the data volume) through the AWS API before any change")
    backup.add_argument("--i-have-a-backup", action="store_true",
                        help="the data volume is backed up already: go on without a snapshot")
    p_ur.set_defaults(func=cmd_upgrade_rehearsal)

    from harness.selftest.runner import EXIT_HELP, add_arguments

    p_selftest = sub.add_parser("selftest", help="mutation self-test: known defects must turn their checks red",
                                epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p_selftest)
    p_selftest.set_defaults(func=cmd_selftest)

    p_lab = sub.add_parser("lab", help="lab hosts kept up to be judged later as existing hosts: up, list, down")
    lab_sub = p_lab.add_subparsers(dest="lab_command", required=True)
    p_up = lab_sub.add_parser("up", help="bring up a lab host, apply the runbook, keep it running")
    runbook_args(p_up)
    p_up.add_argument("--backend", default="docker", choices=["docker", "vm"])
    p_up.add_argument("--spacetimedb", default="standin", choices=["standin", "real"],
                      help="stand-in served by the lab mirror (default) or the real install URL")
    p_up.add_argument("--json", action="store_true", help="print the host (run id, target, url, ...) as JSON")
    p_up.add_argument("--report-dir", default=None, help="where the bring-up's report goes (default ./reports/out)")
    p_up.set_defaults(func=cmd_lab_up)
    p_list = lab_sub.add_parser("list", help="the lab hosts kept up: run id, backend, target, url, age")
    p_list.add_argument("--json", action="store_true", help="print them as a JSON list")
    p_list.set_defaults(func=cmd_lab_list)
    p_down = lab_sub.add_parser("down", help="remove a lab host kept up")
    p_down.add_argument("run_id", metavar="RUN_ID", help="its run id (stdb-conformance lab list)")
    p_down.set_defaults(func=cmd_lab_down)

    p_staging = sub.add_parser("staging", help="for staging hosts: `staging sudoers` prints a sudoers drop-in for a "
                                               "read-only audit user")
    staging_sub = p_staging.add_subparsers(dest="staging_command", required=True)
    p_sudoers = staging_sub.add_parser("sudoers", help="print a sudoers drop-in that lets USER run exactly the "
                                                       "kit's read-only catalogue (as root or the service user)")
    p_sudoers.add_argument("--user", default="stdbc-audit", help="the audit user (default: stdbc-audit)")
    p_sudoers.add_argument("--service-user", default="spacetimedb",
                           help="the user the service runs as (default: spacetimedb)")
    p_sudoers.set_defaults(func=cmd_staging_sudoers)

    p_diff = sub.add_parser("diff", help="compare two finished runs (report dirs): checks whose outcome changed, "
                                         "findings and root causes added or gone, timings; exit 0 when B has no "
                                         "new failure")
    p_diff.add_argument("a", metavar="A", help="the report dir of the earlier run")
    p_diff.add_argument("b", metavar="B", help="the report dir of the later run (e.g. after a fix to the runbook)")
    p_diff.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p_diff.set_defaults(func=cmd_diff)

    p_judge = sub.add_parser("judge", help="judge a finished run again from its recording (REPORT_DIR/histories: "
                                           "the suites' tapes), without a lab; writes the same reports")
    p_judge.add_argument("report_dir", metavar="REPORT_DIR", help="the report dir of a finished run")
    p_judge.add_argument("--out", metavar="DIR", help="where the new reports go (default: REPORT_DIR/judged)")
    p_judge.set_defaults(func=cmd_judge)

    p_clean = sub.add_parser("clean", help="remove lab resources left by dead runs")
    p_clean.add_argument("--all", action="store_true", help="also remove resources of live runs")
    p_clean.set_defaults(func=cmd_clean)
    return parser


REHEARSAL_SUITES = "service,routes,tls,upgrade"
UPGRADE_REHEARSAL_DESCRIPTION = """\
Rehearse the runbook's update section (Step 6) with data, before doing it in production: the read-only checks
(service, routes, tls), then the rehearsal (harness/scenarios/upgrade.py): a database seeded and fingerprinted,
the update steps verbatim with the downtime measured, the same observations and fingerprint again, then the
runbook's specific-version step back to the starting version. The report's "Upgrade rehearsal" section has the
versions, each stage, the data comparison, the downtime and the rollback's outcome.

On a lab backend the kit builds the host. On ssh:// it changes a host the kit did not build, so it needs
--allow-mutation, and its data first: --snapshot-volume vol-... (an EBS snapshot, boto3) or --i-have-a-backup."""


def cmd_upgrade_rehearsal(args: argparse.Namespace) -> int:
    from harness import staging as st

    if args.config:
        raise UsageError("upgrade-rehearsal: --config is not taken (one host at a time)",
                         hint="give --target ssh://user@host --url https://DOMAIN, or a lab --backend")
    existing = args.target is not None and st.check_target(args.target, "--target").scheme not in st.LAB_SCHEMES
    if existing:
        if not args.allow_mutation:
            raise UsageError("upgrade-rehearsal changes the host (stops, upgrades, restarts, goes back): on ssh:// "
                             "it needs --allow-mutation", hint="add --allow-mutation, on a staging host only")
        if not (args.snapshot_volume or args.i_have_a_backup):
            raise UsageError("upgrade-rehearsal on an existing host needs its data backed up first",
                             hint="--snapshot-volume vol-... (EBS, through the AWS API) or --i-have-a-backup")
        if args.snapshot_volume:
            _snapshot_volume(args.snapshot_volume)
    if not args.suites:
        args.suites = REHEARSAL_SUITES
    return cmd_run(args)


def _snapshot_volume(volume: str) -> None:
    if not volume.startswith("vol-"):
        raise UsageError(f"--snapshot-volume {volume!r} is not an EBS volume id", hint="vol-0123456789abcdef0")
    try:
        import boto3
    except ImportError:
        raise UsageError("--snapshot-volume needs the aws extra (boto3)",
                         hint="pip install 'stdb-conformance[aws]', or take the snapshot yourself and pass "
                              "--i-have-a-backup") from None
    try:
        snap = boto3.client("ec2").create_snapshot(VolumeId=volume,
                                                    Description="stdb-conformance upgrade-rehearsal")
    except Exception as exc:  # noqa: BLE001 - any AWS error is one line and stops before any change
        raise UsageError(f"--snapshot-volume {volume}: the snapshot could not be started: {exc}",
                         hint="check the AWS credentials and region, or pass --i-have-a-backup") from None
    print(f"upgrade-rehearsal: snapshot {snap.get('SnapshotId')} of {volume} started (state {snap.get('State')})",
          flush=True)


def cmd_staging_sudoers(args: argparse.Namespace) -> int:
    from harness.backends.sudoers import drop_in

    try:
        text = drop_in(args.user, service_user=args.service_user)
    except ValueError as exc:
        raise UsageError(str(exc), hint="--user NAME, --service-user NAME") from None
    sys.stdout.write(text)
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from harness.judge import judge, outcome_counts

    report_dir = Path(args.report_dir)
    print(f"judging {report_dir} again from its recording (no lab)", flush=True)
    done = judge(report_dir, Path(args.out) if args.out else None)
    counts = ", ".join(f"{n} {o}" for o, n in outcome_counts(done.report.checks).items())
    print(f"suites replayed: {', '.join(done.suites) or 'none'}; {len(done.report.checks)} checks: {counts}")
    if done.changed:
        print(f"{len(done.changed)} outcome(s) differ from the recorded run:")
        for check_id, was, now in done.changed:
            print(f"  {check_id}: {was} -> {now}")
    else:
        print("every outcome as recorded")
    print(f"verdict: {done.report.verdict().upper()}; reports: {done.paths['markdown'].parent}")
    return VERDICT_EXIT[done.report.verdict()]


def cmd_diff(args: argparse.Namespace) -> int:
    from harness.report_diff import diff_command

    return diff_command(Path(args.a), Path(args.b), args.json)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KitError as exc:
        print(f"stdb-conformance: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stdb-conformance: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"stdb-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
