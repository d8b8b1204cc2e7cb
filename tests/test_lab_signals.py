"""Lab tests (docker): a signal in each phase of `stdb-conformance run`. The run is interrupted once, in a named
phase (it prints `== <phase>` on stderr as the phase starts), by SIGINT or SIGTERM; it must end with 130, still
write its report with `interrupted: true`, and leave nothing of its run id behind: containers, networks, loop
devices, temp dirs, tap devices, qemu processes, the run's registry entry, and any process the run started
(sampled while it ran) still running or listening, such as the moto server.

A signal during the teardown must not stop the teardown: the second case sends SIGINT and then SIGTERM while
the lab is being removed; the run finishes removing it, writes the report and exits 130."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab_helpers import REPO, SIGNALS, interrupted_cleanly, start_run

pytestmark = pytest.mark.lab
RESTORE_DRILL = REPO / "tests" / "runbooks" / "restore-drill.md"


@dataclass(frozen=True)
class Case:
    phase: str  # the `== <phase>` line to wait for
    signals: tuple[str, ...]
    then: str = ""  # a later progress line to wait for inside the phase (the phase is busy then)
    delay: float = 0.0  # seconds after that before the signal
    runbook: Path | None = None  # None: the shared runbook (service-only profile, service suite)
    profile: str = ""
    suites: str = "service"


CASES = {
    # the hosts are being started in parallel threads when the signal arrives
    "lab_up-SIGINT": Case("== lab_up", ("SIGINT",), then="data volume:"),
    "apply-SIGTERM": Case("== apply", ("SIGTERM",), delay=1.5),
    "suite:service-SIGINT": Case("== suite:service", ("SIGINT",), delay=4.0),
    # the restore drill's recovery container and its extra loop device exist, the moto server listens
    "scenario:backup_restore-SIGTERM": Case("== scenario:backup_restore", ("SIGTERM",),
                                            then="restore drill: recovery host:", delay=3.0,
                                            runbook=RESTORE_DRILL, profile="default", suites="backup_restore"),
    "teardown-SIGINT+SIGTERM": Case("== teardown", ("SIGINT", "SIGTERM")),
}


# Seen once in CI (2026-12-03): a SIGINT while the hosts start in parallel threads left the mirror container
# and the network behind (a `docker run` the engine completed after teardown's sweep). LabServices.down() now
# repeats removal by label until a round finds nothing, confirmed after a longer wait when bring-up was cut short.
_PARAMS = [pytest.param(case, id=name) for name, case in CASES.items()]


@pytest.mark.parametrize("case", _PARAMS)
def test_signal_in_phase_removes_everything_and_reports(case: Case, runbook_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = {"profile": case.profile} if case.profile else {}
    run = start_run(case.runbook or runbook_path, out, suites=case.suites, **kwargs)
    at = run.wait_for(case.phase, timeout=600)
    if case.then:
        run.wait_for(case.then, timeout=600, after=at)
    time.sleep(case.delay)
    for i, name in enumerate(case.signals):
        if i:
            time.sleep(0.3)
        run.send(SIGNALS[name])
    report = interrupted_cleanly(run, out, timeout=300)
    phase = case.phase.removeprefix("== ")
    assert phase in report["timings"], (phase, report["timings"])  # it was interrupted in that phase
    if case.phase == "== teardown":
        assert "during teardown: finishing the teardown first" in run.output, run.output[-2000:]
    if case.runbook == RESTORE_DRILL:  # the helper server was part of what had to go
        assert any("moto" in cmd for _start, cmd in run.watch.seen.values()), run.watch.seen
        assert run.watch.listened(), "the moto server was seen listening while the run was alive"
