#!/usr/bin/env python3
"""Benchmark full conformance runs and print where the time goes (markdown).

    python scripts/benchmark.py --runs 2 [--cold] [-- extra args for `stdb-conformance run`]

Each run writes its report into its own folder under --out; the table shows every phase's time per
run and the median, the apply time of the runbook's own commands vs the kit's own time, the run's time
by kind (runbook, boots, probes, lab setup, idle: the report's `time_by_kind`), and the slowest runbook
steps. `--cold` removes the cached base image first (the first run then builds it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from harness.time_ledger import KINDS  # noqa: E402 - the checkout's own kit, whatever is installed


def run_once(out: Path, extra: list[str]) -> tuple[dict, float, int]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--report-dir", str(out), *extra], cwd=REPO)
    wall = time.monotonic() - started
    report = json.loads((out / "conformance.json").read_text())
    return report, wall, proc.returncode


def kit_vs_runbook(report: dict, wall: float) -> tuple[float, float]:
    runbook = sum(s["duration"] for s in report.get("step_timings", []))
    return runbook, wall - runbook


def render(results: list[tuple[dict, float, int]]) -> str:
    phases: list[str] = []
    for report, _, _ in results:
        for name in report["timings"]:
            if name not in phases:
                phases.append(name)
    head = "| phase | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " | median |"
    lines = [head, "|---" * (len(results) + 2) + "|"]
    kinds = [f"(by kind: {k})" for k in KINDS]
    for name in phases + ["(whole run, wall)", "(runbook commands)", "(kit's own time)"] + kinds:
        values = []
        for report, wall, _ in results:
            runbook, kit = kit_vs_runbook(report, wall)
            by_kind = {f"(by kind: {k})": v for k, v in
                       ((report.get("time_by_kind") or {}).get("by_kind") or {}).items()}
            values.append({"(whole run, wall)": wall, "(runbook commands)": runbook,
                           "(kit's own time)": kit, **by_kind}.get(name, report["timings"].get(name, 0.0)))
        cells = " | ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {cells} | {statistics.median(values):.1f} |")
    last = results[-1][0]
    slow = sorted(last.get("step_timings", []), key=lambda s: -s["duration"])[:8]
    lines += ["", "Slowest runbook steps (last run):", "", "| step | seconds | status |", "|---|---|---|"]
    lines += [f"| {s['summary'][:80]} | {s['duration']:.1f} | {s['status']} |" for s in slow]
    verdicts = ", ".join(f"{r['verdict']} (exit {code})" for r, _, code in results)
    lines += ["", f"Verdicts: {verdicts}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="drop the cached base image before the first run")
    parser.add_argument("--out", default=str(REPO / "reports" / "out" / "bench"))
    parser.add_argument("extra", nargs="*", help="arguments passed to `stdb-conformance run` (after --)")
    args = parser.parse_args()
    if args.cold:
        from harness.lab.image import drop_cached_images

        drop_cached_images()
    results = [run_once(Path(args.out) / f"run-{i + 1}", args.extra) for i in range(args.runs)]
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
