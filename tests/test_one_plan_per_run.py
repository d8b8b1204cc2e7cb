"""One plan per run: the runbook is read once, at the start; the suites and scenarios judge that plan (handed
to them as data in the run's state), whatever happens to the file during the run. The copy the run read and
its sha256 are kept in the report directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.planner import build_plan
from harness.run import _freeze_plan
from harness.run_state import plan_of_run
from tests.conftest import shared_runbook


def test_a_runbook_edited_mid_run_does_not_change_what_is_judged(tmp_path: Path) -> None:
    runbook = tmp_path / "self-hosting.md"
    original = shared_runbook().read_bytes()
    runbook.write_bytes(original)
    plan = build_plan(runbook, "default")
    workdir, report_dir = tmp_path / "work", tmp_path / "report"
    workdir.mkdir()
    copy, plan_path = _freeze_plan(plan, original, workdir, report_dir)
    # an operator edits Step 5 while the run is going
    edited = original.replace(b"spacetime publish", b"spacetime publish --edited-mid-run")
    assert edited != original
    runbook.write_bytes(edited)
    state = {"runbook": str(copy), "profile": "default", "plan": str(plan_path)}
    judged = plan_of_run(state)
    assert judged == plan
    assert not any("--edited-mid-run" in s.command for s in judged.steps)
    assert copy.read_bytes() == original and (report_dir / "runbook.md").read_bytes() == original
    sha = hashlib.sha256(original).hexdigest()
    assert sha == plan.runbook_sha256
    assert (report_dir / "runbook.md.sha256").read_text().split()[0] == sha
    # the edited file would have planned differently: the test can fail
    assert build_plan(runbook, "default") != plan


def test_the_plan_round_trips_losslessly_for_every_test_runbook() -> None:
    from harness.model import Plan

    folder = Path(__file__).parent / "runbooks"
    planned = 0
    for path in sorted(folder.glob("*.md")):
        try:
            plan = build_plan(path, "default")
        except Exception:  # noqa: BLE001 - the malformed runbooks are there to fail planning
            continue
        assert Plan.from_state(plan.to_state()) == plan, path.name
        planned += 1
    assert planned >= 5


def test_a_finished_run_keeps_its_recordings_in_the_report_dir(tmp_path: Path) -> None:
    """The plan, the run state and the histories with the files they name stay (redacted, paths relative);
    volume images and tokens do not."""
    import json

    from harness.run import _keep_histories

    work, out = tmp_path / "work", tmp_path / "out"
    (work / "restore-drill").mkdir(parents=True)
    (work / "plan.json").write_text("{}")
    (work / "history-backup_restore.json").write_text('{"files": {"expected": "restore-drill/expected.json"}}')
    (work / "restore-drill" / "expected.json").write_text("{}")
    (work / "restore-drill" / "snapshot.vol").write_bytes(b"\0" * 1024)
    (work / "restore-drill" / "token.json").write_text('{"token": "secret"}')
    (work / "lab-state.json").write_text(json.dumps({
        "plan": str(work / "plan.json"), "workdir": str(work),
        "histories": {"backup_restore": str(work / "history-backup_restore.json")},
        "aws_secret": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}))
    _keep_histories(work, out)
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == ["histories/history-backup_restore.json", "histories/lab-state.json", "histories/plan.json",
                    "histories/restore-drill/expected.json"]
    state = json.loads((out / "histories" / "lab-state.json").read_text())
    assert state["histories"] == {"backup_restore": "history-backup_restore.json"}
    assert state["plan"] == "plan.json" and state["workdir"] == "."
    assert "wJalrXUtnFEMI" not in (out / "histories" / "lab-state.json").read_text()
