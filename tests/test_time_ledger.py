"""Where the time goes (harness/time_ledger.py): exclusive seconds by kind that add up to the phases."""

from __future__ import annotations

import threading
import time

import pytest

from harness import time_ledger
from harness.time_ledger import KINDS, Ledger, phase_kind


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_inner_kinds_are_taken_out_of_the_phase_and_the_kinds_add_up() -> None:
    ledger = Ledger()
    started = time.monotonic()
    with ledger.spend("probes", phase="scenario:mounts"):
        _sleep(0.05)
        with ledger.spend("boots"):
            _sleep(0.2)
            with ledger.spend("idle"):
                _sleep(0.1)
        with ledger.spend("runbook"):
            _sleep(0.1)
    wall = time.monotonic() - started
    phase = ledger.seconds["scenario:mounts"]
    assert phase["boots"] >= 0.19 and phase["idle"] >= 0.09 and phase["runbook"] >= 0.09 and phase["probes"] >= 0.04
    # nothing counted twice: were the inner times not taken out, the kinds would add up to more than the wall
    assert sum(phase.values()) == pytest.approx(wall, abs=0.01)
    summary = ledger.to_dict()
    assert set(summary["by_kind"]) == set(KINDS)
    assert summary["by_kind"]["lab_setup"] == 0.0


def test_phases_have_their_own_kind() -> None:
    assert phase_kind("lab_up") == phase_kind("teardown") == phase_kind("aws") == "lab_setup"
    assert phase_kind("suite:routes") == phase_kind("facts") == phase_kind("scenario:upgrade") == "probes"


def test_spending_outside_a_phase_or_in_another_thread_counts_nothing() -> None:
    ledger = time_ledger.start()
    with time_ledger.spend("runbook"):  # no phase: nothing to account to
        _sleep(0.01)
    assert ledger.seconds == {}
    with ledger.spend("probes", phase="apply"):
        worker = threading.Thread(target=lambda: time_ledger.current().spend("idle").__enter__())
        worker.start()
        worker.join()
        with time_ledger.spend("runbook"):
            _sleep(0.05)
    assert set(ledger.seconds["apply"]) == {"probes", "runbook"}


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"), Ledger().spend("coffee", phase="apply"):
        pass


def test_a_phase_measured_by_another_process_moves_only_what_it_holds() -> None:
    ledger = Ledger()
    ledger.seconds["suite:operator"] = {"probes": 4.0}
    ledger.reassign("suite:operator", {"runbook": 3.0, "lab_setup": 2.0, "probes": 9.0, "nonsense": 1.0})
    phase = ledger.seconds["suite:operator"]
    assert phase["runbook"] == 3.0 and phase["lab_setup"] == 1.0 and phase["probes"] == 0.0
    assert sum(phase.values()) == 4.0  # the phase's wall time is unchanged: only its kinds moved


SUITE = '''
import time
from harness.time_ledger import spend

def test_runs_a_runbook_command():
    with spend("runbook"):
        time.sleep(0.4)
    time.sleep(0.1)
'''


def test_a_suite_process_reports_its_runbook_time_to_the_run(tmp_path) -> None:
    from harness.run import run_suite_process

    suite = tmp_path / "suites" / "test_demo.py"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    work = tmp_path / "work"
    work.mkdir()
    state = tmp_path / "state.json"
    state.write_text("{}")
    run_suite_process(suite, state, work, tape="off")
    split = time_ledger.read_suite_split(time_ledger.suite_split_path(work / "checks-test_demo.json"))
    assert split["runbook"] >= 0.39, split
    assert split["probes"] >= 0.09, split
    assert split["runbook"] + split["probes"] < 5.0, split
