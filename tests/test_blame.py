"""Blame and root causes on recorded state traces (no lab): a small runbook whose mount step hides what its install
step put in place, and the same runbook without that step; the first screen's counts come from them."""

from __future__ import annotations

from pathlib import Path

from harness.blame import Need, root_causes
from harness.planner import build_plan
from harness.results import CheckResult, Outcome
from harness.trace import StateTrace, Watch, diff, parse, script, watch_of
from reports.markdown import render_markdown, root_cause_headline

RUNBOOK = Path(__file__).parent / "runbooks" / "blame-mount-hides-install.md"
SERVER = ("path:/srv/app/server", "unit:app.service~active")


def _plan():  # type: ignore[no-untyped-def]
    return build_plan(RUNBOOK, "default")


def _trace(plan, hide: bool = True) -> StateTrace:  # type: ignore[no-untyped-def]
    """What the trace records when the steps run: install, start, then (with `hide`) a mount over /srv/app."""
    steps = plan.runnable("apply")
    trace = StateTrace(Watch())
    facts = {"user:root": "uid=0", "mount:/": "/dev/vda ext4", "unit:app.service": "inactive pid=0 static"}
    trace.initial = dict(facts)
    for step in steps:
        if "mkdir" in step.command:
            facts["path:/srv/app"] = "directory inode=10 owner=root:root"
        elif "cp " in step.command:
            facts["path:/srv/app/server"] = "regular file inode=11 owner=root:root"
        elif "systemctl start" in step.command:
            facts["unit:app.service"] = "active pid=42 static"
        elif step.command.startswith("sudo mount") and hide:
            facts["mount:/srv/app"] = "/dev/nvme1n1 ext4"
            facts["path:/srv/app"] = "directory inode=2 owner=root:root"
            del facts["path:/srv/app/server"]
        trace.after[step.index] = dict(facts)
    return trace


def _failed(check_id: str, needs: tuple[str, ...] = SERVER, line: int | None = None, **kw: object) -> CheckResult:
    return CheckResult(id=check_id, suite=check_id.split(".")[0], outcome=Outcome.FAILED, needs=list(needs),
                       runbook_ref={"line_start": line}, **kw)  # type: ignore[arg-type]


def test_a_step_that_hides_what_an_earlier_step_installed_is_the_root_cause() -> None:
    plan = _plan()
    mount = next(s for s in plan.steps if s.command.startswith("sudo mount"))
    copy = next(s for s in plan.steps if s.command.startswith("sudo cp"))
    start = next(s for s in plan.steps if "systemctl start" in s.command)
    checks = [_failed("service.unit-active"), _failed("service.restart-always"),
              # a fact that never held: blamed on the step the check points at
              _failed("service.other", needs=("listen:127.0.0.1:3000",), line=start.ref.line_start),
              _failed("routes.x", needs=()), _failed("operator.y", needs=(), after=["service.unit-active"])]
    causes, unexplained = root_causes(plan, _trace(plan), checks, stopped=None)
    top = causes[0]
    assert top.step.index == mount.index and top.kind == "broke"
    assert top.checks == ["service.unit-active", "service.restart-always"]
    assert top.through == ["operator.y"]  # it builds on a blamed check
    assert top.set_up_by == [copy.index]
    assert "mounts over /srv/app and hides what was there (/srv/app/server)" in top.summary
    assert f"line {mount.ref.line_start}" in top.fix and "before those steps run" in top.fix
    assert top.changes["added"] == {"mount:/srv/app": "/dev/nvme1n1 ext4"}
    assert [u["check"] for u in unexplained] == ["routes.x"]
    never = next(c for c in causes if c.kind == "never-held")
    assert never.checks == ["service.other"] and never.step.index == start.index
    assert "listen 127.0.0.1:3000 exists" in never.summary


def test_without_the_hiding_step_nothing_is_blamed_on_it() -> None:
    plan = _plan()
    checks = [_failed("service.unit-active"), _failed("service.restart-always")]
    causes, unexplained = root_causes(plan, _trace(plan, hide=False), checks, stopped=None)
    assert causes == []  # every need still holds after the last step: the trace explains nothing
    assert {u["check"] for u in unexplained} == {"service.unit-active", "service.restart-always"}
    assert all("still held" in u["why"] for u in unexplained)


def test_a_step_that_failed_as_written_explains_the_checks_of_the_steps_it_stopped() -> None:
    plan = _plan()
    steps = plan.runnable("apply")
    copy = next(s for s in steps if s.command.startswith("sudo cp"))
    start = next(s for s in steps if "systemctl start" in s.command)
    trace = _trace(plan)
    trace.after = {i: f for i, f in trace.after.items() if i <= copy.index}  # the apply stopped at the copy
    checks = [_failed("service.unit-active", line=start.ref.line_start)]
    causes, _ = root_causes(plan, trace, checks, stopped=copy.index)
    assert causes[0].step.index == copy.index and causes[0].kind == "not-run"
    assert "failed as written" in causes[0].summary


def test_needs_parse_and_hold() -> None:
    facts = {"unit:a": "active pid=1 enabled", "path:/x": "regular file"}
    assert Need.parse("unit:a~active").holds(facts) and not Need.parse("unit:a~failed").holds(facts)
    assert Need.parse("path:/x").holds(facts) and Need.parse("!path:/y").holds(facts)
    assert not Need.parse("!path:/x").holds(facts)


def test_the_fingerprint_is_parsed_from_what_the_host_prints() -> None:
    plan = _plan()
    watch = watch_of(plan)
    assert watch.dirs == ["/srv/app"] and watch.units == ["app.service"]
    text = script(watch)
    assert "findmnt" in text and "systemctl show -p Id -p ActiveState" in text and "ss -Htlnp" in text
    printed = ("@@mounts\n/ /dev/vda ext4\n/proc proc proc\n/srv/app /dev/nvme1n1 ext4\n"
               "@@dir /srv/app\n/srv/app|2|root:root|directory\n/srv/app/lost+found|11|root:root|directory\n"
               "@@units\nId=app.service\nMainPID=42\nActiveState=active\nUnitFileState=static\n\n"
               "Id=gone.service\nActiveState=inactive\nMainPID=0\nUnitFileState=\n"
               "@@listen\nLISTEN 0      4096       127.0.0.1:3000      0.0.0.0:*    users:((\"app\",pid=42,fd=3))\n"
               "@@nginx\n@@users\nroot:x:0:0:root:/root:/bin/bash\napp:x:998:998::/home/app:/bin/sh\n"
               "@@groups\nroot:x:0:\n"
               "@@files\n" + "ab" * 32 + "  /etc/app.conf\nsha256sum: /etc/x: No such file or directory\n")
    facts = parse(printed)
    assert facts["mount:/srv/app"] == "/dev/nvme1n1 ext4" and "mount:/proc" not in facts
    assert facts["unit:app.service"] == "active pid=42 static" and facts["listen:127.0.0.1:3000"] == "app"
    assert facts["unit:gone.service"] == "inactive pid=0 not-found"
    assert facts["path:/srv/app/lost+found"].startswith("directory inode=11") and facts["file:/etc/x"] == "absent"
    assert facts["file:/etc/app.conf"] == "ab" * 8 and facts["user:app"] == "uid=998" and "group:root" in facts
    assert diff({"a": "1", "b": "2"}, {"b": "3", "c": "4"}) == {"added": {"c": "4"}, "removed": {"a": "1"},
                                                              "changed": {"b": ["2", "3"]}}


def test_the_trace_round_trips_through_the_report() -> None:
    plan = _plan()
    trace = _trace(plan)
    again = StateTrace.from_dict(trace.to_dict())
    assert again.initial == trace.initial and again.after == trace.after


def test_the_first_lines_of_the_report_name_the_root_causes() -> None:
    plan = _plan()
    checks = [_failed("service.unit-active"), _failed("service.restart-always"), _failed("routes.x", needs=())]
    causes, unexplained = root_causes(plan, _trace(plan), checks, stopped=None)
    report = {"verdict": "fail", "backend": "docker", "profile": "default", "run_id": "r",
              "runbook": {"path": "rb.md", "sha256": "0" * 64}, "counts": {}, "environment": {},
              "checks": [c.to_dict() for c in checks], "root_causes": [c.to_dict() for c in causes],
              "unexplained": unexplained}
    assert root_cause_headline(report) == "1 root cause explains 2 of 3 failures"
    text = render_markdown(report)
    head = text.split("## Findings about the runbook")[0]
    assert "## Root causes: 1 root cause explains 2 of 3 failures" in head and "fix:" in head
    assert "`routes.x`" in head


def test_the_long_lived_shell_answers_each_script_and_gives_up_on_a_hung_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import harness.trace as trace_module
    from harness.trace import Shell

    shell = Shell(["bash"])
    try:
        assert shell.run("x=5; echo one") == "one\n"
        assert shell.run("echo $x; echo two") == "5\ntwo\n"  # the same shell: state kept between scripts
        monkeypatch.setattr(trace_module, "SHELL_TIMEOUT", 0.5)
        assert shell.run("sleep 5") is None and shell.broken
    finally:
        shell.close()


def test_a_claim_contradicted_by_a_root_cause_gets_its_fix_and_others_name_their_step() -> None:
    from harness.findings import attach_root_causes, claims_contradicted

    plan = _plan()
    start = next(s for s in plan.steps if "systemctl start" in s.command)
    ref = {"section": ["Install"], "line_start": start.ref.line_start, "line_end": start.ref.line_end}
    checks = [CheckResult(id="service.unit-active", suite="service", outcome=Outcome.FAILED, claim="it runs",
                          runbook_ref=ref, needs=list(SERVER), message="not active"),
              CheckResult(id="tls.x", suite="tls", outcome=Outcome.FAILED, claim="TLS 1.2+", runbook_ref=ref,
                          message="1.0 on")]
    findings = claims_contradicted(checks)
    assert findings[1].suggestion.startswith(f"change the step at line {start.ref.line_start} (Install) so that "
                                             f"afterwards: TLS 1.2+")
    causes, _ = root_causes(plan, _trace(plan), checks, stopped=None)
    attach_root_causes(findings, [c.to_dict() for c in causes])
    assert findings[0].suggestion.startswith("explained by the root cause at step")
    assert "mount" in findings[0].suggestion
    assert findings[1].suggestion.startswith("change the step at line")
