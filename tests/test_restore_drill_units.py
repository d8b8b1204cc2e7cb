"""Fast parts of the restore drill: which steps form the runbook's restore flow, the RPO/RTO examples the
suite compares with, and how the report shows the drill (no lab needed)."""

from __future__ import annotations

from pathlib import Path

from harness.planner import build_plan
from harness.scenarios.restore_drill import restore_flow, summary
from reports.contract import RunReport, write_reports
from tests.conftest import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "runbook" / "self-hosting.md"
DRILL = REPO_ROOT / "harness" / "selftest" / "runbooks" / "restore-drill.md"
VOLUME = REPO_ROOT / "harness" / "selftest" / "runbooks" / "volume-before-install.md"


def test_the_flow_is_the_last_restore_procedure_of_the_shared_runbook() -> None:
    plan = build_plan(SHARED)
    flow = restore_flow(plan)
    actions = [s.params.get("action") or s.command for s in flow]
    assert actions == ["restore_volume_from_snapshot", "attach_volume", "mount_volume",
                       "sudo chown -R spacetimedb:spacetimedb /stdb", "sudo systemctl start spacetimedb",
                       "verify_query"], actions
    assert flow[1].params.get("instance") == "recovery"
    assert all(s.phase == "restore" for s in flow)


def test_a_runbook_without_a_restore_procedure_has_no_flow() -> None:
    assert restore_flow(build_plan(VOLUME)) == []


def test_the_test_runbook_has_the_shared_flow_and_targets() -> None:
    from harness.suites.test_backup_restore import _runbook_target

    assert len(restore_flow(build_plan(DRILL))) == 6
    assert _runbook_target(str(DRILL), "RPO") == (3600.0, "RPO (data loss tolerance): e.g. 1 hour")
    assert _runbook_target(str(SHARED), "RTO") == (1800.0, "RTO (time to restore): e.g. 30 minutes")
    assert _runbook_target(str(VOLUME), "RTO") is None


def _history() -> dict:
    return {
        "applicable": True, "mutant": "", "seed": 7, "consistency": "crash-consistent: test",
        "expected_tables": {"floats": {"count": 3, "checksum": "a" * 64}, "texts": {"count": 2, "checksum": "b" * 64}},
        "verdict": {"verdict": "fail", "properties": [
            {"id": "baseline_rows_identical", "ok": False, "summary": "differs: floats", "evidence": {"tables": {
                "floats": {"expected_count": 3, "restored_count": 0, "restored_checksum": "c" * 64},
                "texts": {"expected_count": 2, "restored_count": 2, "restored_checksum": "b" * 64}}}}],
            "measurements": {"last_acked_before_snapshot": 41, "restored_max_seq": 57, "restored_seq_rows": 57,
                             "last_acked_seq": 90, "max_attempted_seq": 91, "rto_verified_seconds": 123.4,
                             "rto_seconds": 110.0, "loss_window_seq": 33, "loss_window_seconds": 4.5}},
        "live_copy_results": [{"copy_started_at": 1.0, "copy_finished_at": 1.5, "started": True,
                               "verdict": {"outcome": "consistent", "observations": ["all there"]}}],
    }


def test_the_report_shows_counts_checksums_seq_rto_and_loss_window(tmp_path: Path) -> None:
    report = RunReport(run_id="r1", backend="vm", runbook_path=str(DRILL), runbook_sha256="a" * 64,
                       profile="default", environment={"scenario_backup_restore": {
                           "applicable": True, "events": [], "restore": summary(_history())}})
    paths = write_reports(report, tmp_path)
    text = paths["markdown"].read_text() if "markdown" in paths else (tmp_path / "conformance.md").read_text()
    html = paths["html"].read_text()
    assert "<h2>Restore drill</h2>" in html and "cccccccccccccccc" in html
    assert "## Restore drill" in text
    assert "| floats | 3 | 0 | `aaaaaaaaaaaaaaaa` | `cccccccccccccccc` |" in text
    assert "| texts | 2 | 2 |" in text
    assert "| last write acknowledged before the snapshot began (seq) | 41 |" in text
    assert "57 / 57" in text and "90 / 91" in text
    assert "123.4 s" in text and "33 acknowledged writes, 4.5 s" in text and "110.0 s" in text
    assert "copy 1: consistent" in text


def _judge_history(tmp_path: Path, history: dict) -> dict[str, dict]:
    """Run harness/suites/test_backup_restore.py (the real suite, through the plugin) on a recorded history."""
    import json
    import subprocess
    import sys

    tmp_path.mkdir(parents=True, exist_ok=True)
    hist = tmp_path / "history.json"
    hist.write_text(json.dumps(history))
    state = tmp_path / "state.json"
    from harness.run_state import RunState

    RunState(run_id="r1", backend="vm", runbook=str(DRILL), profile="default", workdir=str(tmp_path),
             histories={"backup_restore": str(hist)}).save(state)
    out = tmp_path / "checks.json"
    suite = REPO_ROOT / "harness" / "suites" / "test_backup_restore.py"
    subprocess.run([sys.executable, "-m", "pytest", str(suite), "-q", "-p", "harness.pytest_plugin",
                    "--lab-state", str(state), "--checks-out", str(out),
                    "-p", "no:cacheprovider", "--rootdir", str(REPO_ROOT), "-o", "addopts="],
                   cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    return {c["id"]: c for c in json.loads(out.read_text())}


def test_a_drill_stopped_at_seeding_fails_once_with_a_runbook_reference(tmp_path: Path) -> None:
    checks = _judge_history(tmp_path, {
        "applicable": True, "backend": "vm", "error": "the conformance database could not be published",
        "events": [{"name": "seed", "ping": "000", "publish": {"out": {"ok": False}, "command": "publish"},
                    "seed": None}]})
    assert len(checks) == 14 and all(c["outcome"] == "failed" for c in checks.values()), \
        {i: c["outcome"] for i, c in checks.items()}
    with_ref = [i for i, c in checks.items() if c.get("runbook_ref")]
    assert with_ref == ["backup_restore.database-seeded"], with_ref  # one finding, on the stage that broke
    assert "could not be published" in checks["backup_restore.schema-identical"]["message"]


def test_a_drill_that_did_not_apply_is_not_applicable_everywhere(tmp_path: Path) -> None:
    checks = _judge_history(tmp_path, {"applicable": False, "events": [],
                                       "reason": "the plan has no restore procedure"})
    assert len(checks) == 14
    assert {c["outcome"] for c in checks.values()} == {"not-applicable"}
    assert all("no restore procedure" in c["message"] for c in checks.values())


def _restore_history(steps: list[dict], verify: dict) -> dict:
    events = [{"name": "seed"}, {"name": "snapshot", "method": "qemu block copy", "service_before": "MainPID=10",
                                 "service_after": "MainPID=10", "acked_before": 5, "acked_when_finished": 9},
              {"name": "recovery_prepared", "ok": True, "steps": []},
              {"name": "restore", "steps": [*steps, {"index": 9, "kind": "console", "line": 30,
                                                     "action": "verify_query", "summary": "verify", "status": "ok",
                                                     "performed_by": "kit", **verify}]}]
    return {"applicable": True, "backend": "vm", "consistency": "crash-consistent: test", "crash_consistent": True,
            "events": events}


CONSOLE = {"index": 1, "kind": "console", "line": 20, "action": "attach_volume", "summary": "attach", "status": "ok",
           "performed_by": "kit (vm backend)"}
SHELL = {"index": 2, "kind": "shell", "line": 24, "action": "", "summary": "sudo systemctl start spacetimedb",
         "status": "ok", "results": []}


def test_steps_the_kit_performs_are_adaptations_never_passed_checks(tmp_path: Path) -> None:
    placeholder = {"runbook_command": "spacetime sql ...", "query": "SELECT 1"}
    checks = _judge_history(tmp_path, _restore_history([CONSOLE], placeholder))
    steps, verify = checks["backup_restore.restore-steps-succeed"], checks["backup_restore.verify-query"]
    assert steps["outcome"] == "not-applicable" and "performed by the kit" in steps["message"], steps
    assert verify["outcome"] == "not-applicable" and "cannot run as written" in verify["message"], verify
    snapshot = checks["backup_restore.snapshot-while-writing"]
    assert snapshot["outcome"] == "not-applicable" and "taken by the kit" in snapshot["message"]
    assert snapshot["required"] is False
    # a kit step that failed is still red: an adaptation can fail
    failed = _judge_history(tmp_path / "f", _restore_history([{**CONSOLE, "status": "failed", "error": "no disk"}],
                                                             placeholder))
    assert failed["backup_restore.restore-steps-succeed"]["outcome"] == "failed"


def test_the_runbooks_own_steps_and_verification_are_what_is_judged(tmp_path: Path) -> None:
    ran = {"runbook_command": "sudo -u spacetimedb /stdb/spacetime sql -s local probe 'SELECT 1'",
           "runbook_result": {"exit_status": 0, "stdout": "1\n", "stderr": ""}}
    checks = _judge_history(tmp_path, _restore_history([CONSOLE, SHELL], ran))
    assert checks["backup_restore.restore-steps-succeed"]["outcome"] == "passed"
    assert checks["backup_restore.verify-query"]["outcome"] == "passed"
    broken = {**ran, "runbook_result": {"exit_status": 1, "stdout": "", "stderr": "no such database"}}
    checks = _judge_history(tmp_path / "b", _restore_history([CONSOLE, SHELL], broken))
    verify = checks["backup_restore.verify-query"]
    assert verify["outcome"] == "failed" and "no such database" in verify["message"]


def test_placeholders_in_a_verification_command_are_not_run() -> None:
    from harness.scenarios.restore_drill import runnable_as_written

    assert not runnable_as_written("spacetime sql ...")
    assert not runnable_as_written("spacetime sql <database-name> 'SELECT 1'")
    assert not runnable_as_written("")
    assert runnable_as_written("spacetime sql -s local probe 'SELECT * FROM seq LIMIT 1'")


class _Timer:
    def phase(self, _name: str):  # type: ignore[no-untyped-def]
        import contextlib

        return contextlib.nullcontext()


class _Lab:
    def state(self) -> dict:
        return {}


def test_a_generator_that_crashes_is_recorded_not_raised(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json
    import sys
    import types

    from harness import scenarios

    broken = types.ModuleType("stdbc_broken_generator")

    def generate(lab, state, progress):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    broken.generate = generate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stdbc_broken_generator", broken)
    monkeypatch.setitem(scenarios.GENERATORS, "backup_restore", "stdbc_broken_generator")
    state = tmp_path / "state.json"
    from harness.run_state import RunState

    RunState(run_id="r", backend="vm", workdir=str(tmp_path), runbook="rb.md", profile="default").save(state)
    said: list[str] = []
    path = scenarios.generate("backup_restore", lab=_Lab(), state_path=state, timer=_Timer(), progress=said.append)
    assert path is not None
    history = json.loads(path.read_text())
    assert history["applicable"] and "RuntimeError: boom" in history["error"], history
    assert said and "boom" in said[0]


def test_writes_in_flight_are_not_claimed_from_a_copy_cleaner_than_a_crash(tmp_path: Path) -> None:
    props = [{"id": pid, "ok": ok, "required": True, "summary": f"{pid} said {ok}", "evidence": {}}
             for pid, ok in (("seq_gap_free", True), ("acked_writes_present", True), ("no_phantom_writes", False),
                             ("schema_identical", True))]
    history = {**_restore_history([CONSOLE, SHELL], {"runbook_command": "x ..."}),
               "consistency": "filesystem-consistent (fsfreeze + copy)", "crash_consistent": False,
               "verdict": {"verdict": "fail", "properties": props, "measurements": {}}}
    checks = _judge_history(tmp_path, history)
    assert checks["backup_restore.seq-gap-free"]["outcome"] == "not-applicable"
    assert "cleaner than a crash" in checks["backup_restore.acked-writes-present"]["message"]
    assert checks["backup_restore.no-phantom-writes"]["outcome"] == "failed"  # red stays red
    assert checks["backup_restore.schema-identical"]["outcome"] == "passed"  # not about writes in flight
    crash = _judge_history(tmp_path / "c", {**history, "crash_consistent": True})
    assert crash["backup_restore.seq-gap-free"]["outcome"] == "passed"
