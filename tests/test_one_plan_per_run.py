"""One plan per run: the runbook is read once, at the start; the suites and scenarios judge that plan (handed
to them as data in the run's state), whatever happens to the file during the run. The copy the run read and
its sha256 are kept in the report directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.planner import build_plan
from harness.run import _freeze_plan
from harness.run_state import RunState, plan_of_run
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
    state = RunState(run_id="r", backend="docker", workdir=str(workdir), runbook=str(copy), profile="default",
                     plan=str(plan_path))
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
    RunState(run_id="r", backend="docker", runbook=str(work / "runbook.md"), profile="default",
             plan=str(work / "plan.json"), workdir=str(work),
             histories={"backup_restore": str(work / "history-backup_restore.json")},
             spacetimedb={"note": "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
             ).save(work / "lab-state.json")
    _keep_histories(work, out)
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == ["histories/history-backup_restore.json", "histories/lab-state.json", "histories/plan.json",
                    "histories/restore-drill/expected.json"]
    state = json.loads((out / "histories" / "lab-state.json").read_text())
    assert state["histories"] == {"backup_restore": "history-backup_restore.json"}
    assert state["plan"] == "plan.json" and state["workdir"] == "."
    assert "wJalrXUtnFEMI" not in (out / "histories" / "lab-state.json").read_text()


def test_a_run_state_from_another_version_is_one_line(tmp_path: Path) -> None:
    import json

    import pytest

    from harness.errors import KitError

    path = tmp_path / "lab-state.json"
    state = RunState(run_id="r", backend="vm", workdir=str(tmp_path), runbook="rb.md", profile="default")
    state.save(path)
    assert RunState.load(path) == state  # round trip
    for data, said in [({**state.to_dict(), "schema": 99}, "schema 99; this kit reads schema 1"),
                       ({k: v for k, v in state.to_dict().items() if k != "schema"}, "no schema version"),
                       ({**state.to_dict(), "extra": 1}, "unknown key(s) extra"),
                       ({**state.to_dict(), "run_id": 7}, "`run_id` must be a string"),
                       ([], "not a JSON object")]:
        path.write_text(json.dumps(data))
        with pytest.raises(KitError) as err:
            RunState.load(path)
        line = err.value.one_line()
        assert said in line and "\n" not in line, line
    path.write_text("{")
    with pytest.raises(KitError, match="not valid JSON"):
        RunState.load(path)
