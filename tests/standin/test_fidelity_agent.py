"""The restore drill's agent against a local stand-in (127.0.0.1, random port): publish, seed 10,000 rows,
dump, and the oracle; a writer interrupted by kill -9 of the server, a restart on the same root, and the
oracle again; then mutants (rows deleted or changed behind the writer's back) that the oracle must catch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures import conformance_seed as seed
from fixtures.spacetimedb_standin.testing import StandinServer, free_port, standin_env
from harness import fidelity

AGENT = Path(__file__).resolve().parents[2] / "harness/agents/fidelity_agent.py"
DB = "stdbc-fidelity"
SEED = 20240601
# small commitlog segments: the stand-in snapshots on every rotation, so a restart loads a snapshot and
# replays the log after it (with the default 1 GiB segments it would only replay the log)
SEGMENT_BYTES = 256 * 1024
WINDOW = 0.5  # the stand-in's durability interval here (SpacetimeDB's default)


@dataclass
class Drill:
    server: StandinServer
    work: Path
    expected: dict[str, Any]
    seed_summary: dict[str, Any]

    @property
    def token_file(self) -> Path:
        return self.work / "token.json"

    def agent(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(AGENT), "--url", self.server.url, "--timeout", "10", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert result.returncode == 0, f"{args[0]}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def dump(self, name: str) -> dict[str, Any]:
        out = self.work / f"{name}.json"
        self.agent(
            "dump",
            "--db",
            DB,
            "--token-file",
            str(self.token_file),
            "--tables",
            ",".join(seed.ALL_TABLE_NAMES),
            "--out",
            str(out),
        )
        return json.loads(out.read_text())

    def sql(self, query: str) -> dict[str, Any]:
        result = self.agent("sql", "--db", DB, "--token-file", str(self.token_file), "--query", query)
        return json.loads(result.stdout)

    def verify_token(self) -> dict[str, Any]:
        result = self.agent("verify-token", "--token-file", str(self.token_file), "--db", DB, check=False)
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory, installed_template: Path) -> Iterator[Drill]:
    work = tmp_path_factory.mktemp("fidelity")
    root = work / "stdb"
    shutil.copytree(installed_template, root, symlinks=True)
    server = StandinServer(root, free_port(), standin_env(STDB_STANDIN_MAX_SEGMENT_SIZE=str(SEGMENT_BYTES),
                                                                  STDB_STANDIN_DURABILITY_INTERVAL=str(WINDOW))).start()
    try:
        plan = seed.build_plan(SEED)
        (work / "plan.json").write_text(plan.to_json_text(), encoding="utf-8")
        partial = Drill(server, work, seed.expected_baseline(plan), {})
        published = json.loads(
            partial.agent(
                "publish", "--db", DB, "--module", str(seed.STANDIN_MODULE_PATH), "--token-out", str(partial.token_file)
            ).stdout
        )
        assert published["ok"] and published["op"] == "created", published
        seeded = partial.agent(
            "seed", "--db", DB, "--token-file", str(partial.token_file), "--plan", str(work / "plan.json"), timeout=120
        )
        partial.seed_summary = json.loads(seeded.stdout)
        yield partial
    finally:
        server.stop()


def test_publish_writes_a_private_token_file(drill: Drill) -> None:
    token = json.loads(drill.token_file.read_text())
    assert set(token) == {"identity", "token"} and len(token["identity"]) == 64
    assert drill.token_file.stat().st_mode & 0o077 == 0


def test_seeding_10000_rows_is_fast_and_complete(drill: Drill) -> None:
    summary = drill.seed_summary
    assert summary["ok"] and summary["failure"] is None, summary
    assert summary["rows"] >= 10_000 and summary["sql_statements"] > 0
    assert summary["calls"] < summary["rows"] / 4
    assert summary["seconds"] < 30, f"seeding took {summary['seconds']} s"


def test_the_seeded_database_is_judged_identical_to_the_baseline(drill: Drill) -> None:
    dump = drill.dump("seeded")
    verdict = fidelity.judge_restore(
        expected=drill.expected,
        restored=dump,
        ack_log="",
        last_acked_before_snapshot=0,
        token_check=drill.verify_token(),
    )
    assert verdict["verdict"] == "pass", [p for p in verdict["properties"] if p["ok"] is not True]
    baseline = next(p for p in verdict["properties"] if p["id"] == "baseline_rows_identical")
    counts = {t: e["restored_count"] for t, e in baseline["evidence"]["tables"].items()}
    assert sum(counts.values()) == drill.seed_summary["rows"]


def test_dump_reports_a_missing_table_instead_of_failing_silently(drill: Drill) -> None:
    result = drill.agent(
        "dump", "--db", DB, "--token-file", str(drill.token_file), "--tables", "seq,no_such", check=False
    )
    assert result.returncode == 1
    dump = json.loads(result.stdout)
    assert dump["seq"]["status"] == 200 and dump["no_such"]["status"] == 400 and dump["no_such"]["rows"] is None


def _wait_for_acks(log: Path, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count('"acked":true') >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the writer did not get {count} acknowledgements within {timeout} s")


def test_writes_acknowledged_before_a_kill9_survive_the_restart(drill: Drill) -> None:
    log = drill.work / "writer.log"
    writer = subprocess.Popen(
        [
            sys.executable,
            str(AGENT),
            "--url",
            drill.server.url,
            "--timeout",
            "5",
            "write",
            "--db",
            DB,
            "--token-file",
            str(drill.token_file),
            "--log",
            str(log),
            "--max-writes",
            "100000",
            "--max-seconds",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_acks(log, 300, timeout=15)
        time.sleep(3 * WINDOW)  # writes older than the durability window, and writes inside it, at the kill
        drill.server.kill9()  # the "snapshot": whatever the disk holds at this instant
        killed_at = time.time()
        time.sleep(0.6)  # the writer keeps trying and logs its unacknowledged attempts
        os.kill(writer.pid, signal.SIGTERM)
        out, err = writer.communicate(timeout=20)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
    assert writer.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "SIGTERM"
    entries = fidelity.parse_ack_log(log.read_text())
    assert entries.bad_lines == 0 and len(entries.entries) == summary["attempts"]
    assert any(not e["acked"] for e in entries.entries), "attempts after the kill must be logged as unacknowledged"
    last_acked = fidelity.last_acked_before(entries, killed_at)
    # the writer is sequential and stamps an acknowledgement after reading it: the one write answered just before
    # the kill may carry a time after `killed_at`, never more than one
    assert entries.last_acked_seq == summary["last_acked_seq"] and 0 <= entries.last_acked_seq - last_acked <= 1

    snapshots = list((drill.server.root / "data").glob("replicas/*/snapshots/*.snapshot_dir"))
    assert len(snapshots) >= 2, "the drill should exercise snapshot loading, not only log replay"
    drill.server.start()
    restored = drill.dump("restarted")
    token = drill.verify_token()
    assert token["ok"], token
    verdict = fidelity.judge_restore(
        expected=drill.expected,
        restored=restored,
        ack_log=log.read_text(),
        last_acked_before_snapshot=last_acked,
        token_check=token,
        writer_identity=token["identity"],
        timestamps={"restore_started": killed_at, "service_ready": time.time()},
        durability_window=WINDOW, snapshot_time=killed_at,
    )
    assert verdict["verdict"] == "pass", [p for p in verdict["properties"] if p["ok"] is not True]
    top = verdict["measurements"]["restored_max_seq"]
    # the stand-in acknowledges from memory and flushes every WINDOW s, as SpacetimeDB does: what was acknowledged
    # a whole window before the kill is there; what is missing was acknowledged inside the window
    acked = entries.ack_times
    bound = WINDOW + fidelity.DURABILITY_SLACK  # the flush interval, plus the flush itself and the clock reads
    assert any(at <= killed_at - bound for at in acked.values())
    assert top is not None and all(seq <= top for seq, at in acked.items() if at <= killed_at - bound)
    acked_prop = next(p for p in verdict["properties"] if p["id"] == "acked_writes_present")
    lost = acked_prop["evidence"]["acked_unflushed_lost"]
    assert lost == verdict["measurements"]["loss_window_seq"] == len([s for s in acked if s > top])
    assert acked_prop["evidence"]["measured_unflushed_window_seconds"] <= bound

    # mutants behind the writer's back: the oracle must turn red, each on the property it is about
    middle = max(s for s, at in acked.items() if at <= killed_at - bound) // 2  # acknowledged before the window
    assert drill.sql(f"DELETE FROM seq WHERE seq = {middle}")["ok"]
    gap = fidelity.judge_restore(
        expected=drill.expected,
        restored=drill.dump("gap"),
        ack_log=log.read_text(),
        last_acked_before_snapshot=last_acked,
        token_check=token,
    )
    gap_free = next(p for p in gap["properties"] if p["id"] == "seq_gap_free")
    assert gap["verdict"] == "fail" and gap_free["ok"] is False and gap_free["evidence"]["missing"] == [middle]

    assert drill.sql(f"DELETE FROM seq WHERE seq >= {middle}")["ok"]
    truncated = fidelity.judge_restore(
        expected=drill.expected,
        restored=drill.dump("truncated"),
        ack_log=log.read_text(),
        last_acked_before_snapshot=last_acked,
        token_check=token,
        durability_window=WINDOW, snapshot_time=killed_at,  # writes far older than the window: still red
    )
    states = {p["id"]: p["ok"] for p in truncated["properties"]}
    assert states["seq_gap_free"] is True and states["acked_writes_present"] is False
    assert truncated["measurements"]["loss_window_seq"] == last_acked - middle + 1

    assert drill.sql("UPDATE texts SET s = 'mutant' WHERE id = 5")["ok"]
    phantom_seq = (entries.max_attempted_seq or 0) + 10
    assert drill.sql(
        f"INSERT INTO seq (seq, payload, writer) VALUES "
        f"({phantom_seq}, '{seed.seq_payload(phantom_seq)}', 0x{token['identity']})"
    )["ok"]
    changed = fidelity.judge_restore(
        expected=drill.expected,
        restored=drill.dump("changed"),
        ack_log=log.read_text(),
        last_acked_before_snapshot=middle - 1,
        token_check=token,
    )
    states = {p["id"]: p for p in changed["properties"]}
    assert states["baseline_rows_identical"]["ok"] is False
    assert (
        states["baseline_rows_identical"]["evidence"]["tables"]["texts"]["unexpected_examples"][0].find('"mutant"') >= 0
    )
    assert states["no_phantom_writes"]["ok"] is False
    assert states["no_phantom_writes"]["evidence"]["never_written"] == [phantom_seq]


def test_a_token_from_another_server_does_not_verify(drill: Drill, tmp_path: Path) -> None:
    other = tmp_path / "other-token.json"
    token = json.loads(drill.token_file.read_text())
    head, _, signature = token["token"].rpartition(".")
    other.write_text(json.dumps({"identity": token["identity"], "token": f"{head}.{signature[::-1]}"}))
    result = drill.agent("verify-token", "--token-file", str(other), "--db", DB, check=False)
    assert result.returncode == 1 and json.loads(result.stdout)["ok"] is False


def test_the_writer_steps_over_a_seq_that_is_already_there(drill: Drill) -> None:
    """A 530 duplicate (an earlier unacknowledged attempt committed) is logged as present, not retried forever."""
    # seqs 1-3 exist whichever tests of this module ran before on this worker (an earlier write, or this one)
    drill.agent("write", "--db", DB, "--token-file", str(drill.token_file), "--log", str(drill.work / "seq1.log"),
                "--max-writes", "3", "--max-seconds", "10", "--start-seq", "1", check=False)
    log = drill.work / "restart-writer.log"
    result = drill.agent(
        "write",
        "--db",
        DB,
        "--token-file",
        str(drill.token_file),
        "--log",
        str(log),
        "--max-writes",
        "3",
        "--max-seconds",
        "10",
        "--start-seq",
        "1",
        check=False,
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["seq"], e["acked"], e["status"], e.get("present")) for e in lines] == [
        (1, False, 530, True),
        (2, False, 530, True),
        (3, False, 530, True),
    ]
    summary = json.loads(result.stdout)
    assert result.returncode == 1 and summary["acked"] == 0 and summary["stopped_by"] == "max-writes"
