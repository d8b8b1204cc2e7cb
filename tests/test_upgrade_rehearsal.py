"""The upgrade rehearsal's pieces without a lab: reading the runbook's update section, the mirror's release,
and the checker over recorded histories (downtime, data comparison, rollback outcome)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.spacetimedb_standin.release import DEFAULT_VERSIONS, build_release_tree, publish_latest
from harness.planner import build_plan
from harness.scenarios.upgrade import pinned_command, root_dir, split_update_section
from harness.targets.base import CommandResult
from harness.upgrade_judge import compare_dumps, downtime, rollback_outcome, summary

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "harness" / "selftest" / "runbooks" / "self-hosting-reference.md"
SHARED = REPO.parent / "shared" / "runbook" / "self-hosting.md"


def test_the_update_section_is_an_upgrade_and_a_way_back() -> None:
    plan = build_plan(REFERENCE, "self-hosting-only")
    update, pinned = split_update_section(plan)
    assert [s.command for s in update] == [
        "sudo systemctl stop spacetimedb",
        "sudo -u spacetimedb /stdb/spacetime --root-dir=/stdb version upgrade",
        "sudo systemctl start spacetimedb"]
    assert pinned is not None and pinned.command.endswith("version install 2.8.2 --use")
    assert pinned_command(pinned, "2.8.1").endswith("version install 2.8.1 --use")
    assert pinned_command(pinned, "2.8.2") == pinned.command
    assert root_dir(plan) == "/stdb"


def test_the_mirror_installs_the_release_before_the_newest_and_a_release_moves_latest(tmp_path: Path) -> None:
    assert len(DEFAULT_VERSIONS) >= 3
    build_release_tree(tmp_path, latest=DEFAULT_VERSIONS[-2])
    assert (tmp_path / "latest-version").read_text().strip() == f"v{DEFAULT_VERSIONS[-2]}"
    old = (tmp_path / "releases/latest/download/spacetimedb-update-x86_64-unknown-linux-gnu").read_bytes()
    assert publish_latest(tmp_path) == DEFAULT_VERSIONS[-1]
    assert (tmp_path / "latest-version").read_text().strip() == f"v{DEFAULT_VERSIONS[-1]}"
    new = (tmp_path / "releases/latest/download/spacetimedb-update-x86_64-unknown-linux-gnu").read_bytes()
    assert new != old and new == (tmp_path / f"refs/tags/v{DEFAULT_VERSIONS[-1]}/"
                                  "spacetimedb-update-x86_64-unknown-linux-gnu").read_bytes()
    assert json.loads((tmp_path / "STANDIN.json").read_text())["latest"] == DEFAULT_VERSIONS[-1]


def test_downtime_is_the_longest_run_of_failed_probes() -> None:
    up = {"status": 200, "who": "backend"}
    down = {"status": 502, "who": "proxy"}
    samples = [{"t": 0.0, **up}, {"t": 0.5, **up}, {"t": 1.0, **down}, {"t": 1.5, **down}, {"t": 2.0, **down},
               {"t": 2.5, **up}, {"t": 3.0, **down}, {"t": 3.5, **up}]
    window = downtime(samples)
    assert window["samples"] == 8 and window["failed"] == 4
    assert window["longest_seconds"] == 2.0 and window["windows"] == [[0.5, 2.5], [2.5, 3.5]]
    assert window["up_at_end"] is True
    assert downtime([{"t": 0.0, **up}, {"t": 0.5, **down}])["up_at_end"] is False


def _dump(rows: dict[str, list[list[Any]]]) -> dict[str, Any]:
    return {t: {"schema": [{"name": "id", "type": "U32"}, {"name": "v", "type": "String"}], "rows": r, "status": 200}
            for t, r in rows.items()}


def test_the_data_comparison_sees_a_dropped_table_a_lost_row_and_a_changed_value() -> None:
    before = _dump({"a": [[1, "x"], [2, "y"]], "b": [[1, "z"]]})
    assert compare_dumps(before, _dump({"a": [[2, "y"], [1, "x"]], "b": [[1, "z"]]}))["identical"]
    dropped = compare_dumps(before, {"a": before["a"], "b": {"schema": None, "rows": None, "status": 400,
                                                               "error": "no such table"}})
    assert not dropped["identical"] and dropped["schema"]["missing_tables"][0]["table"] == "b"
    lost = compare_dumps(before, _dump({"a": [[1, "x"]], "b": [[1, "z"]]}))
    assert not lost["identical"] and lost["tables"]["a"]["rows_after"] == 1
    changed = compare_dumps(before, _dump({"a": [[1, "x"], [2, "Y"]], "b": [[1, "z"]]}))
    assert not changed["identical"] and changed["tables"]["a"]["rows_after"] == 2
    assert compare_dumps(before, None) == {"identical": False, "reason": "no dump could be taken", "tables": {}}


def _history(tmp_path: Path, back: dict[str, Any], rows_back: list[list[Any]] | None) -> dict[str, Any]:
    (tmp_path / "u").mkdir(exist_ok=True)
    (tmp_path / "u" / "dump-before.json").write_text(json.dumps(_dump({"a": [[1, "x"]]})))
    files = {"before": "u/dump-before.json"}
    if rows_back is not None:
        (tmp_path / "u" / "dump-rolled-back.json").write_text(json.dumps(_dump({"a": rows_back})))
        files["rolled-back"] = "u/dump-rolled-back.json"
    seen = {"properties": {"ActiveState": "active", "MainPID": "10"}, "bin_current": "2.8.2", "ping": "200"}
    return {"applicable": True, "files": files, "rollback": {"version": "2.8.2"},
            "stages": [{"name": "before", "observed": seen}, {"name": "rolled-back", "observed": back}]}


def test_the_rollback_worked_was_refused_or_broke(tmp_path: Path) -> None:
    running = {"properties": {"ActiveState": "active", "MainPID": "30"}, "bin_current": "2.8.2", "ping": "200"}
    assert rollback_outcome(_history(tmp_path, running, [[1, "x"]]), tmp_path)["outcome"] == "worked"
    assert rollback_outcome(_history(tmp_path, running, [[2, "x"]]), tmp_path)["outcome"] == "broken"
    refused = {"properties": {"ActiveState": "failed", "MainPID": "0"}, "bin_current": "2.8.2", "ping": "000",
               "journal_tail": 'Error: metadata.toml indicates that you are running a newer, incompatible database.'}
    outcome = rollback_outcome(_history(tmp_path, refused, None), tmp_path)
    assert outcome["outcome"] == "refused" and "incompatible" in outcome["message"]
    silent = dict(refused, journal_tail="Stopped spacetimedb.service.")
    assert rollback_outcome(_history(tmp_path, silent, None), tmp_path)["outcome"] == "broken"
    wrong = dict(running, bin_current="2.8.3")
    assert rollback_outcome(_history(tmp_path, wrong, [[1, "x"]]), tmp_path)["version_running"] == "2.8.3"


def test_a_rehearsal_that_did_not_apply_says_why(tmp_path: Path) -> None:
    assert summary({"applicable": False, "reason": "needs --allow-mutation"}, tmp_path) == {
        "applicable": False, "reason": "needs --allow-mutation"}


def test_upgrade_rehearsal_on_an_existing_host_refuses_in_one_line_without_mutation_or_backup(
        capsys: Any) -> None:
    from harness.cli import main

    base = ["upgrade-rehearsal", "--target", "ssh://deploy@staging.example", "--url", "https://staging.example"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "needs --allow-mutation" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--allow-mutation"]) == 2
    err = capsys.readouterr().err
    assert "backed up first" in err and "--i-have-a-backup" in err
    assert main([*base, "--allow-mutation", "--snapshot-volume", "disk-1"]) == 2
    assert "not an EBS volume id" in capsys.readouterr().err


class _Target:
    """Answers the rehearsal's post-update wait with the states given, one per call."""

    def __init__(self, states: list[str]) -> None:
        self.states, self.waits = list(states), 0

    def run(self, command: str, **_: object) -> CommandResult:
        if "/v1/ping" in command:
            self.waits += 1
            return CommandResult(command, 0, self.states.pop(0) + "\n", "", 0.0)
        return CommandResult(command, 0, "", "", 0.0)


class _Prober:
    stopped: list[bool] = []

    def __init__(self, *_: object, **__: object) -> None:
        self.path = "/v1/ping"

    def start(self) -> None:
        pass

    def stop(self, *, wait: bool = True) -> list[dict]:
        _Prober.stopped.append(wait)
        return []


@pytest.mark.parametrize(("states", "waits", "unit_after"), [
    (["activating", "activating", "up"], 3, None),  # restarting: waited for until it answers
    (["activating", "failed"], 2, "failed"),  # systemd gave up: nothing will start it again
    (["inactive"], 1, "inactive"),  # stopped, no restart pending
])
def test_the_wait_after_the_update_ends_when_the_unit_answers_or_will_not_come_back(
        monkeypatch: pytest.MonkeyPatch, states: list[str], waits: int, unit_after: str | None) -> None:
    from harness.scenarios import upgrade

    monkeypatch.setattr(upgrade, "_Prober", _Prober)
    monkeypatch.setattr(upgrade.time, "sleep", lambda _s: None)
    _Prober.stopped = []
    rehearsal = object.__new__(upgrade._Rehearsal)
    rehearsal.target = _Target(states)  # type: ignore[assignment]
    rehearsal.state = None  # type: ignore[assignment]
    rehearsal.h = {"stages": [{"name": "before", "observed": {"properties": {"ActiveState": "active"}}}]}
    rehearsal.run_steps("upgrade", [])
    assert rehearsal.target.waits == waits  # type: ignore[attr-defined]
    assert _Prober.stopped == [unit_after is None]  # the prober keeps probing only for a unit that may answer
    assert rehearsal.h["stages"][-1].get("unit_after") == unit_after
