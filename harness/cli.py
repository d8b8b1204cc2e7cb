"""The `stdb-conformance` command: plan, run, clean."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import EXIT_USAGE, KitError, UsageError
from harness.paths import default_report_dir, default_runbook

DEFAULT_RUNBOOK_HINT = "pass --runbook PATH or set STDB_RUNBOOK"

EXIT_CODES = """exit codes:
  0    pass: every required check passed, no finding at --fail-on severity
  1    fail: a check failed, or a finding at --fail-on severity
  2    usage or configuration error (bad argument, runbook, profile, missing extra)
  3    lab error: the lab could not be brought up (docker, qemu, image, keyring)
  4    incomplete: nothing failed, but a required check could not be decided on this backend
  130  interrupted (Ctrl-C or SIGTERM): the report is still written and the lab removed"""


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
    from harness.run import RunOptions, run

    options = RunOptions(
        runbook=_runbook_path(args.runbook), profile=args.profile, backend=args.backend,
        spacetimedb=args.spacetimedb,
        report_dir=Path(args.report_dir) if args.report_dir else default_report_dir(),
        suites=[s for s in (args.suites or "").split(",") if s], keep_lab=args.keep_lab,
        fail_on=args.fail_on, mutate_host=_mutate_host(args.mutate_host),
    )
    return run(options, _progress)


def _mutate_host(value: str | None) -> Path | None:
    """`run --mutate-host FILE.json` (hidden; the selftest's host-state mutants), checked before any lab work."""
    if not value:
        return None
    from harness.selftest.hook import load_host_mutants

    load_host_mutants(Path(value))
    return Path(value)


def cmd_selftest(args: argparse.Namespace) -> int:
    from harness.selftest.runner import selftest

    return selftest(args, _progress)


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.lab.cleanup import clean

    removed = clean(all_runs=args.all, progress=_progress)
    _progress(f"clean: removed {len(removed)} resource(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stdb-conformance",
        description="Apply the SpacetimeDB self-hosting runbook to a fresh Ubuntu 24.04 lab host and "
                    "prove the result with evidence.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)

    def runbook_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--runbook", help="path to the runbook Markdown (default: $STDB_RUNBOOK)")
        p.add_argument("--profile", default="default",
                       help="built-in profile name or path to a profile .toml (default: default)")

    p_plan = sub.add_parser("plan", help="print the plan: every step, kind, section, line, substitution")
    runbook_args(p_plan)
    p_plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    p_plan.set_defaults(func=cmd_plan)

    p_run = sub.add_parser("run", help="bring up a lab, apply the runbook, run the suites, write reports",
                           epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    runbook_args(p_run)
    p_run.add_argument("--backend", default="docker", choices=["docker", "vm"])
    p_run.add_argument("--spacetimedb", default="standin", choices=["standin", "real"],
                       help="stand-in served by the lab mirror (default) or the real install URL")
    p_run.add_argument("--report-dir", default=None,
                       help="where the reports go (default: reports/out under the current directory)")
    p_run.add_argument("--suites", help="comma-separated suites to run (default: all)")
    p_run.add_argument("--keep-lab", action="store_true", help="leave the lab running (debugging)")
    p_run.add_argument("--fail-on", default="error", choices=["error", "warning", "never"],
                       help="finding severity that fails the verdict (default: error)")
    p_run.add_argument("--mutate-host", help=argparse.SUPPRESS)  # selftest only (harness/selftest/hook.py)
    p_run.set_defaults(func=cmd_run)

    from harness.selftest.runner import EXIT_HELP, add_arguments

    p_selftest = sub.add_parser("selftest", help="mutation self-test: known defects must turn their checks red",
                                epilog=EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p_selftest)
    p_selftest.set_defaults(func=cmd_selftest)

    p_clean = sub.add_parser("clean", help="remove lab resources left by dead runs")
    p_clean.add_argument("--all", action="store_true", help="also remove resources of live runs")
    p_clean.set_defaults(func=cmd_clean)
    return parser


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
