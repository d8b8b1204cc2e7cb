"""Troubleshooting-as-diagnostics selection: which runbook commands fit a failure, and which may run."""

from __future__ import annotations

from pathlib import Path

from harness.diagnostics import fitting_steps, gather, is_read_only
from harness.planner import build_plan
from harness.targets.base import CommandResult


class RecordingTarget:
    hostname = "fake"

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, **_kw: object) -> CommandResult:
        self.commands.append(command)
        return CommandResult(command=command, exit_status=0, stdout=f"output of {command}", stderr="", duration=0)


def test_service_failures_get_the_service_troubleshooting_commands(runbook_path: Path) -> None:
    plan = build_plan(runbook_path, "default")
    commands = [s.command for s in fitting_steps(plan, "service")]
    assert any("journalctl -u spacetimedb" in c for c in commands)
    assert any(c.startswith("sudo chmod") for c in commands)
    assert not any("nginx -t" in c for c in commands)
    assert any("nginx -t" in s.command for s in fitting_steps(plan, "routes"))
    assert any("certbot renew --dry-run" in s.command for s in fitting_steps(plan, "tls"))


def test_only_read_only_commands_run(runbook_path: Path) -> None:
    plan = build_plan(runbook_path, "default")
    target = RecordingTarget()
    evidence = gather(plan, "service", target)
    assert target.commands and all("chmod" not in c for c in target.commands)
    suggestion = [e for e in evidence if "suggestion" in e.label]
    assert suggestion and "chmod" in suggestion[0].command
    ran = [e for e in evidence if e.label.startswith("troubleshooting (runbook's own)")]
    assert ran and all(e.output.startswith("output of") for e in ran)


def test_read_only_classification() -> None:
    assert is_read_only("sudo journalctl -u x --no-pager | tail -20")
    assert is_read_only("sudo -u spacetimedb ls -l /stdb")
    assert not is_read_only("sudo chmod +x /stdb/spacetime")
    assert not is_read_only("sudo systemctl restart nginx")
    assert not is_read_only("sudo ls /stdb > /tmp/out")
    assert not is_read_only("sudo ls /stdb; sudo rm -rf /stdb")
    for mounting in ("sudo mount -a", "mount -a", "sudo mount /dev/nvme1n1 /stdb", "mount"):
        assert not is_read_only(mounting), mounting  # issue 17: `mount -a` was taken for a read-only query


def test_a_second_failed_check_shows_the_output_an_earlier_one_got_until_the_host_changes(runbook_path: Path) -> None:
    plan = build_plan(runbook_path, "default")
    target = RecordingTarget()
    seen: dict = {}
    first = gather(plan, "operator", target, seen=seen, check_id="operator.remote-publish")
    ran = len(target.commands)
    assert ran > 0
    second = gather(plan, "operator", target, seen=seen, check_id="operator.subscribe-sees-row")
    assert len(target.commands) == ran, "the same commands ran again with no change to the host"
    assert [e.command for e in second] == [e.command for e in first]
    again = [e for e in second if e.command in seen]
    assert again and all("operator.remote-publish failed" in e.label for e in again)
    assert [e.output for e in again] == [e.output for e in first if e.command in seen]
    seen.clear()  # a check that changes the host ran (harness.pytest_plugin empties it then)
    gather(plan, "operator", target, seen=seen, check_id="operator.sdk-sees-row")
    assert len(target.commands) == 2 * ran
