"""The `stdb-conformance` command: plan, run, clean."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.errors import EXIT_USAGE, KitError, UsageError

DEFAULT_RUNBOOK_HINT = "pass --runbook PATH or set STDB_RUNBOOK"


def _runbook_path(value: str | None) -> Path:
    raw = value or os.environ.get("STDB_RUNBOOK")
    if not raw:
        raise UsageError("no runbook given", hint=DEFAULT_RUNBOOK_HINT)
    path = Path(raw).expanduser()
    if not path.is_file():
        raise UsageError(f"runbook not found: {raw}", hint=DEFAULT_RUNBOOK_HINT)
    return path


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
        spacetimedb=args.spacetimedb, report_dir=Path(args.report_dir),
        suites=[s for s in (args.suites or "").split(",") if s], keep_lab=args.keep_lab,
        fail_on=args.fail_on,
    )
    return run(options, _progress)


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.lab.cleanup import clean

    removed = clean(all_runs=args.all, progress=_progress)
    _progress(f"clean: removed {len(removed)} resource(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from harness.run import REPO_ROOT

    parser = argparse.ArgumentParser(
        prog="stdb-conformance",
        description="Apply the SpacetimeDB self-hosting runbook to a fresh Ubuntu 24.04 lab host and "
                    "prove the result with evidence.")
    sub = parser.add_subparsers(dest="command", required=True)

    def runbook_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--runbook", help="path to the runbook Markdown (default: $STDB_RUNBOOK)")
        p.add_argument("--profile", default="default",
                       help="built-in profile name or path to a profile .toml (default: default)")

    p_plan = sub.add_parser("plan", help="print the plan: every step, kind, section, line, substitution")
    runbook_args(p_plan)
    p_plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    p_plan.set_defaults(func=cmd_plan)

    p_run = sub.add_parser("run", help="bring up a lab, apply the runbook, run the suites, write reports")
    runbook_args(p_run)
    p_run.add_argument("--backend", default="docker", choices=["docker", "vm"])
    p_run.add_argument("--spacetimedb", default="standin", choices=["standin", "real"],
                       help="stand-in served by the lab mirror (default) or the real install URL")
    p_run.add_argument("--report-dir", default=str(REPO_ROOT / "reports" / "out"))
    p_run.add_argument("--suites", help="comma-separated suites to run (default: all)")
    p_run.add_argument("--keep-lab", action="store_true", help="leave the lab running (debugging)")
    p_run.add_argument("--fail-on", default="error", choices=["error", "warning", "never"],
                       help="finding severity that fails the verdict (default: error)")
    p_run.set_defaults(func=cmd_run)

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
