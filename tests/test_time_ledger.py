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
