"""Restore drill for the `backup_restore` suite (vm backend): seed, write, snapshot, restore, verify.

The generator acts and records; suites/test_backup_restore.py judges the history (harness/fidelity.py is
the oracle). Sequence:
1. `seed`       the conformance module is published on the target (the kit's agent, stdlib only, talks to
                the runbook's server on 127.0.0.1:3000) and a deterministic baseline of 10,200 rows is
                written through reducer calls and SQL (fixtures/conformance_seed.py; the seed is recorded).
2. `write`      a background writer appends seq rows and logs every acknowledgement (log on the root
                disk); two copies of the live /stdb are taken while it writes (the runbook's warned-against
                method, evidence only).
3. `snapshot`   the data volume is snapshotted while the writer runs, with no service stop: qemu's
                point-in-time block copy (blockdev-backup), crash-consistent like an EBS snapshot. The
                last write acknowledged before the job started is read from the log just before it.
4. `recovery`   a second fresh VM is prepared by the runbook (its apply phase, with an empty volume of its
                own, as the original host was built).
5. `restore`    the runbook's restore flow (plan phase `restore`, the last flow in the document): a new
                volume from the snapshot; "attach it to the recovery instance" = power off, replace the
                recovery host's own volume with it, boot; mount at /stdb; the runbook's shell steps
                (chown, systemctl start); the runbook's verification query through `spacetime sql`.
6. `verify`     the restored database is dumped and judged; tokens issued before the snapshot are checked.
Each copy of the live directory is started on its own port and judged as evidence.

Test-only mutants (STDBC_DRILL_MUTANT): `wrong-volume` restores a blank ext4 volume instead of the
snapshot of the data volume; `drop-table` deletes every row of one baseline table on the recovery host
before verification (a restore that loses a table).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.backends.base import Capability, RecoveryHost
from harness.errors import LabError
from harness.run_state import RunState, plan_of_run
from harness.scenarios import data_device
from harness.targets.base import Target
from harness.time_ledger import spend

if TYPE_CHECKING:
    from harness.testbed import Testbed

Progress = Callable[[str], None]
DRILL_DIR = "/var/tmp/stdbc-drill"
DB = "stdbc-fidelity"
SERVICE = "spacetimedb"
MOUNT_POINT = "/stdb"
DEFAULT_DURABILITY_WINDOW = 0.5  # seconds: SpacetimeDB's local durability flushes (write + fsync) every 500 ms
AGENT = Path(__file__).resolve().parent.parent / "agents" / "fidelity_agent.py"
WRITER_MAX_SECONDS = 300
WRITER_MAX_WRITES = 50_000
MIN_ACKED_BEFORE_SNAPSHOT = 20
WRITE_AFTER_SNAPSHOT_SECONDS = 3.0
LIVE_COPIES = 2
LIVE_COPY_PORT = 3101
DROPPED_TABLE = "floats"
WORK_NAME = "restore-drill"  # the drill's recorded files, next to its history (relative paths in the history)
MUTANTS = ("wrong-volume", "drop-table")


def run_agent(host: Any, work_dir: str, *args: str, timeout: float = 120, url: str = "") -> dict[str, Any]:
    """Run the fidelity agent placed in `work_dir` on `host`; its last JSON line is `out` (also for the upgrade
    rehearsal, harness.scenarios.upgrade)."""
    command = " ".join(shlex.quote(a) for a in ["python3", f"{work_dir}/fidelity_agent.py",
                                                  *(["--url", url] if url else []), "--timeout", "20", *args])
    res = host.run(command, timeout=timeout)
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
    except ValueError:
        out = {}
    return {"command": command, "exit_status": res.exit_status, "out": out,
            "stderr": res.stderr.strip()[-600:], "stdout_tail": res.stdout.strip()[-600:] if not out else ""}


def generate(lab: Testbed, state: RunState, progress: Progress) -> dict[str, Any]:
    why_not = lab.backend.missing(Capability.MUTATION, Capability.VOLUME_SNAPSHOT, Capability.RECOVERY_HOST)
    if why_not:
        return {"applicable": False, "events": [], "reason": f"the restore drill {why_not}"}
    implementation = state.spacetimedb.get("implementation", "standin")
    if implementation != "standin":
        return {"applicable": False, "events": [], "reason": (
            "the conformance module for a real SpacetimeDB must be compiled to wasm (Rust source in "
            "fixtures/conformance_module/rust); this lab has no Rust toolchain to build it")}
    plan = plan_of_run(state)
    flow = restore_flow(plan)
    if not flow:
        return {"applicable": False, "events": [], "reason": "the plan has no restore procedure (no steps in "
                "phase `restore` starting with a new volume from a snapshot)"}
    mutant = os.environ.get("STDBC_DRILL_MUTANT", "")
    if mutant and mutant not in MUTANTS:
        raise LabError(f"unknown STDBC_DRILL_MUTANT {mutant!r}", hint=f"one of: {', '.join(MUTANTS)}")
    history: dict[str, Any] = {"applicable": True, "events": [], "mutant": mutant, "db": DB,
                               "flow": [s.index for s in flow], "backend": lab.backend.scheme,
                               "consistency": "", "crash_consistent": False}
    drill = _Drill(lab, state, plan, flow, history, progress)
    try:
        drill.run()
    except LabError as exc:
        history["error"] = exc.one_line()
        progress(f"restore drill: {history['error']}")
    finally:
        drill.cleanup()
    return history


def judged(history: dict[str, Any], base: Path) -> dict[str, Any]:
    """The history with the oracle's verdicts, computed from what the drill recorded (its files relative to
    `base`, the history's folder): the generator records, this judges (Jepsen's split), so a finished run can be
    judged again and a fixed checker tried on old runs."""
    from harness.fidelity import judge_live_copy, judge_restore

    files = history.get("files") or {}
    if not history.get("applicable") or "expected" not in files:
        return history

    def load(key: str) -> Any:
        path = base / files[key] if files.get(key) else None
        if path is None or not path.is_file():
            return None
        text = path.read_text()
        return text if key == "ack_log" else json.loads(text)

    expected, ack_log = load("expected"), load("ack_log") or ""
    out = dict(history)
    if any(e.get("name") == "verify" for e in history.get("events", [])):
        out["verdict"] = judge_restore(
            expected=expected, restored=load("restored") or {}, ack_log=ack_log,
            last_acked_before_snapshot=history.get("last_acked_before_snapshot"), original=load("original"),
            token_check=history.get("token_check"), timestamps=history.get("timestamps"),
            writer_identity=history.get("writer_identity"),
            durability_window=(history.get("durability") or {}).get("window_seconds"),
            snapshot_time=history.get("snapshot_guest_time"))
    copies = []
    for copy in history.get("live_copy_results", []):
        copy_file = base / copy["restored_file"] if copy.get("restored_file") else None
        restored = json.loads(copy_file.read_text()) if copy_file is not None and copy_file.is_file() else None
        copies.append({**copy, "verdict": judge_live_copy(
            expected=expected, started=bool(copy.get("started")), restored=restored, ack_log=ack_log,
            copy_started_at=copy.get("copy_started_at"), copy_finished_at=copy.get("copy_finished_at"),
            server_output=copy.get("server_output", ""))})
    out["live_copy_results"] = copies
    return out


def summarize(history: dict[str, Any], base: Path) -> dict[str, Any]:
    """What the run's report shows of the drill, from its judged history."""
    return {"restore": summary(judged(history, base))}


def summary(history: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of the drill: counts and checksums per table, acknowledged vs restored seq,
    RTO, loss window, the oracle's verdict and what the copies of the live directory produced."""
    verdict = history.get("verdict") or {}
    m = verdict.get("measurements") or {}
    props = {p["id"]: p for p in verdict.get("properties", [])}
    per_table = ((props.get("baseline_rows_identical") or {}).get("evidence") or {}).get("tables") or {}
    tables = [{"table": name, "expected_rows": want["count"], "expected_sha256": want["checksum"],
               "restored_rows": (per_table.get(name) or {}).get("restored_count"),
               "restored_sha256": (per_table.get(name) or {}).get("restored_checksum") or ""}
              for name, want in (history.get("expected_tables") or {}).items()]
    return {
        "verdict": verdict.get("verdict", "not judged"), "mutant": history.get("mutant", ""),
        "seed": history.get("seed"), "consistency": history.get("consistency", ""), "tables": tables,
        "properties": {pid: p["ok"] for pid, p in props.items()},
        "seq": {k: m.get(k) for k in ("last_acked_before_snapshot", "restored_max_seq", "restored_seq_rows",
                                      "last_acked_seq", "max_attempted_seq")},
        "rto_seconds": m.get("rto_verified_seconds"), "rto_service_ready_seconds": m.get("rto_seconds"),
        "loss_window_seq": m.get("loss_window_seq"), "loss_window_seconds": m.get("loss_window_seconds"),
        "snapshot_seconds": m.get("snapshot_seconds"),
        "live_copies": [{"copy_seconds": round(c["copy_finished_at"] - c["copy_started_at"], 2),
                         "started": c.get("started"), "outcome": (c.get("verdict") or {}).get("outcome"),
                         "observations": (c.get("verdict") or {}).get("observations", [])[:4]}
                        for c in history.get("live_copy_results", [])],
    }


def restore_flow(plan: Any) -> list[Any]:
    """The last restore procedure of the plan: restore-phase steps from its last "volume from a snapshot"
    console step to the end of that run of restore steps."""
    steps = [s for s in plan.steps if s.phase == "restore"]
    starts = [i for i, s in enumerate(steps)
              if s.kind.value == "console" and s.params.get("action") == "restore_volume_from_snapshot"]
    if not starts:
        return []
    flow = steps[starts[-1]:]
    return [s for s in flow if s.kind.value == "console" or s.runs]



PLACEHOLDER = re.compile(r"\.\.\.|<[^>]+>|YOUR_|\bDATABASE\b|\bQUERY\b")


def runnable_as_written(command: str) -> bool:
    """A runbook's verification command that can run as written: not empty and no placeholder (`...`,
    `<database>`, YOUR_...)."""
    return bool(command.strip()) and PLACEHOLDER.search(command) is None

class _Drill:
    def __init__(self, lab: Testbed, state: RunState, plan: Any, flow: list[Any], history: dict[str, Any],
                 progress: Progress) -> None:
        self.lab, self.state, self.plan, self.flow, self.h, self.progress = lab, state, plan, flow, history, progress
        self.work = Path(state.workdir) / WORK_NAME
        self.work.mkdir(parents=True, exist_ok=True)
        self.target = lab.target
        self.recovery: RecoveryHost | None = None
        self.writer_pid = ""

    # ---- helpers ---------------------------------------------------------------------------------
    def event(self, name: str, **data: Any) -> dict[str, Any]:
        event = {"name": name, "at": time.time(), **data}
        self.h["events"].append(event)
        return event

    def agent(self, host: Any, *args: str, timeout: float = 120, url: str = "") -> dict[str, Any]:
        return run_agent(host, DRILL_DIR, *args, timeout=timeout, url=url)

    def fetch(self, host: Any, path: str, name: str) -> Path:
        local = self.work / name
        local.write_bytes(host.read_file(path))
        return local

    def install_agent(self, host: Any) -> None:
        res = host.run(f"mkdir -p {DRILL_DIR} && chmod 700 {DRILL_DIR}", timeout=30)
        if not res.ok:
            raise LabError(f"cannot create {DRILL_DIR} on {host.hostname}: {res.stderr.strip()[-200:]}")
        host.write_file(f"{DRILL_DIR}/fidelity_agent.py", AGENT.read_bytes(), mode=0o755)

    def ping(self, host: Any, tries: int = 90) -> str:
        # bounded; stops early once systemd has given up on the unit (failed/inactive: it will not answer)
        script = (f"for i in $(seq {tries}); do c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "
                  "http://127.0.0.1:3000/v1/ping); [ \"$c\" = 200 ] && break; "
                  f"case $(systemctl is-active {SERVICE}) in failed|inactive) [ $i -gt 5 ] && break;; esac; "
                  "sleep 1; done; echo $c")
        return host.run(script, timeout=tries * 7 + 30).stdout.strip()

    def guest_time(self, host: Any) -> float:
        res = host.run("date +%s.%N", timeout=30)
        try:
            return float(res.stdout.strip())
        except ValueError:
            return 0.0

    def durability_window(self) -> dict[str, Any]:
        """How long the server may hold an acknowledged transaction before it is on disk: the stand-in's
        `[standin] durability-interval` in the data dir's config.toml, else SpacetimeDB's default (500 ms, the
        local durability layer's flush interval in crates/durability)."""
        res = self.target.run(f"cat {MOUNT_POINT}/data/config.toml", timeout=30)
        try:
            import tomllib

            value = tomllib.loads(res.stdout).get("standin", {}).get("durability-interval") if res.ok else None
        except ValueError:
            value = None
        if value is not None:
            from fixtures.spacetimedb_standin.runtime.standalone_main import StartupError, parse_duration

            try:
                return {"window_seconds": parse_duration(value), "source": f"[standin] durability-interval = {value!r}"}
            except StartupError:  # an unreadable value: the default, which the report says
                pass
        return {"window_seconds": DEFAULT_DURABILITY_WINDOW,
                "source": "SpacetimeDB's default flush interval of its local durability layer (500 ms)"}

    def ack_log(self) -> str:
        res = self.target.run(f"cat {DRILL_DIR}/ack.jsonl", timeout=60)
        return res.stdout

    def service_show(self, host: Any) -> str:
        return host.run(f"systemctl show {SERVICE} -p ActiveState -p SubState -p MainPID -p NRestarts",
                        timeout=30).stdout.strip()

    # ---- the drill -------------------------------------------------------------------------------
    def run(self) -> None:
        from fixtures import conformance_seed as seed
        from harness.fidelity import DURABILITY_SLACK, last_acked_before, parse_ack_log

        seed_value = int(self.state.run_id or "0", 16) % 1_000_000 or 1
        seed_plan = seed.build_plan(seed_value)
        expected = seed.expected_baseline(seed_plan)
        (self.work / "expected.json").write_text(json.dumps(expected))
        self.h["files"] = {"expected": f"{WORK_NAME}/expected.json"}
        self.h["seed"] = seed_value
        self.h["expected_tables"] = {t: {"count": v["count"], "checksum": v["checksum"]}
                                     for t, v in expected["tables"].items()}

        # 1. seed
        self.progress(f"restore drill: publish the conformance module and seed {seed_plan.row_count} rows "
                      f"(seed {seed_value}) ...")
        self.install_agent(self.target)
        self.target.write_file(f"{DRILL_DIR}/module.json", seed.STANDIN_MODULE_PATH.read_bytes())
        self.target.write_file(f"{DRILL_DIR}/plan.json", seed_plan.to_json_text().encode())
        ping = self.ping(self.target, tries=30)
        started = time.monotonic()
        published = self.agent(self.target, "publish", "--db", DB, "--module", f"{DRILL_DIR}/module.json",
                               "--token-out", f"{DRILL_DIR}/token.json")
        seeded = self.agent(self.target, "seed", "--db", DB, "--token-file", f"{DRILL_DIR}/token.json",
                            "--plan", f"{DRILL_DIR}/plan.json", timeout=900) if published["out"].get("ok") else None
        self.event("seed", ping=ping, publish=published, seed=seeded, seconds=round(time.monotonic() - started, 1),
                   planned_rows=seed_plan.row_count)
        if not (seeded and seeded["out"].get("ok")):
            raise LabError("the conformance database could not be published and seeded on the target "
                           f"(/v1/ping answered {ping or 'nothing'}): nothing to back up")
        token = json.loads(self.target.read_file(f"{DRILL_DIR}/token.json"))
        (self.work / "token.json").write_text(json.dumps(token))
        self.h["writer_identity"] = token.get("identity", "")
        # the original as seeded, before any write of the writer (what the restore must hold at least)
        original = self.agent(self.target, "dump", "--db", DB, "--token-file", f"{DRILL_DIR}/token.json",
                              "--tables", ",".join(seed.ALL_TABLE_NAMES), "--out", f"{DRILL_DIR}/original.json",
                              timeout=300)
        if original["exit_status"] == 0:
            self.fetch(self.target, f"{DRILL_DIR}/original.json", "original.json")
            self.h["files"]["original"] = f"{WORK_NAME}/original.json"

        # 2. writer + live copies
        self.progress("restore drill: background writer on, copying the live /stdb while it writes ...")
        # `cd` is its own command: a backgrounded `a && b` list would be a subshell holding ssh's pipes open
        start = (f"cd {DRILL_DIR} || exit 1; setsid nohup python3 fidelity_agent.py --timeout 20 write --db {DB} "
                 f"--token-file token.json --log ack.jsonl --max-writes {WRITER_MAX_WRITES} "
                 f"--max-seconds {WRITER_MAX_SECONDS} > writer.json 2> writer.err < /dev/null & echo $!")
        res = self.target.run(start, timeout=30)
        self.writer_pid = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
        if not self.writer_pid.isdigit():
            raise LabError(f"the background writer did not start (exit {res.exit_status}, timed out {res.timed_out}): "
                           f"{(res.stderr or res.stdout).strip()[-200:]}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(parse_ack_log(self.ack_log()).acked) < MIN_ACKED_BEFORE_SNAPSHOT:
            with spend("idle"):
                time.sleep(1)
        copies = []
        for number in range(1, LIVE_COPIES + 1):
            path = f"/var/tmp/stdbc-livecopy-{number}"
            res = self.target.run(f"rm -rf {path}; t0=$(date +%s.%N); cp -a {MOUNT_POINT} {path}; s=$?; "
                                  f"echo $t0 $(date +%s.%N) $s", timeout=300)
            fields = (res.stdout.split() + ["0", "0", "1"])[:3]
            copies.append({"path": path, "copy_started_at": float(fields[0]), "copy_finished_at": float(fields[1]),
                           "cp_status": int(fields[2]) if fields[2].lstrip("-").isdigit() else None})
            with spend("idle"):
                time.sleep(1)
        self.h["live_copies"] = copies

        # 3. snapshot
        mutant = self.h["mutant"]
        before_show = self.service_show(self.target)
        guest_before = self.guest_time(self.target)
        log_before = parse_ack_log(self.ack_log())  # the last read before the job starts: a tight lower bound
        last_acked = log_before.last_acked_seq
        self.progress(f"restore drill: snapshot of the data volume while writing (last acked seq {last_acked}) ...")
        snapshot_started = time.time()
        snapshot, source, job_seconds = self.take_snapshot()
        snapshot_finished = time.time()
        log_after = parse_ack_log(self.ack_log())
        after_show = self.service_show(self.target)
        self.target.run(f"kill -TERM {self.writer_pid}; for i in $(seq 60); do kill -0 {self.writer_pid} "
                        "2>/dev/null || break; sleep 0.5; done", timeout=60)
        writer_summary = self.target.run(f"cat {DRILL_DIR}/writer.json; tail -5 {DRILL_DIR}/writer.err",
                                         timeout=30).stdout.strip()
        log_text = self.ack_log()
        (self.work / "ack.jsonl").write_text(log_text)
        self.h["files"]["ack_log"] = f"{WORK_NAME}/ack.jsonl"
        log = parse_ack_log(log_text)
        self.event("snapshot", method=self.h["consistency"], source=source, image=str(snapshot),
                   seconds=round(snapshot_finished - snapshot_started, 2), job_seconds=round(job_seconds, 2),
                   last_acked_before_snapshot=last_acked, acked_before=len(log_before.acked),
                   acked_when_finished=len(log_after.acked), last_acked_when_finished=log_after.last_acked_seq,
                   guest_time_before=guest_before, service_before=before_show, service_after=after_show,
                   writer=writer_summary[-1500:], acked_total=len(log.acked), last_acked_seq=log.last_acked_seq,
                   max_attempted_seq=log.max_attempted_seq,
                   last_acked_before_guest_time=last_acked_before(log, guest_before))
        self.h["timestamps"] = {"snapshot_started": snapshot_started, "snapshot_finished": snapshot_finished}
        self.h["last_acked_before_snapshot"] = last_acked
        # the server acknowledges before its durability layer flushes: the writer's acknowledgements inside that
        # window before the snapshot (on the guest's clock, the writer's) may be missing from it
        self.h["snapshot_guest_time"] = guest_before
        self.h["durability"] = self.durability_window()
        # the newest write the server had promised to keep when the snapshot began: what the kit's own
        # verification query asks the restored database for
        self.h["last_durable_before_snapshot"] = last_acked_before(
            log, guest_before - self.h["durability"]["window_seconds"] - DURABILITY_SLACK)

        # the live copies, each started on its own port (evidence, judged with the rest by the suite)
        self.h["live_copy_results"] = [self.record_live_copy(c, n) for n, c in enumerate(copies)]

        # 4. recovery host prepared by the runbook
        self.restore(snapshot, expected, seed, mutant)

    def take_snapshot(self) -> tuple[Path, str, float]:
        """The backend's point-in-time snapshot of the data volume while the writer runs; the writer goes on
        for a few seconds more (during the copy where the backend allows it). Returns (image, source, seconds
        of the copy itself)."""
        snapshot = self.work / "snapshot.vol"
        info = self.lab.backend.snapshot_volume(snapshot, during=_idle(WRITE_AFTER_SNAPSHOT_SECONDS))
        self.h["snapshot_method"] = info.to_dict()
        self.h["consistency"] = info.consistency
        self.h["crash_consistent"] = bool(info.extra.get("crash_consistent_claim_proven"))
        return snapshot, str(info.extra.get("source", "")), float(info.extra.get("seconds", 0.0))

    def new_recovery_host(self) -> RecoveryHost:
        """A fresh host for the restore, from the backend (the runbook then prepares it)."""
        return self.lab.backend.recovery_host(self.progress)

    def swap_volume(self, host: RecoveryHost, restored: Path) -> dict[str, Any]:
        """"Attach it to the recovery instance": the recovery host is stopped, its own volume replaced by
        `restored`, started (the backend does it)."""
        return host.replace_volume(restored)

    def record_live_copy(self, copy: dict[str, Any], number: int) -> dict[str, Any]:
        from fixtures import conformance_seed as seed

        port = LIVE_COPY_PORT + number
        root = copy["path"]
        start = (f"chown -R {SERVICE}:{SERVICE} {root} && cd {root} || exit 1; setsid nohup sudo -u {SERVICE} "
                 f"{root}/spacetime --root-dir={root} start --listen-addr=127.0.0.1:{port} > {root}.log 2>&1 "
                 "< /dev/null & echo $!")
        res = self.target.run(start, timeout=60)
        url = f"http://127.0.0.1:{port}"
        wait = self.target.run(f"for i in $(seq 40); do c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 "
                               f"{url}/v1/ping); [ \"$c\" = 200 ] && break; sleep 1; done; echo $c", timeout=300)
        started = wait.stdout.strip() == "200"
        restored_file = ""
        if started:
            dump = self.agent(self.target, "dump", "--db", DB, "--token-file", f"{DRILL_DIR}/token.json",
                              "--tables", ",".join(seed.ALL_TABLE_NAMES), "--out", f"{DRILL_DIR}/livecopy.json",
                              timeout=300, url=url)
            if dump["exit_status"] in (0, 1):
                try:
                    self.fetch(self.target, f"{DRILL_DIR}/livecopy.json", f"livecopy-{number}.json")
                    restored_file = f"{WORK_NAME}/livecopy-{number}.json"
                except (LabError, FileNotFoundError):
                    restored_file = ""
        server_log = self.target.run(f"tail -40 {root}.log", timeout=30).stdout
        pid = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
        if pid.isdigit():  # setsid made the server's own session: end exactly that session
            self.target.run(f"pkill -TERM -s {pid}; for i in $(seq 20); do pgrep -s {pid} >/dev/null || break; "
                            f"sleep 0.5; done; pkill -KILL -s {pid}; true", timeout=60)
        self.target.run(f"rm -rf {root} {root}.log", timeout=120)
        return {**copy, "port": port, "started": started, "restored_file": restored_file,
                "server_output": server_log}

    def restore(self, snapshot: Path, expected: dict[str, Any], seed: Any, mutant: str) -> None:
        from harness.apply import apply_plan, apply_step

        self.progress(f"restore drill: recovery host: a fresh {self.lab.backend.scheme} host prepared by the "
                      f"runbook ...")
        started = time.monotonic()
        with spend("lab_setup"):
            recovery = self.new_recovery_host()
        self.recovery = recovery
        host = recovery.target
        boot_seconds = recovery.boot_seconds()

        services = self.lab.services

        def before_step(step: Any, target: Target) -> str | None:
            """The recovery host gets what the run's target got before the same step: the backend's volume, and
            the lab's certbot answers (without them `certbot --nginx` asks a question and ends in EOFError)."""
            done = [recovery.before_step(step), services.before_step(step, target) if services is not None else None]
            return "; ".join(d for d in done if d) or None

        prepared = apply_plan(self.plan, host, progress=lambda m: None, before_step=before_step)
        # a failed step keeps what it printed on both streams, and the service's journal then (`systemctl status`
        # says why on stdout, with nothing on stderr)
        journal = "" if prepared.ok else host.run(f"journalctl -u {SERVICE} --no-pager -n 30", timeout=30).stdout
        self.event("recovery_prepared", seconds=round(time.monotonic() - started, 1), ok=prepared.ok,
                   stopped_at=prepared.stopped_at.index if prepared.stopped_at else None,
                   steps=[{"index": r.step.index, "summary": r.step.summary()[:160], "status": r.status,
                           "seconds": round(r.duration, 1),
                           "error": (r.results[-1].stderr.strip()[-300:] if r.results and r.status == "failed"
                                     else r.note[:300] if r.status == "failed" else ""),
                           "output": (r.results[-1].stdout.strip()[-600:] if r.results and r.status == "failed"
                                      else "")} for r in prepared.records],
                   service=self.service_show(host), boot_seconds=boot_seconds, journal=journal[-3000:])
        self.progress(f"restore drill: recovery host prepared ({'ok' if prepared.ok else 'a step failed'}, "
                      f"{time.monotonic() - started:.0f}s); restoring ...")

        # 5. the runbook's restore flow
        restore_started = time.time()
        self.h["timestamps"]["restore_started"] = restore_started
        restored_volume = recovery.restored_volume_path()
        steps: list[dict[str, Any]] = []
        for step in self.flow:
            began = time.monotonic()
            entry: dict[str, Any] = {"index": step.index, "kind": step.kind.value, "summary": step.summary()[:200],
                                     "line": step.ref.line_start, "action": step.params.get("action", "")}
            if step.kind.value == "console":
                entry.update(self.console_action(step, recovery, host, snapshot, restored_volume, mutant))
            else:
                record = apply_step(step, host)
                entry.update({"status": record.status, "results": [r.to_dict() for r in record.results],
                              "note": record.note})
            entry["seconds"] = round(time.monotonic() - began, 2)
            steps.append(entry)
        self.event("restore", steps=steps)
        ping = self.ping(host)
        service_ready = time.time()
        self.h["timestamps"]["service_ready"] = service_ready
        ready: dict[str, Any] = {"ping": ping, "service": self.service_show(host),
                 "journal": host.run(f"journalctl -b -u {SERVICE} --no-pager | tail -12", timeout=30).stdout,
                 "stdb_mount": host.run(f"findmnt -n -o SOURCE,UUID,FSTYPE --mountpoint {MOUNT_POINT}",
                                        timeout=30).stdout.strip(),
                 "data_device": data_device(host),
                 "listing": host.run(f"ls -la {MOUNT_POINT}", timeout=30).stdout[-800:]}

        # 6. verify
        self.install_agent(host)
        host.write_file(f"{DRILL_DIR}/token.json", (self.work / "token.json").read_bytes(), mode=0o600)
        if mutant == "drop-table":
            ready["mutant"] = self.agent(host, "sql", "--db", DB, "--token-file", f"{DRILL_DIR}/token.json",
                                         "--query", f"DELETE FROM {DROPPED_TABLE}")
        dump = self.agent(host, "dump", "--db", DB, "--token-file", f"{DRILL_DIR}/token.json",
                          "--tables", ",".join(seed.ALL_TABLE_NAMES), "--out", f"{DRILL_DIR}/restored.json",
                          timeout=300)
        try:
            self.fetch(host, f"{DRILL_DIR}/restored.json", "restored.json")
            self.h["files"]["restored"] = f"{WORK_NAME}/restored.json"
        except (LabError, FileNotFoundError):
            pass
        self.h["timestamps"]["data_verified"] = time.time()
        token_check = self.agent(host, "verify-token", "--token-file", f"{DRILL_DIR}/token.json", "--db", DB)
        self.event("verify", ready=ready, dump={k: v for k, v in dump.items() if k != "out"} |
                   {"ok": dump["out"].get("ok")}, token_check=token_check)
        self.h["token_check"] = token_check["out"] or None
        self.progress("restore drill: restored database dumped; the suite judges it")

    def console_action(self, step: Any, recovery: RecoveryHost, host: Target, snapshot: Path,
                       restored_volume: Path, mutant: str) -> dict[str, Any]:
        action = step.params.get("action", "")
        if action == "restore_volume_from_snapshot":
            source = self.blank_volume() if mutant == "wrong-volume" else snapshot
            return recovery.volume_image(source, restored_volume)
        if action == "attach_volume":
            by = f"kit ({self.lab.backend.scheme} backend)"
            try:
                done = self.swap_volume(recovery, restored_volume)
            except LabError as exc:
                return {"status": "failed", "error": exc.one_line(), "performed_by": by}
            return {"status": "ok", "performed_by": by, **done}
        if action == "mount_volume":
            point = step.params.get("mount_point") or MOUNT_POINT
            device = data_device(host)  # the restored volume, found by serial (NVMe names can swap at boot)
            script = (f"mkdir -p {point}; if findmnt -n --mountpoint {point} >/dev/null; then "
                      f"echo already mounted: $(findmnt -n -o SOURCE --mountpoint {point}); "
                      f"else mount {device} {point}; fi; findmnt -n -o SOURCE,UUID,FSTYPE --mountpoint {point}")
            res = host.run(script, timeout=120)
            mounted = res.stdout.strip().splitlines()[-1:] or [""]
            return {"status": "ok" if res.ok and mounted[0].startswith(device + " ") else "failed",
                    "performed_by": "kit", "device": device, "results": [res.to_dict()]}
        if action == "start_service":
            res = host.run(f"systemctl start {step.params.get('service') or SERVICE}", timeout=120)
            return {"status": "ok" if res.ok else "failed", "performed_by": "kit", "results": [res.to_dict()]}
        if action == "verify_query":
            last = self.h.get("last_durable_before_snapshot") or self.h.get("last_acked_before_snapshot") or 1
            query = f"SELECT * FROM seq WHERE seq = {int(last)}"
            sql = (f"sudo -u {SERVICE} {MOUNT_POINT}/spacetime --root-dir={MOUNT_POINT} sql -s local {DB} "
                   f"{shlex.quote(query)}")
            res = host.run(f"for i in $(seq 30); do curl -s -o /dev/null --max-time 3 "
                           f"http://127.0.0.1:3000/v1/ping && break; case $(systemctl is-active {SERVICE}) in "
                           f"failed|inactive) [ $i -gt 5 ] && break;; esac; sleep 1; done; {sql}", timeout=180)
            from fixtures.conformance_seed import seq_payload

            found = res.ok and seq_payload(int(last)) in res.stdout
            entry: dict[str, Any] = {
                "status": "ok" if found else "failed", "performed_by": "kit (its own query through the CLI)",
                "query": query, "expected_payload": seq_payload(int(last)), "results": [res.to_dict()]}
            # the runbook's own verification, verbatim, when it is a command that can run as written
            command = str(step.params.get("command") or "")
            entry["runbook_command"] = command
            if runnable_as_written(command):
                mine = host.run(command, timeout=120)
                entry["runbook_result"] = mine.to_dict()
            return entry
        return {"status": "manual", "performed_by": "nobody", "detail": f"no provider for console action {action!r}"}

    def blank_volume(self) -> Path:
        """Mutant `wrong-volume`: another volume (blank ext4, no database) in place of the data volume's snapshot."""
        raw = self.work / "blank-volume.raw"
        with open(raw, "wb") as handle:
            handle.truncate(256 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(raw)], capture_output=True, timeout=120, check=False)
        return raw

    def cleanup(self) -> None:
        if self.writer_pid.isdigit():
            try:
                self.target.run(f"kill -TERM {self.writer_pid} 2>/dev/null; true", timeout=30)
            except LabError:
                pass
        try:
            if self.recovery is not None:
                self.recovery.release()
        except Exception as exc:  # noqa: BLE001 - the run's teardown releases it again
            self.h["cleanup_error"] = str(exc)


def _idle(seconds: float) -> Callable[[], None]:
    """A pause of `seconds`, counted as idle time (time_ledger)."""
    def pause() -> None:
        with spend("idle"):
            time.sleep(seconds)
    return pause
