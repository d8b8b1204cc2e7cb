"""Defects behind defects (no lab): repairs chosen from a failure's own output, chained, on a scripted target."""

from __future__ import annotations

from harness.findings import defects_behind_defects
from harness.repairs import LABEL, try_repairs
from harness.results import CheckResult, Evidence, Outcome
from harness.targets.base import CommandResult

NO_HOME = "sudo: unable to change directory to /home/spacetimedb: No such file or directory\n" \
          "sudo: spacetime: command not found"
AS_WRITTEN = "sudo -u spacetimedb -i -- spacetime --root-dir=/stdb version upgrade"


class Scripted:
    """A target that answers each command from a table (substring -> result) and records what it was asked."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(self, command: str, *, user: str = "root", timeout: float = 0) -> CommandResult:
        self.asked.append(command)
        for needle, (status, out, err) in self.answers.items():
            if needle in command:
                return CommandResult(command=command, exit_status=status, stdout=out, stderr=err, duration=0.0)
        return CommandResult(command=command, exit_status=1, stdout="", stderr="unexpected", duration=0.0)


def _failed(err: str, status: int = 127) -> CommandResult:
    return CommandResult(command=AS_WRITTEN, exit_status=status, stdout="", stderr=err, duration=0.0)


def test_a_login_shell_then_a_path_are_repaired_in_turn() -> None:
    target = Scripted({
        "find ": (0, "/stdb/spacetime\n", ""),
        "sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb version upgrade": (0, "upgraded to 2.8.3\n", ""),
        # sudo itself says "command not found", and exits 1, not 127
        "sudo -u spacetimedb -- spacetime --root-dir=/stdb version upgrade": (1, "",
                                                                           "sudo: spacetime: command not found"),
    })
    attempts = try_repairs(AS_WRITTEN, _failed(NO_HOME), target, user="ubuntu", dirs=["/stdb"])
    assert [a.command for a in attempts] == ["sudo -u spacetimedb -- spacetime --root-dir=/stdb version upgrade",
                                             "sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb version upgrade"]
    assert attempts[0].reason == "sudo could not enter /home/spacetimedb: the same command without `-i`"
    assert "/stdb/spacetime" in attempts[1].reason
    assert attempts[-1].ok and not attempts[0].ok


def test_an_unknown_subcommand_is_looked_up_in_the_tools_own_help() -> None:
    command = "sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb install 2.8.2"
    target = Scripted({
        "version --help": (0, "Usage: spacetime version <COMMAND>\n\nCommands:\n  list     List versions\n"
                              "  install  Install a version\n", ""),
        "start --help": (0, "Usage: spacetime start\n\nOptions:\n  --listen-addr\n", ""),
        "--help": (0, "Usage: spacetime [OPTIONS] <COMMAND>\n\nCommands:\n  version   Manage versions\n"
                      "  start     Start a server\n\nOptions:\n  -h, --help\n", ""),
        "/stdb/spacetime --root-dir=/stdb version install 2.8.2": (0, "installed 2.8.2\n", ""),
    })
    failed = CommandResult(command=command, exit_status=2, stdout="",
                           stderr="error: unrecognized subcommand 'install'", duration=0.0)
    attempts = try_repairs(command, failed, target, user="ubuntu", dirs=["/stdb"])
    assert attempts[0].command == "sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb version install 2.8.2"
    assert "lists it under `version`" in attempts[0].reason and attempts[0].ok


def test_nothing_is_tried_without_evidence_for_it() -> None:
    target = Scripted({})
    assert try_repairs(AS_WRITTEN, _failed("permission denied", 1), target, user="ubuntu", dirs=[]) == []
    assert target.asked == []
    # a program that exists nowhere the plan installs: no repair to try
    assert try_repairs("foo --x", _failed("bash: line 1: foo: command not found"), Scripted({"find ": (0, "", "")}),
                       user="ubuntu", dirs=["/opt"]) == []


def test_findings_say_what_the_repairs_showed() -> None:
    def check(statuses: list[int]) -> CheckResult:
        evidence = [Evidence(label=f"{LABEL}: reason {n}", command=f"cmd {n}", output=f"out {n}\nlast line {n}",
                             status=s) for n, s in enumerate(statuses)]
        return CheckResult(id="upgrade.version-upgrade", suite="upgrade", outcome=Outcome.FAILED,
                           message="`x` fails as written (exit 127): no home", runbook_ref={"line_start": 209},
                           evidence=evidence)
    works, behind = defects_behind_defects([check([127, 0]), check([127, 1])])
    assert works.id == "runbook.repair-tried-in-the-lab"
    assert works.suggestion == "use `cmd 1` (tried in the lab: exit 0)"
    assert behind.id == "runbook.defect-behind-defect" and "last line 1" in behind.summary
    assert behind.runbook_ref == {"line_start": 209}
    assert defects_behind_defects([CheckResult(id="a", suite="a", outcome=Outcome.FAILED)]) == []


def test_a_repair_that_works_comes_with_a_patch_of_the_runbooks_line() -> None:
    runbook = ("Step 6\n\n    sudo systemctl stop spacetimedb\n"
               "    sudo -u spacetimedb -i -- spacetime --root-dir=/stdb install <version-number>\n")
    as_run = "sudo -u spacetimedb -i -- spacetime --root-dir=/stdb install 2.8.2"
    repaired = "sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb version install 2.8.2"
    evidence = [Evidence(label="upgrade step: x", command=as_run, status=127),
                Evidence(label=f"{LABEL}: no -i", command="...", status=127),
                Evidence(label=f"{LABEL}: path and group", command=repaired, status=0)]
    check = CheckResult(id="upgrade.install-specific-version", suite="upgrade", outcome=Outcome.FAILED,
                        message="fails as written", runbook_ref={"line_start": 4}, evidence=evidence)
    (finding,) = defects_behind_defects([check], runbook)
    assert finding.patch.splitlines()[2:] == [
        "@@ -3,2 +3,2 @@", "     sudo systemctl stop spacetimedb",
        "-    sudo -u spacetimedb -i -- spacetime --root-dir=/stdb install <version-number>",
        "+    sudo -u spacetimedb -- /stdb/spacetime --root-dir=/stdb version install <version-number>"]
    # a line the change cannot be placed on: no patch, the sentence stays
    (other,) = defects_behind_defects([check], "nothing like it\n" * 5)
    assert other.patch == "" and other.suggestion.startswith("use `")
