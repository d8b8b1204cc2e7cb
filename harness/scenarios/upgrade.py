"""Scenario `upgrade`: the upgrade rehearsal. Records; the `upgrade` suite judges (harness.upgrade_judge).

The runbook's update section is read as two procedures: the upgrade (every update step but the one that names
a version: stop, upgrade, start) and the specific-version step, used to go back to the version the host started
on (stop, that step with the starting version, start). The stages, each recorded with its duration:

  prepare      a database to watch: the conformance module published and seeded (lab hosts), its owner token
  before       observation: unit state and MainPID, the main process's user, bin/current, /v1/health's version,
               metadata.toml, /v1/ping through the site from the vantage; fingerprint of the database (dump)
  release      lab mirror only: a newer release is published, so "latest" really moves (adaptation)
  upgrade      the update steps verbatim, in order, with an uptime prober on the vantage (GET /v1/ping through
               the site every 0.5 s, bounded) measuring the downtime
  after        observation + fingerprint + the pre-upgrade token checked (authenticates, still owns the database)
  rollback     the runbook's stop, its specific-version step with the starting version, its start
  rolled-back  observation + fingerprint + token

Only on hosts the kit may change (lab hosts; an existing host with --allow-mutation). A generator never raises for
what it observed: a stage that failed is part of the history.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.apply import OPERATOR_USER
from harness.backends.base import Capability
from harness.model import Plan, Step, StepKind
from harness.run_state import RunState, plan_of_run
from harness.scenarios import observe
from harness.systemd_unit import parse_show
from harness.targets.base import CommandResult, Target
from harness.time_ledger import spend

if TYPE_CHECKING:
    from harness.testbed import Testbed

Progress = Callable[[str], None]
SERVICE = "spacetimedb"
DB_PREFIX = "stdbc-upgrade-"  # + the run id: a rehearsal repeated on one host never meets an earlier one's database
WORK_DIR = "/var/tmp/stdbc-upgrade"
WORK_NAME = "upgrade-rehearsal"  # recorded files, next to the history
AGENT = Path(__file__).resolve().parent.parent / "agents" / "fidelity_agent.py"
PROBE_INTERVAL = 0.5
PROBE_MAX_SAMPLES = 1200  # 10 minutes at 0.5 s: the prober's bound
PROBE_PATHS = ("/v1/ping", "/v1/identity/public-key")  # read-only routes, tried in order through the site
STEP_TIMEOUT = 300.0
VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][\w.]+)?$")


def generate(lab: Testbed, state: RunState, progress: Progress) -> dict[str, Any]:
    plan = plan_of_run(state)
    history: dict[str, Any] = {"applicable": True, "events": [], "stages": []}
    if Capability.MUTATION.value not in state.capabilities:
        return {"applicable": False, "reason": "changes the host (stops, upgrades and restarts the server): needs "
                "--allow-mutation", "events": []}
    update, pinned = split_update_section(plan)
    if not update:
        return {"applicable": False, "reason": "the runbook's update section has no shell step in this profile",
                "events": []}
    history["update_steps"] = [s.index for s in update]
    history["specific_version_step"] = pinned.index if pinned is not None else None
    history["root_dir"] = root_dir(plan)
    _Rehearsal(lab, state, plan, history, progress).run(update, pinned)
    return history


def summarize(history: dict[str, Any], base: Path) -> dict[str, Any]:
    """The report's figures of the rehearsal (judged from the recording: harness.upgrade_judge.summary)."""
    from harness.upgrade_judge import summary

    return summary(history, base)


def split_update_section(plan: Plan) -> tuple[list[Step], Step | None]:
    """The update procedure (every upgrade-phase shell step but the one pinning a version) and the step that
    installs a specific version: the one whose command has a placeholder substituted with a version number."""
    steps = [s for s in plan.runnable("upgrade") if s.kind is StepKind.SHELL]
    pinned = next((s for s in steps if any(VERSION.match(sub.value) for sub in s.substitutions)), None)
    return [s for s in steps if s is not pinned], pinned


def root_dir(plan: Plan) -> str:
    """The server's root dir as the runbook's unit starts it (`--root-dir`), else /stdb's parent guess: ""."""
    for step in plan.steps:
        if step.kind is StepKind.FILE_WRITE and step.path and step.path.endswith(".service"):
            found = re.search(r"--root-dir[= ](\S+)", step.content or "")
            if found:
                return found.group(1).rstrip("/")
    for step in plan.steps:
        found = re.search(r"--root-dir[= ](\S+)", step.command or "")
        if found:
            return found.group(1).rstrip("/")
    return ""


def pinned_command(step: Step, version: str) -> str:
    """`step`'s command with its version placeholder's value replaced by `version` (the version to go back to)."""
    command = step.command
    for sub in step.substitutions:
        if VERSION.match(sub.value):
            command = re.sub(rf"(?<![\w.]){re.escape(sub.value)}(?![\w.])", version, command)
    return command


class _Rehearsal:
    def __init__(self, lab: Testbed, state: RunState, plan: Plan, history: dict[str, Any],
                 progress: Progress) -> None:
        self.lab, self.state, self.plan, self.h, self.progress = lab, state, plan, history, progress
        self.target: Target = lab.target
        self.root = history["root_dir"]
        self.work = Path(state.workdir) / WORK_NAME
        self.work.mkdir(parents=True, exist_ok=True)
        self.h["files"] = {}
        self.db = DB_PREFIX + (state.run_id or "run")

    # ---- recording ------------------------------------------------------------------------------
    def stage(self, name: str, **data: Any) -> dict[str, Any]:
        entry = {"name": name, "started": time.time(), **data}
        self.h["stages"].append(entry)
        return entry

    def agent(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        from harness.scenarios.restore_drill import run_agent

        return run_agent(self.target, WORK_DIR, *args, timeout=timeout)

    def observe(self, name: str) -> dict[str, Any]:
        """What the service, its files and its answers are at this stage: one round trip to the target."""
        started = time.monotonic()
        probes = {
            "show": f"systemctl show {SERVICE} -p ActiveState -p SubState -p MainPID -p User "
                    "-p ExecMainStartTimestampMonotonic -p NRestarts",
            "main_user": f"pid=$(systemctl show -p MainPID --value {SERVICE}); "
                         "case $pid in ''|0) ;; *) ps -o user= -p $pid;; esac",
            "health": "curl -s --max-time 5 http://127.0.0.1:3000/v1/health",
            "ping": "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:3000/v1/ping",
            "journal": f"journalctl -u {SERVICE} --no-pager -n 15 -o cat",
        }
        if self.root:
            probes["bin_current"] = f"readlink {self.root}/bin/current"
            probes["metadata"] = f"cat {self.root}/data/metadata.toml 2>/dev/null"
        got = observe(self.target, probes, timeout=60)
        out = {key: got[key]["output"] for key in got}
        props = parse_show(out["show"])
        user = out["main_user"]
        current = out.get("bin_current", "")
        health_text = out["health"]
        try:
            health_version = str(json.loads(health_text).get("version", ""))
        except (ValueError, AttributeError):
            health_version = ""
        meta = out.get("metadata", "")
        meta_version = next(iter(re.findall(r'^version\s*=\s*"([^"]+)"', meta, re.MULTILINE)), "")
        ping = out["ping"]
        journal = out["journal"][-2000:]
        seen = {"properties": props, "main_user": user, "bin_current": current, "health": health_text[:300],
                "health_version": health_version, "metadata_version": meta_version, "ping": ping,
                "journal_tail": journal}
        fingerprint = self.fingerprint(name) if self.h.get("database") else None
        self.stage(name, seconds=round(time.monotonic() - started, 2), observed=seen, fingerprint=fingerprint,
                   token=self.token_check() if self.h.get("database") else None)
        return seen

    def fingerprint(self, name: str) -> dict[str, Any]:
        from fixtures import conformance_seed as seed

        out = f"{WORK_DIR}/dump-{name}.json"
        dump = self.agent("dump", "--db", self.db, "--token-file", f"{WORK_DIR}/token.json",
                          "--tables", ",".join(seed.ALL_TABLE_NAMES), "--out", out, timeout=300)
        if dump["exit_status"] == 0:
            (self.work / f"dump-{name}.json").write_bytes(self.target.read_file(out))
            self.h["files"][name] = f"{WORK_NAME}/dump-{name}.json"
        return {"exit_status": dump["exit_status"], "stderr": dump["stderr"], "file": self.h["files"].get(name)}

    def token_check(self) -> dict[str, Any]:
        return self.agent("verify-token", "--token-file", f"{WORK_DIR}/token.json", "--db", self.db)

    # ---- the stages -----------------------------------------------------------------------------
    def run(self, update: list[Step], pinned: Step | None) -> None:
        try:
            self.rehearse(update, pinned)
        finally:
            self.leave_as_found()
            if self.state.builds_host:
                self.repairs()
            self.clean_up()

    def clean_up(self) -> None:
        """What the rehearsal put on the host goes: its database (as its owner) and its folder."""
        removed: dict[str, Any] = {}
        if self.h.get("database"):
            removed["database"] = self.agent("delete", "--db", self.db, "--token-file", f"{WORK_DIR}/token.json")
        removed["folder"] = self.target.run(f"rm -rf {WORK_DIR}", timeout=60).exit_status
        self.h["cleaned_up"] = removed

    def leave_as_found(self) -> None:
        """The service as the rehearsal found it, where the kit can: started again when it ran before and does not
        now; the version the host ends on, said either way."""
        first = next((s for s in self.h["stages"] if s["name"] == "before"), None)
        last = next((s for s in reversed(self.h["stages"]) if s.get("observed")), None)
        if first is None or last is None:
            return
        was, now = first["observed"], last["observed"]
        active = (was.get("properties") or {}).get("ActiveState") == "active"
        restarted = None
        if active and (now.get("properties") or {}).get("ActiveState") != "active":
            restarted = self.target.run(f"systemctl start {SERVICE}", timeout=120).to_dict()
            now = self.observe("left")
        version_was, version_now = was.get("bin_current", ""), now.get("bin_current", "")
        state_now = (now.get("properties") or {}).get("ActiveState")
        self.h["left"] = {
            "service_was": (was.get("properties") or {}).get("ActiveState"), "service_now": state_now,
            "version_was": version_was, "version_now": version_now, "restarted_by_the_kit": restarted,
            "as_found": state_now == (was.get("properties") or {}).get("ActiveState") and version_was == version_now,
        }

    def repairs(self) -> None:
        """Lab hosts only, after every observation: the smallest repairs of each step that failed as written,
        tried as diagnostics (harness.repairs), so the report shows what would have failed next."""
        from harness.repairs import try_repairs
        from harness.trace import watch_of

        dirs = watch_of(self.plan).dirs
        tried: dict[str, list[dict[str, Any]]] = {}
        for name in ("upgrade", "rollback"):
            for r in (next((s for s in self.h["stages"] if s["name"] == name), None) or {}).get("steps", []):
                if r["exit_status"] == 0 or str(r["step"]) in tried:
                    continue
                result = CommandResult(command=r["command"], exit_status=r["exit_status"], stdout=r["stdout"],
                                       stderr=r["stderr"], duration=r["duration"], user=r["user"], host=r["host"],
                                       timed_out=r["timed_out"])
                attempts = try_repairs(r["command"], result, self.target, user=OPERATOR_USER, dirs=dirs)
                tried[str(r["step"])] = [a.to_evidence() for a in attempts]
        self.h["repairs"] = tried

    def rehearse(self, update: list[Step], pinned: Step | None) -> None:
        self.prepare()
        before = self.observe("before")
        self.h["version_before"] = before["bin_current"] or before["health_version"]
        self.release()
        self.progress("upgrade rehearsal: the runbook's update steps, prober on ...")
        self.run_steps("upgrade", [(s, s.command) for s in update])
        self.observe("after")
        if pinned is None:
            self.h["rollback"] = {"skipped": "the runbook's update section has no specific-version step"}
            return
        start_version, source = self.h["version_before"], "the version the host ran before the update"
        if not start_version:  # still run the way back as written: its defects are the runbook's too
            start_version = next((sub.value for sub in pinned.substitutions if VERSION.match(sub.value)), "")
            source = ("the starting version could not be read (bin/current, /v1/health): the version the plan "
                      "substituted into the step")
        stops = [s for s in update if re.search(rf"systemctl\s+stop\s+{SERVICE}", s.command)]
        starts = [s for s in update if re.search(rf"systemctl\s+(re)?start\s+{SERVICE}", s.command)]
        back = [(s, s.command) for s in stops] + [(pinned, pinned_command(pinned, start_version))] + \
            [(s, s.command) for s in starts]
        self.progress(f"upgrade rehearsal: back to {start_version} with the specific-version step ...")
        self.run_steps("rollback", back)
        self.h["rollback"] = {"version": start_version, "version_source": source, "command": back[len(stops)][1]}
        self.observe("rolled-back")

    def was_up(self) -> bool:
        first = next((s for s in self.h["stages"] if s["name"] == "before"), None)
        if first is None:
            return False
        return (first["observed"].get("properties") or {}).get("ActiveState") == "active"

    def prepare(self) -> None:
        from fixtures import conformance_seed as seed

        started = time.monotonic()
        res = self.target.run(f"mkdir -p {WORK_DIR} && chmod 700 {WORK_DIR}", timeout=30)
        if not res.ok:
            self.stage("prepare", ok=False, error=f"cannot create {WORK_DIR}: {res.stderr.strip()[-200:]}")
            return
        self.target.write_file(f"{WORK_DIR}/fidelity_agent.py", AGENT.read_bytes(), mode=0o755)
        self.target.write_file(f"{WORK_DIR}/module.json", seed.STANDIN_MODULE_PATH.read_bytes())
        seed_value = int(self.state.run_id or "0", 16) % 1_000_000 or 1
        seed_plan = seed.build_plan(seed_value)
        self.target.write_file(f"{WORK_DIR}/plan.json", seed_plan.to_json_text().encode())
        published = self.agent("publish", "--db", self.db, "--module", f"{WORK_DIR}/module.json",
                               "--token-out", f"{WORK_DIR}/token.json")
        seeded = self.agent("seed", "--db", self.db, "--token-file", f"{WORK_DIR}/token.json",
                            "--plan", f"{WORK_DIR}/plan.json", timeout=900) if published["out"].get("ok") else None
        ok = bool(seeded and seeded["out"].get("ok"))
        self.stage("prepare", ok=ok, seconds=round(time.monotonic() - started, 2), publish=published, seed=seeded,
                   rows=seed_plan.row_count)
        if ok:
            self.h["database"] = self.db

    def release(self) -> None:
        """On the lab's mirror, publish the newest stand-in release (the run installed the one before it)."""
        services = self.lab.lab if self.lab.has_lab else None
        if services is None or services.options.mirror_dir is None:
            return
        from fixtures.spacetimedb_standin.release import publish_latest

        latest = publish_latest(services.mirror_tree)
        self.stage("release", version=latest, adaptation=f"the lab mirror published {latest} as the latest "
                   "release before the update, so the runbook's upgrade has a newer version to move to")

    def run_steps(self, name: str, steps: list[tuple[Step, str]]) -> None:
        prober = _Prober(self.state, wait_for_up=self.was_up())
        prober.start()
        started = time.monotonic()
        done = []
        for step, command in steps:
            with spend("runbook"):
                res = self.target.run(command, user=OPERATOR_USER, timeout=STEP_TIMEOUT)
            done.append({"step": step.index, "command": command, "as_written": command == step.command,
                         **res.to_dict()})
        # the service gets a bounded moment to answer after the last step (as an operator would wait), when it
        # answered before the update; not once systemd says nothing will start it again (failed: it gave up
        # restarting; inactive: stopped, and no restart pending)
        gave_up = ""
        for _ in range(40 if self.was_up() else 0):
            res = self.target.run(f"curl -sf -o /dev/null --max-time 2 http://127.0.0.1:3000/v1/ping && echo up "
                                  f"|| systemctl is-active {SERVICE}", timeout=10)
            state = res.stdout.strip().splitlines()[-1:] or [""]
            if state[0] == "up":
                break
            if state[0] in ("failed", "inactive"):
                gave_up = state[0]
                break
            with spend("idle"):
                time.sleep(0.5)
        samples = prober.stop(wait=not gave_up)
        self.stage(name, seconds=round(time.monotonic() - started, 2), steps=done, probe=samples,
                   probe_path=prober.path, **({"unit_after": gave_up} if gave_up else {}))


class _Prober:
    """GET /v1/ping through the site from the vantage every PROBE_INTERVAL s (one long-lived probe agent),
    bounded by PROBE_MAX_SAMPLES; each sample is (seconds since start, status, who answered). `start` returns
    once the first answer came (bounded by READY_SECONDS); `stop` keeps probing until the site answers from the
    backend again or FINISH_SECONDS pass, so the window covers the whole outage."""

    READY_SECONDS = 30.0
    FINISH_SECONDS = 30.0

    def __init__(self, state: RunState, *, wait_for_up: bool = True) -> None:
        self.state = state
        self.wait_for_up = wait_for_up  # a site that did not answer before the update is not waited for after
        self.samples: list[dict[str, Any]] = []
        self.path = ""
        self.error = ""
        self._ready = threading.Event()
        self._finish = threading.Event()
        self._finish_by = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(self.READY_SECONDS)

    def stop(self, *, wait: bool = True) -> list[dict[str, Any]]:
        """`wait`: keep probing (bounded) until the site answers from the backend again; without it (the unit is
        known not to come back) one more sample and done."""
        self._finish_by = time.monotonic() + (self.FINISH_SECONDS if wait else 0.0)
        self._finish.set()
        self._thread.join(timeout=self.FINISH_SECONDS + 60)
        if self.error:
            self.samples.append({"error": self.error})
        return list(self.samples)

    def _done(self, last_up: bool) -> bool:
        return self._finish.is_set() and (last_up or not self.wait_for_up or time.monotonic() >= self._finish_by)

    def _loop(self) -> None:
        from harness.probe_client import ProbeSession
        from harness.routes_model import observed
        from harness.vantage import agent_flags, site_from_state, vantage_from_state

        try:
            site = site_from_state(self.state)
            vantage = vantage_from_state(self.state)
        except Exception as exc:  # noqa: BLE001 - no prober is recorded, not raised
            self.error = f"no prober: {exc}"
            self._ready.set()
            return
        t0 = time.monotonic()

        def get(probe: ProbeSession, path: str) -> dict[str, Any]:
            return probe.send({"scheme": "https", "host": site.domain, "port": 443, "server_name": site.domain,
                               "method": "GET", "path": path, "body": "", "headers": {}, "timeout": 2,
                               "cafile": None})

        try:
            with ProbeSession(vantage, max_requests=PROBE_MAX_SAMPLES + len(PROBE_PATHS) + 1,
                              agent_args=agent_flags(site, vantage)) as probe:
                # the first read-only route the site lets through to the server (a site may close /v1/ping)
                for path in PROBE_PATHS:
                    first = get(probe, path)
                    if first.get("status") == 200 and observed(first) == "backend":
                        self.path = path
                        break
                if not self.path:
                    tried = ", ".join(PROBE_PATHS)
                    self.error = (f"no read-only route answers from the server through the site ({tried}): "
                                  "downtime not measured")
                    return
                for _ in range(PROBE_MAX_SAMPLES):
                    sent = time.monotonic()
                    result = get(probe, self.path)
                    who = observed(result)
                    self.samples.append({"t": round(sent - t0, 2), "status": result.get("status"), "who": who})
                    self._ready.set()
                    if self._done(result.get("status") == 200 and who == "backend"):
                        break
                    time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - sent)))
        except Exception as exc:  # noqa: BLE001 - a prober that broke is part of the history
            self.error = f"prober stopped: {type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
            vantage.close()
