"""Where a run's time goes, by kind: the runbook's own commands, boots, the kit's probes, lab setup, waits.

Every phase of a run (PhaseTimer) has a kind by default; code inside it that does work of another kind
says so with `spend(kind)`: a runbook step inside a scenario, a reboot inside the mounts scenario, a
sleep inside the restore drill, a state-trace fingerprint inside `apply`. Time is exclusive: what an
inner `spend` took is taken out of the outer one, so the kinds add up to the phases' total.

Only the main thread keeps accounts: work in helper threads (the upgrade prober, the fidelity writer)
overlaps the main thread's own time and would count twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS: dict[str, str] = {
    "runbook": "the runbook's own commands (every applied step, on the target and on a recovery host; the "
               "operator's steps and the troubleshooting commands the suites run, as the runbook writes them)",
    "boots": "boots, reboots and power-offs the scenarios perform, until the guest says its boot finished "
             "(`systemctl is-system-running --wait`; device timeouts the runbook's fstab causes included)",
    "probes": "the kit's own queries: suites, facts, state trace, digests, scenario checks",
    "lab_setup": "images, the lab's helpers, hosts brought up and torn down, adaptations before steps",
    "idle": "waits on the clock (a durability window, a pause the scenario needs)",
}


def phase_kind(phase: str) -> str:
    """The kind a phase's time has unless code inside it says otherwise."""
    if phase in ("image", "mirror", "vm_image", "lab_up", "aws", "teardown", "selftest_mutant"):
        return "lab_setup"
    # facts, digests, suites, scenarios; in `apply` what is left once the steps (runbook), the adaptations
    # before them (lab_setup) and the trace (probes) are counted: the kit's bookkeeping
    return "probes"


@dataclass
class _Frame:
    phase: str
    kind: str
    started: float
    inner: float = 0.0


@dataclass
class Ledger:
    """Exclusive seconds by (phase, kind) for one run."""

    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    _stack: list[_Frame] = field(default_factory=list)

    @contextmanager
    def spend(self, kind: str, *, phase: str | None = None) -> Iterator[None]:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of time: {kind}")
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if phase is None and not self._stack:  # outside any phase of a run: nothing to account to
            yield
            return
        frame = _Frame(phase if phase is not None else self._stack[-1].phase, kind, time.monotonic())
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.monotonic() - frame.started
            own = max(0.0, elapsed - frame.inner)
            by_kind = self.seconds.setdefault(frame.phase, {})
            by_kind[kind] = by_kind.get(kind, 0.0) + own
            if self._stack:
                self._stack[-1].inner += elapsed

    def reassign(self, phase: str, seconds: dict[str, float], *, source: str = "probes") -> None:
        """Seconds of `phase` that another process measured as other kinds (a suite's pytest process: the
        runbook's operator steps, its troubleshooting commands) are moved there from `source`, never more
        than `source` holds, so the kinds still add up to the phase."""
        by_kind = self.seconds.setdefault(phase, {})
        for kind, amount in seconds.items():
            if kind not in KINDS or kind == source or amount <= 0:
                continue
            moved = min(amount, by_kind.get(source, 0.0))
            by_kind[source] = by_kind.get(source, 0.0) - moved
            by_kind[kind] = by_kind.get(kind, 0.0) + moved

    def by_kind(self) -> dict[str, float]:
        totals = dict.fromkeys(KINDS, 0.0)
        for kinds in self.seconds.values():
            for kind, seconds in kinds.items():
                totals[kind] += seconds
        return {kind: round(seconds, 1) for kind, seconds in totals.items()}

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.by_kind().values())
        return {"by_kind": self.by_kind(),
                "share": {k: round(v / total, 3) if total else 0.0 for k, v in self.by_kind().items()},
                "by_phase": {phase: {k: round(v, 1) for k, v in kinds.items() if v >= 0.05}
                             for phase, kinds in self.seconds.items()},
                "kinds": KINDS}


_CURRENT = Ledger()


def current() -> Ledger:
    return _CURRENT


def start() -> Ledger:
    """A new ledger for a run (the process's previous one, if any, is dropped)."""
    global _CURRENT
    _CURRENT = Ledger()
    return _CURRENT


@contextmanager
def spend(kind: str) -> Iterator[None]:
    """Time inside this block is `kind` (for the phase running now; nothing outside a run's phases)."""
    with _CURRENT.spend(kind):
        yield


SUITE_PHASE = "suite"  # the one phase of a suite's own pytest process (harness.pytest_plugin)


def suite_split_path(checks_out: str | Path) -> Path:
    """Where a suite process writes its seconds by kind, beside its check results (`--checks-out`)."""
    path = Path(checks_out)
    return path.with_name(path.stem + ".time.json")


def write_suite_split(path: str | Path) -> None:
    """The suite process's seconds by kind, for the run's ledger (`read_suite_split`)."""
    Path(path).write_text(json.dumps(_CURRENT.seconds.get(SUITE_PHASE, {})))


def read_suite_split(path: Path) -> dict[str, float]:
    """What a suite process wrote with `write_suite_split`; nothing when it wrote none (an old or failed run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, int | float)}
