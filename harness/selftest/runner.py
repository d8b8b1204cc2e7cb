"""`stdb-conformance selftest`: plan the units, run each as a `python -m harness run` process, judge.

Each unit's directory (REPORT_DIR/units/<unit>/) holds what its run got (unit.json, the mutated runbook,
host.json) and what it recorded (result.json, run.log, run/ with the run's reports). selftest.json and
selftest.md in REPORT_DIR are the judgement of those records (score.py); `--merge DIR ...` judges the
records of several shards together without a lab.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import EXIT_FAIL, EXIT_PASS, KitError, UsageError
from harness.run import sigterm_as_interrupt as _sigterm_as_interrupt
from harness.selftest.catalogue import load_catalogue
from harness.selftest.groups import Unit, parse_shard, plan_units, prepare, read_runbooks, select, shard
from harness.selftest.score import SCHEMA, Judgement, UnitRecord, judge, load_unit, render_markdown, render_table

Progress = Callable[[str], None]
EXIT_INTERRUPTED = 130
CLEANUP_SECONDS = 300  # how long an interrupted child run gets to write its report and remove its lab
EXIT_HELP = """exit codes:
  0    every selected mutant detected (100%), every baseline clean, the forced-fail mutant detected, and no
       unexpected outcome
  1    a mutant missed or invalid (a lab error, checks it cannot touch red, a baseline not clean), a gate run
       failed (the selftest stops before the mutants), or any other unexpected outcome
  2    usage error, or a catalogue entry that does not fit the runbook
  130  interrupted (Ctrl-C or SIGTERM): the running lab run is stopped and cleans up first"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="docker", choices=["docker", "vm"],
                   help="run the catalogue's mutants for this backend (default: docker)")
    p.add_argument("--runbook", help="the runbook of configs marked $STDB_RUNBOOK (default: $STDB_RUNBOOK)")
    p.add_argument("--report-dir", help="where the runs and the score go (default: reports/selftest under the "
                                        "current directory)")
    p.add_argument("--only", help="comma-separated mutant ids (a config id selects all its mutants)")
    p.add_argument("--shard", help="I/N: only the units whose position modulo N is I-1 (a CI matrix job)")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="judge the report dirs of shards together (no lab)")
    p.add_argument("--jobs", type=int, default=1, help="lab runs at the same time (default: 1)")
    p.add_argument("--list", action="store_true", help="print the lab runs the selection makes, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="write every run's runbook and host commands and print its command line, without a lab")
    p.add_argument("--fresh", action="store_true",
                   help="every lab run applies every step to a fresh host (default: the baselines keep checkpoints "
                        "of their hosts and the mutants' runs start from the longest one their plan shares)")
    p.add_argument("--catalogue", help=argparse.SUPPRESS)  # another catalogue file (the kit's tests)


def selftest(args: argparse.Namespace, progress: Progress) -> int:
    report_dir = Path(args.report_dir) if args.report_dir else Path.cwd() / "reports" / "selftest"
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    if args.merge:
        if args.shard or args.only or args.list or args.dry_run:
            raise UsageError("--merge judges recorded shards: it takes no --shard, --only, --list or --dry-run")
        return merge([Path(d) for d in args.merge], report_dir, progress)
    catalogue = load_catalogue(Path(args.catalogue) if args.catalogue else None)
    only = [i for i in (args.only or "").split(",") if i] or None
    mutants = select(catalogue, args.backend, only)
    if args.runbook:
        user_runbook: Path | None = Path(args.runbook).expanduser()
    else:
        from harness.paths import default_runbook

        user_runbook = default_runbook()
    paths = read_runbooks(catalogue, mutants, user_runbook)
    texts = {cid: path.read_bytes().decode() for cid, path in paths.items()}
    units = plan_units(catalogue, mutants, texts, paths)
    chosen = shard(units, *parse_shard(args.shard)) if args.shard else units
    sentinel = catalogue.sentinel(args.backend)
    plan = _plan_record(units, args.backend, sentinel.id if sentinel else "")
    if args.list:
        print(_listing(units, chosen, args.backend, args.shard))
        return EXIT_PASS
    report_dir.mkdir(parents=True, exist_ok=True)
    prepared: list[tuple[Unit, Path, dict[str, Any]]] = []
    for unit in chosen:
        unit_dir = report_dir / "units" / unit.id
        shutil.rmtree(unit_dir, ignore_errors=True)  # a unit's records are always this run's
        meta = prepare(unit, catalogue, paths[unit.config.id], texts[unit.config.id], args.backend, unit_dir,
                       os.environ.get("STDBC_SELFTEST_PYTHON") or sys.executable)  # the variable: kit's tests
        prepared.append((unit, unit_dir, meta))
    if not args.fresh and _can_checkpoint(args.backend):
        use_checkpoints(prepared, catalogue)
    if args.dry_run:
        for unit, _unit_dir, meta in prepared:
            env = " ".join(f"{k}={v}" for k, v in meta["env"].items())
            print(f"# {unit.describe()}\n{(env + ' ') if env else ''}{' '.join(meta['argv'])}")
        progress(f"dry run: {len(prepared)} lab run(s) prepared under {report_dir / 'units'}")
        return EXIT_PASS
    gates = [item for item in prepared if item[0].gate]
    progress(f"selftest: backend {args.backend}, {sum(len(u.members) for u in chosen)} mutant(s) in "
             f"{len(chosen)} lab run(s){f' (shard {args.shard} of {len(units)} units)' if args.shard else ''}, "
             f"jobs {args.jobs}; the {len(gates)} gate run(s) (baselines, forced-fail mutant {plan['sentinel']}) "
             f"start first, a config's mutants once the forced-fail run has ended and their baseline has kept its "
             f"checkpoints (or ended); records in {report_dir}")
    started = time.monotonic()
    interrupted = False
    stopped = ""
    chosen_ids = {u.id for u in chosen}
    planned = [p for p in plan["units"] if p["id"] in chosen_ids]
    dirs = {u.id: d for u, d, _ in prepared}

    def gate_problem(finished: set[str]) -> str:
        return _gates_failed_so_far(planned, dirs, finished, plan["sentinel"])

    waits_for = prerequisites(chosen)

    def ready(unit: Unit, finished: set[str]) -> bool:
        return all(_passed(dep, finished, dirs) for dep in waits_for.get(unit.id, set()))

    with _sigterm_as_interrupt():
        try:
            stopped = _run_all(prepared, args.jobs, progress, ready=ready, stop_when=gate_problem,
                               last=last_seconds(chosen, args.backend))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            remember_seconds(prepared, args.backend)
    # units that never started (an interrupt, a failed gate) are judged "not run"
    judgement = judge(planned, _records(prepared), plan["sentinel"])
    ran = [u.id for u, d, _ in prepared if (d / "run.log").exists()]
    data = _write(report_dir, judgement, plan, ran, args.backend, time.monotonic() - started, interrupted,
                  args.shard, stopped)
    print(render_table(judgement))
    progress(f"selftest: {data['lab_runs']} lab run(s) in {data['wall_seconds']:.0f} s; "
             f"{report_dir / 'selftest.md'}")
    if interrupted:
        return EXIT_INTERRUPTED
    if stopped:
        some = any(not u.gate for u, d, _ in prepared if (d / "run.log").exists())
        print(f"stdb-conformance: selftest stopped before {'the rest of ' if some else ''}the mutants: {stopped}",
              file=sys.stderr)
        return EXIT_FAIL
    return EXIT_PASS if judgement.ok else EXIT_FAIL


def use_checkpoints(prepared: list[tuple[Unit, Path, dict[str, Any]]], catalogue: Any) -> None:
    """Checkpoints (harness.checkpoint): each baseline keeps its host after the longest prefix it can and after
    every step count where one of its config's mutants' plans first differs from it; every other unit starts
    from the longest stored prefix of its own plan. Outcomes do not depend on it: a run whose plan matches no
    checkpoint, or whose restored host does not look as kept, runs every step."""
    baselines = {u.config.id: (u, meta) for u, _d, meta in prepared if not u.members}
    for config_id, (base_unit, base_meta) in baselines.items():
        profile = catalogue.profile_arg(base_unit.config)
        base = _plan_steps(base_meta["runbook"], profile)
        points: set[int] = set()
        for unit, _d, meta in prepared:
            if unit.config.id != config_id or not unit.members:
                continue
            if meta["runbook"] != base_meta["runbook"]:
                steps = _plan_steps(meta["runbook"], profile)
                same = next((n for n, (a, b) in enumerate(zip(base, steps, strict=False)) if a != b),
                            min(len(base), len(steps)))
                if 0 < same < len(base):
                    points.add(same)
            meta["argv"].append("--from-checkpoint")
        base_meta["argv"] += ["--save-checkpoint", ",".join(str(n) for n in sorted(points))]
    for _unit, unit_dir, meta in prepared:
        (unit_dir / "unit.json").write_text(json.dumps(meta, indent=1))


def _can_checkpoint(scheme: str) -> bool:
    from harness.backends import backend_class
    from harness.backends.base import Capability

    return Capability.CHECKPOINT in backend_class(scheme).capabilities


def _plan_steps(runbook: str, profile: str) -> list[str]:
    """The apply phase's steps of a unit's plan, each as its exact record ([] when it has none: the run says
    what is wrong)."""
    from harness.planner import build_plan

    try:
        plan = build_plan(Path(runbook), profile)
    except KitError:
        return []
    return [json.dumps(st.to_dict(), sort_keys=True) for st in plan.runnable("apply")]


def _records(prepared: list[tuple[Unit, Path, dict[str, Any]]]) -> dict[str, list[UnitRecord]]:
    return {u.id: [load_unit(d)] for u, d, _ in prepared if (d / "run.log").exists()}


def prerequisites(units: list[Unit]) -> dict[str, set[str]]:
    """What each unit waits for: a group for its config's baseline (its mutants are judged against it, and
    start from its checkpoints: once the baseline has kept them it need not have ended) and the forced-fail unit
    (a lab whose checks cannot fail makes every run pointless); a gate for nothing."""
    ids = {u.id for u in units}
    sentinel_units = {u.id for u in units if u.gate and u.members}
    return {u.id: ({f"{u.config.id}.baseline"} & ids) | sentinel_units if not u.gate else set() for u in units}


def _passed(dep: str, finished: set[str], dirs: dict[str, Path]) -> bool:
    """A unit waited for has ended, or it is a baseline whose apply phase has ended with its checkpoints kept
    (the file says which; a baseline not asked to keep any is waited for to the end)."""
    from harness.checkpoint_run import KEPT_FILE

    return dep in finished or (dep.endswith(".baseline") and (dirs[dep] / "run" / KEPT_FILE).exists())


def _gates_failed_so_far(planned: list[dict[str, Any]], dirs: dict[str, Path], finished: set[str],
                         sentinel: str) -> str:
    """Why the finished gate runs forbid starting any more unit (one line), or "". The forced-fail unit is
    judged once its config's baseline has finished too."""
    baseline_of = {p["config"]: p["id"] for p in planned if not p["members"]}
    judged = [p for p in planned if p["gate"] and p["id"] in finished
              and (not p["members"] or baseline_of.get(p["config"]) in finished)]
    if not judged:
        return ""
    with_sentinel = any(sentinel in p["members"] for p in judged)
    records = {p["id"]: [load_unit(dirs[p["id"]])] for p in judged if (dirs[p["id"]] / "run.log").exists()}
    return _gates_failed(judge(judged, records, sentinel if with_sentinel else ""))


def _gates_failed(gates: Judgement) -> str:
    """Why the gate runs forbid judging any mutant (one line), or ""."""
    for baseline in gates.baselines:
        if not baseline["clean"]:
            why = baseline.get("why") or f"red: {', '.join(baseline['red'])}"
            return (f"the baseline {baseline['unit']} is not clean ({why}); every mutant of it would be judged "
                    f"against a broken lab: fix the lab or the config first (see its run.log)")
    if not gates.sentinel_detected:
        found = next((m for m in gates.mutants if m["id"] == gates.sentinel), None)
        why = f"{found['status']}: {found['why']}" if found else "not run"
        return (f"the forced-fail mutant {gates.sentinel} was not detected ({why}): the checks cannot fail in "
                f"this lab, so no detection would mean anything")
    return ""


# ---------------------------------------------------------------- plan records


def _plan_record(units: list[Unit], backend: str, sentinel: str) -> dict[str, Any]:
    items = [{"id": u.id, "config": u.config.id, "members": [m.id for m in u.members], "gate": u.gate}
             for u in units]
    fingerprint = hashlib.sha256(json.dumps([backend, items, sentinel], sort_keys=True).encode()).hexdigest()[:16]
    return {"backend": backend, "units": items, "fingerprint": fingerprint, "sentinel": sentinel}


def _listing(units: list[Unit], chosen: list[Unit], backend: str, shard_arg: str | None) -> str:
    lines = [f"backend {backend}: {sum(len(u.members) for u in units)} mutant(s), {len(units)} lab run(s)"
             + (f"; shard {shard_arg}: {len(chosen)} of them" if shard_arg else "")]
    for n, unit in enumerate(units):
        mark = " " if unit in chosen else "-"
        lines.append(f"{mark} [{n}] {unit.describe()}{' (gate: runs first)' if unit.gate else ''}")
        for member in unit.members:
            extra = f"; may also fail: {', '.join(member.may_also_fail)}" if member.may_also_fail else ""
            extra += "; forced-fail mutant" if member.sentinel else ""
            lines.append(f"        {member.id} ({member.kind}): red {', '.join(member.expect_red)}{extra}")
    return "\n".join(lines)


# ---------------------------------------------------------------- running


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    from harness.paths import PACKAGE_DIR

    pythonpath = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **extra, "PYTHONPATH": pythonpath}


# Typical seconds of a suite (with its scenario) in one docker lab run, from the selftest's own unit reports
# (docs/benchmarks.md); only the order of the runs uses them, never a verdict.
SUITE_SECONDS = {"backup_restore": 55.0, "upgrade": 18.0, "service": 13.0, "routes": 10.0, "tls": 9.0,
                 "firewall": 6.0, "operator": 4.0, "mounts": 2.0}
APPLY_SECONDS = 35.0  # lab up, the runbook's apply phase, facts, teardown


SECONDS_FILE = "seconds.json"  # in the cache's `selftest` part: how long each unit's run took last time


def expected_seconds(unit: Unit) -> float:
    return APPLY_SECONDS + sum(SUITE_SECONDS.get(suite, 10.0) for suite in unit.suites)


def unit_key(unit: Unit, backend: str) -> str:
    """A unit by what it runs (not its position in the plan, which a catalogue change shifts)."""
    return f"{backend}:{unit.config.id}:{','.join(m.id for m in unit.members) or 'baseline'}"


def _seconds_path() -> Path:
    from harness.cache import cache_part

    return cache_part("selftest") / SECONDS_FILE


def last_seconds(units: list[Unit], backend: str) -> dict[str, float]:
    """unit id -> how long its run took the last time this machine ran it (absent: never, or unreadable)."""
    try:
        known = json.loads(_seconds_path().read_text())
    except (OSError, ValueError, KitError):
        return {}
    if not isinstance(known, dict):
        return {}
    found = {u.id: known.get(unit_key(u, backend)) for u in units}
    return {uid: float(s) for uid, s in found.items() if isinstance(s, int | float) and s > 0}


def remember_seconds(prepared: list[tuple[Unit, Path, dict[str, Any]]], backend: str) -> None:
    """Keep how long each finished run took, for the next selftest's order (never for a verdict)."""
    try:
        path = _seconds_path()
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        for unit, unit_dir, _meta in prepared:
            result = load_unit(unit_dir).result if (unit_dir / "result.json").exists() else None
            if result and not result.get("interrupted") and isinstance(result.get("seconds"), int | float):
                known[unit_key(unit, backend)] = result["seconds"]
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(known, indent=1, sort_keys=True))
        partial.replace(path)
    except (OSError, KitError):
        pass  # only the order of a later selftest would have used it


def longest_first(prepared: list[tuple[Unit, Path, dict[str, Any]]],
                  seconds: dict[str, float] | None = None) -> list[tuple[Unit, Path, dict[str, Any]]]:
    """The runs in the order that ends soonest with several at a time: longest first (stable), by how long each
    took last time (`seconds`, unit id -> s) where known, else by an estimate from its suites."""
    known = seconds or {}
    return sorted(prepared, key=lambda item: -known.get(item[0].id, expected_seconds(item[0])))


def _run_all(prepared: list[tuple[Unit, Path, dict[str, Any]]], jobs: int, progress: Progress,
             ready: Callable[[Unit, set[str]], bool] | None = None,
             stop_when: Callable[[set[str]], str] | None = None, last: dict[str, float] | None = None) -> str:
    """Run the units, at most `jobs` at a time: the gates first, then the rest, each once `ready(unit, finished
    ids)`; with several jobs the longest first (`last`: unit id -> the seconds its run took last time). After
    each run `stop_when(finished ids)` may give a reason to start nothing more (the runs under way end
    normally); it is returned ("" when every unit ran). On an interrupt every running child gets one SIGINT (its
    own run writes its report and removes its lab), is waited for, and the interrupt is raised again."""
    ordered = longest_first(prepared, last) if jobs > 1 else list(prepared)
    pending = [item for item in ordered if item[0].gate] + [item for item in ordered if not item[0].gate]
    running: list[tuple[Unit, Path, subprocess.Popen[bytes], float, Any]] = []
    finished: set[str] = set()
    total, done, stopped = len(prepared), 0, ""
    try:
        while running or (pending and not stopped):
            while not stopped and len(running) < jobs:
                item = next((p for p in pending if ready is None or ready(p[0], finished)), None)
                if item is None:
                    break
                pending.remove(item)
                unit, unit_dir, meta = item
                log = (unit_dir / "run.log").open("wb")
                # a session of its own: a terminal's Ctrl-C reaches the selftest only, which forwards one
                # SIGINT, so a child's cleanup is never interrupted twice
                proc = subprocess.Popen(meta["argv"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=_child_env(meta["env"]), cwd=unit_dir, start_new_session=True)
                progress(f"[{done + len(running) + 1}/{total}] {unit.describe()} ...")
                running.append((unit, unit_dir, proc, time.monotonic(), log))
            if not running and not any(ready is None or ready(p[0], finished) for p in pending):
                break  # nothing runs and nothing can start: what is left waits for units that were not chosen
            time.sleep(0.5)
            for entry in list(running):
                unit, unit_dir, proc, began, log = entry
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                running.remove(entry)
                done += 1
                seconds = time.monotonic() - began
                _write_result(unit_dir, code, seconds, interrupted=False)
                finished.add(unit.id)
                progress(f"[{done}/{total}] {unit.id}: run exit {code} in {seconds:.0f} s")
                if stop_when is not None and not stopped:
                    stopped = stop_when(finished)
                    if stopped and pending:
                        progress(f"selftest: starting none of the {len(pending)} unit(s) left: {stopped}")
        return stopped
    except KeyboardInterrupt:
        progress(f"selftest interrupted: stopping {len(running)} lab run(s) (they remove their labs)")
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for _unit, _dir, proc, _began, _log in running:
                _signal(proc, signal.SIGINT)
            for _unit, unit_dir, proc, began, log in running:
                code = _wait(proc, progress)
                log.close()
                _write_result(unit_dir, code, time.monotonic() - began, interrupted=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        raise


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(proc: subprocess.Popen[bytes], progress: Progress) -> int:
    try:
        return proc.wait(timeout=CLEANUP_SECONDS)
    except subprocess.TimeoutExpired:
        progress(f"lab run {proc.pid} did not stop within {CLEANUP_SECONDS} s: terminating it")
        _signal(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
            return proc.wait()


def _write_result(unit_dir: Path, code: int, seconds: float, *, interrupted: bool) -> None:
    (unit_dir / "result.json").write_text(json.dumps({"exit": code, "seconds": round(seconds, 1),
                                                      "interrupted": interrupted}, indent=1))


# ---------------------------------------------------------------- writing and merging


def _write(report_dir: Path, judgement: Judgement, plan: dict[str, Any], ran: list[str], backend: str,
           wall: float, interrupted: bool, shard_arg: str | None, stopped: str = "") -> dict[str, Any]:
    data = {"schema": SCHEMA, "backend": backend, "shard": shard_arg, "plan": plan, "ran": ran, "stopped": stopped,
            "lab_runs": sum(1 for u in judgement.units if u.get("ran")), "wall_seconds": round(wall, 1),
            "interrupted": interrupted, **judgement.to_dict()}
    (report_dir / "selftest.json").write_text(json.dumps(data, indent=1))
    (report_dir / "selftest.md").write_text(render_markdown(data))
    return data


def merge(dirs: list[Path], report_dir: Path, progress: Progress) -> int:
    """Judge the units recorded by several shards of one plan as one selftest."""
    plan: dict[str, Any] | None = None
    records: dict[str, list[UnitRecord]] = {}
    wall = 0.0
    for directory in dirs:
        try:
            data = json.loads((directory / "selftest.json").read_text())
        except (OSError, ValueError):
            raise UsageError(f"--merge {directory}: no selftest.json (not a selftest report dir)") from None
        if data.get("schema") != SCHEMA:
            raise UsageError(f"--merge {directory}: its selftest.json has schema {data.get('schema')}, this kit "
                             f"writes {SCHEMA}: run that shard again with this version")
        if plan is None:
            plan = data["plan"]
        elif data["plan"].get("fingerprint") != plan.get("fingerprint"):
            raise UsageError(f"--merge {directory}: its shard comes from another plan (other catalogue, backend "
                             f"or --only) than {dirs[0]}")
        wall = max(wall, float(data.get("wall_seconds") or 0))
        gates = {u["id"] for u in data["plan"]["units"] if u.get("gate")}
        for unit_id in data.get("ran", []):
            if unit_id in records and unit_id not in gates:
                raise UsageError(f"--merge: unit {unit_id} was run by two of the shards given")
            records.setdefault(unit_id, []).append(load_unit(directory / "units" / unit_id))
    assert plan is not None
    judgement = judge(plan["units"], records, plan.get("sentinel", ""))
    report_dir.mkdir(parents=True, exist_ok=True)
    _write(report_dir, judgement, plan, sorted(records), plan["backend"], wall, False, None)
    print(render_table(judgement))
    progress(f"selftest merge: {len(dirs)} shard(s), {len(records)} of {len(plan['units'])} unit(s) recorded; "
             f"{report_dir / 'selftest.md'}")
    return EXIT_PASS if judgement.ok else EXIT_FAIL
