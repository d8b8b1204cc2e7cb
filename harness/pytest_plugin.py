"""pytest plugin that turns suite tests into conformance checks with evidence.

A suite test is marked `@pytest.mark.check("suite.name", claim="...", required=True)` and uses the
`check` fixture to record evidence and the runbook step it proves. Outcomes map to the report:
pass -> passed, assertion -> failed, other exception -> error, `check.not_applicable(reason)` ->
not-applicable. At the end of the session every result is written to `--checks-out` as JSON.
The lab is described by the state file given with `--lab-state` (written by `stdb-conformance run`).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Generator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from harness.backends.base import Capability
from harness.errors import KitError
from harness.model import Plan, SourceRef, Step
from harness.results import CheckResult, Evidence, Outcome
from harness.run_state import RunState, plan_of_run
from harness.targets.base import CommandResult, Target

NOT_APPLICABLE_PREFIX = "not-applicable: "
_RECORDER = pytest.StashKey["CheckRecorder"]()
_RESULTS = pytest.StashKey[list]()
_LEDGER = pytest.StashKey[ExitStack]()


if TYPE_CHECKING:  # a type checker sees pytest.skip.Exception as a class attribute, not as a class
    from _pytest.outcomes import Skipped

    from harness.lab.services import LabServices
    from harness.testbed import Testbed
else:
    Skipped = pytest.skip.Exception


class NotApplicable(Skipped):
    """Raised by `check.not_applicable`: the check cannot be proven on this backend."""


class CheckRecorder:
    """Collects what a check observed; bound to one test item."""

    def __init__(self, check_id: str, suite: str, claim: str, required: bool) -> None:
        self.id = check_id
        self.suite = suite
        self.claim = claim
        self.required = required
        self.evidence: list[Evidence] = []
        self.runbook_ref: dict[str, Any] = {}
        # the runbook's troubleshooting commands earlier failed checks of this suite ran, with no host-changing
        # check since: command -> (the check it ran for, its evidence) (harness.diagnostics.gather)
        self.troubleshooting: dict[str, tuple[str, Evidence]] = {}

    def ref(self, where: Step | SourceRef | None) -> None:
        """Tie this check to the runbook step (or source range) whose promise it proves."""
        if where is None:
            return
        ref = where.ref if isinstance(where, Step) else where
        self.runbook_ref = ref.to_dict()

    def note(self, label: str, output: Any = "", *, command: str = "", status: Any = None,
             host: str = "") -> None:
        text = output if isinstance(output, str) else json.dumps(output, indent=1, default=str)
        self.evidence.append(Evidence(label=label, command=command, output=text, status=status,
                                      host=host))

    def record(self, result: CommandResult, label: str = "") -> CommandResult:
        output = result.stdout
        if result.stderr.strip():
            output = f"{output}\n[stderr]\n{result.stderr}" if output else f"[stderr]\n{result.stderr}"
        self.evidence.append(Evidence(label=label or "command", command=result.command,
                                      output=output.strip(), status=result.exit_status,
                                      host=f"{result.user}@{result.host}" if result.host else result.user))
        return result

    def run(self, target: Target, command: str, *, user: str = "root", label: str = "",
            timeout: float = 60.0) -> CommandResult:
        return self.record(target.run(command, user=user, timeout=timeout), label)

    def already_ran(self, command: str) -> tuple[str, Evidence] | None:
        """The runbook's command `command`, if an earlier failed check of this suite ran it as troubleshooting
        while the host has not changed since: (that check, its evidence)."""
        return self.troubleshooting.get(command)

    def not_applicable(self, reason: str) -> NoReturn:
        raise NotApplicable(NOT_APPLICABLE_PREFIX + reason)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stdb-conformance")
    group.addoption("--lab-state", default=os.environ.get("STDB_LAB_STATE"),
                    help="lab state JSON written by `stdb-conformance run`")
    group.addoption("--checks-out", default=os.environ.get("STDB_CHECKS_OUT"),
                    help="where to write the check results JSON")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "check(id, claim='', required=True, mutates='', needs=()): a conformance "
                            "check; `mutates` says what it changes on the host (such a check runs only where the kit "
                            "may change the host: always on lab hosts, with --allow-mutation on existing ones); "
                            "`needs` names the state-trace facts its property needs (harness.blame)")
    config.stash[_RESULTS] = []


def _check_marker(item: pytest.Item) -> tuple[str, str, bool, str] | None:
    marker = item.get_closest_marker("check")
    if marker is None:
        return None
    check_id = marker.args[0] if marker.args else marker.kwargs["id"]
    return (check_id, marker.kwargs.get("claim", ""), bool(marker.kwargs.get("required", True)),
            str(marker.kwargs.get("mutates", "")))


def _declared(item: pytest.Item, key: str) -> list[str]:
    """A list the check's marker declares (`key=`), else its module's (upper-case name), else none."""
    marker = item.get_closest_marker("check")
    declared = marker.kwargs.get(key) if marker is not None else None
    if declared is None:
        declared = getattr(getattr(item, "module", None), key.upper(), None)
    return [str(n) for n in (declared or ())]


def _check_after(item: pytest.Item) -> list[str]:
    """The checks whose property this one builds on (`after=` on its marker, or its module's `AFTER`)."""
    return _declared(item, "after")


def _check_needs(item: pytest.Item) -> list[str]:
    """The state-trace facts the check's property needs (`needs=` on its marker, or on its module's
    `NEEDS`), for blaming a failure on the step after which one stopped holding (harness.blame)."""
    return _declared(item, "needs")


_MUTATION = pytest.StashKey[bool]()


def mutation_allowed(config: pytest.Config) -> bool:
    """Whether this run may change the host: the run state says so (lab hosts: yes; existing hosts: only
    with --allow-mutation). Without a state (a plugin unit test) nothing forbids it."""
    if _MUTATION not in config.stash:
        path = config.getoption("--lab-state")
        allowed = True
        if path:
            try:
                allowed = RunState.load(Path(path)).mutation_allowed
            except KitError:
                allowed = False
        config.stash[_MUTATION] = allowed
    return config.stash[_MUTATION]


def _suite_of(item: pytest.Item) -> str:
    name = Path(str(item.fspath)).stem
    return name.removeprefix("test_")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from harness.tape import current

    current().scope = item.nodeid  # what the check asks is taped under it (harness.tape)
    random.seed(item.nodeid)  # a check that draws names draws the same ones when its run is judged again
    found = _check_marker(item)
    if found:
        check_id, claim, required, mutates = found
        recorder = item.stash[_RECORDER] = CheckRecorder(check_id, _suite_of(item), claim, required)
        recorder.troubleshooting = item.config.stash.setdefault(_DIAG_SEEN, {})
        if mutates and not mutation_allowed(item.config):
            # enforced before any fixture of the check runs: nothing of it reaches the host
            raise NotApplicable(f"{NOT_APPLICABLE_PREFIX}changes the host ({mutates}): needs --allow-mutation")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    """A fixture shared by several checks asks under its own name on the tape, whichever check set it up first:
    a run judged again with a subset of the checks finds its answers (harness.tape)."""
    if fixturedef.scope == "function":
        return (yield)
    from harness.tape import current

    tape = current()
    saved, tape.scope = tape.scope, f"fixture:{fixturedef.argname}"
    try:
        return (yield)
    finally:
        tape.scope = saved


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                               call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    recorder = item.stash.get(_RECORDER, None)
    if recorder is None:
        return report
    decided = call.when == "call" or (call.when == "setup" and report.outcome != "passed")
    if not decided:
        return report
    outcome, message = _outcome(call)
    marker = _check_marker(item)
    if marker is not None and marker[3]:  # a check that changes the host: troubleshooting output is run anew
        item.config.stash[_DIAG_SEEN] = {}
    if outcome in (Outcome.FAILED, Outcome.ERROR):
        recorder.evidence.extend(_diagnostics(item.config, recorder.suite, recorder.id))
    item.config.stash[_RESULTS].append(CheckResult(
        id=recorder.id, suite=recorder.suite, outcome=outcome, claim=recorder.claim,
        required=recorder.required, runbook_ref=recorder.runbook_ref, evidence=recorder.evidence,
        message=message, duration=call.duration, needs=_check_needs(item), after=_check_after(item),
    ))
    return report


_DIAG_CONTEXT = pytest.StashKey[tuple[Any, Any]]()
_DIAG_SEEN = pytest.StashKey[dict[str, tuple[str, Evidence]]]()


def _diagnostics(config: pytest.Config, suite: str, check_id: str = "") -> list[Evidence]:
    """The runbook's troubleshooting output for a failed check (never fails the report itself); a command an
    earlier failed check ran, with no host-changing check since, is shown again rather than run again."""
    path = config.getoption("--lab-state")
    if not path:
        return []
    try:
        if _DIAG_CONTEXT not in config.stash:
            from harness.tape import current
            from harness.testbed import Testbed

            state = RunState.load(Path(path))
            target = current().new("diagnostics.target", lambda: Testbed.from_state(state.lab).target)
            config.stash[_DIAG_CONTEXT] = (plan_of_run(state), target)
        from harness.diagnostics import gather

        plan, target = config.stash[_DIAG_CONTEXT]
        seen = config.stash.setdefault(_DIAG_SEEN, {})
        return gather(plan, suite, target, seen=seen, check_id=check_id)
    except Exception as exc:  # noqa: BLE001 - diagnostics are best effort
        return [Evidence(label="troubleshooting could not run", command="", output=str(exc), status=None,
                         host="")]


def _outcome(call: pytest.CallInfo) -> tuple[Outcome, str]:
    if call.excinfo is None:
        return Outcome.PASSED, ""
    exc = call.excinfo.value
    if isinstance(exc, pytest.skip.Exception):
        text = str(exc.msg) if hasattr(exc, "msg") else str(exc)
        if text.startswith(NOT_APPLICABLE_PREFIX):
            return Outcome.NOT_APPLICABLE, text[len(NOT_APPLICABLE_PREFIX):]
        return Outcome.ERROR, f"skipped without a not-applicable reason: {text}"
    if isinstance(exc, AssertionError):
        return Outcome.FAILED, _first_lines(str(exc) or "assertion failed")
    return Outcome.ERROR, _first_lines(f"{type(exc).__name__}: {exc}")


def _first_lines(text: str, limit: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:limit]) + ("\n..." if len(lines) > limit else "")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not session.config.getoption("--checks-out"):
        return
    from harness import time_ledger

    # the suite's own ledger: its time is the kit's probes but where a check says otherwise (`spend`)
    stack = ExitStack()
    stack.enter_context(time_ledger.start().spend("probes", phase=time_ledger.SUITE_PHASE))
    session.config.stash[_LEDGER] = stack


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = session.config.getoption("--checks-out")
    results: list[CheckResult] = session.config.stash.get(_RESULTS, [])
    if out:
        Path(out).write_text(json.dumps([r.to_dict() for r in results], indent=2))
    stack = session.config.stash.get(_LEDGER, None)
    if stack is not None and out:
        from harness import time_ledger

        stack.close()
        time_ledger.write_suite_split(time_ledger.suite_split_path(out))
    from harness.tape import current

    current().close()


# ---------------------------------------------------------------- fixtures for suites


@pytest.fixture(scope="session")
def run_state(pytestconfig: pytest.Config) -> RunState:
    path = pytestconfig.getoption("--lab-state")
    if not path:
        pytest.fail("no lab state: suites run inside `stdb-conformance run` (or pass --lab-state)")
    try:
        return RunState.load(Path(path))
    except KitError as exc:
        pytest.fail(exc.one_line())


@pytest.fixture(scope="session")
def plan(run_state: RunState) -> Plan:
    return plan_of_run(run_state)


@pytest.fixture(scope="session")
def testbed(run_state: RunState) -> Testbed:
    """The run's target backend and (for a host the kit built) the lab's services."""
    from harness.tape import current
    from harness.testbed import Testbed

    tape = current()
    if tape.mode == "replay":  # judged again: the lab is gone, the tape answers
        return tape.wrap(None, "testbed")
    return tape.wrap(Testbed.from_state(run_state.lab), "testbed")


@pytest.fixture(scope="session")
def lab(testbed: Testbed) -> LabServices:
    """The lab's services (client, ACME CA, operator machine): not-applicable where the kit built no lab."""
    if not testbed.has_lab:
        raise NotApplicable(f"{NOT_APPLICABLE_PREFIX}the {testbed.backend.scheme} backend has no lab services "
                            f"(client, ACME CA, operator machine)")
    return testbed.lab


@pytest.fixture(scope="session")
def target(testbed: Testbed) -> Target:
    return testbed.target


@pytest.fixture(scope="session")
def capabilities(run_state: RunState) -> frozenset[Capability]:
    """What the run's backend can do (as the run decided it: mutation only where allowed)."""
    return frozenset(Capability(c) for c in run_state.capabilities)


def require_capabilities(check: CheckRecorder, capabilities: frozenset[Capability], *needed: Capability,
                         backend: str = "") -> None:
    """Not-applicable naming the capabilities this check needs and the run's backend lacks."""
    lacking = [c for c in needed if c not in capabilities]
    if lacking:
        if Capability.MUTATION in lacking:
            check.not_applicable("changes the host: needs --allow-mutation")
        check.not_applicable("; ".join(f"needs {c.describe()} (capability {c.value})" for c in lacking)
                             + (f": the {backend} backend lacks it" if backend else ""))


@pytest.fixture(scope="session")
def remote(run_state: RunState) -> Generator[Any, None, None]:
    """The remote vantage point (never the target's loopback): a harness.vantage.Vantage named by the run
    state (lab client container, this machine, or an ssh host); released at the end of the session."""
    from harness.tape import current
    from harness.vantage import vantage_from_state

    vantage = current().new("remote", lambda: vantage_from_state(run_state))
    try:
        yield vantage
    finally:
        vantage.close()


@pytest.fixture(scope="session")
def site(run_state: RunState) -> Any:
    """The site as the vantage reaches it (harness.vantage.Site: domain, url, pinned address, trust bundle)."""
    from harness.vantage import site_from_state

    return site_from_state(run_state)


@pytest.fixture(scope="session")
def transcript(run_state: RunState) -> list[dict[str, Any]]:
    path = run_state.transcript
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else []


@pytest.fixture
def check(request: pytest.FixtureRequest) -> CheckRecorder:
    recorder = request.node.stash.get(_RECORDER, None)
    if recorder is None:
        pytest.fail(f"{request.node.nodeid} uses `check` but has no @pytest.mark.check(...)")
    return recorder


def bounded_wait(predicate: Callable[[], object], timeout: float, interval: float = 0.5) -> bool:
    """Poll until predicate() is true or timeout; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
