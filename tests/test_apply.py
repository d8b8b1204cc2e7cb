"""The applier: runs steps verbatim as the operator, stops at the first failing step with a finding,
and fills the fstab UUID from the runbook's own blkid output."""

from __future__ import annotations

from harness.apply import apply_plan
from harness.model import Plan, SourceRef, Step, StepKind, Substitution
from harness.targets.base import CommandResult


class RecordingTarget:
    """A target that records what it is asked to do and answers from a script of outputs."""

    name = "recording"
    backend = "test"
    hostname = "recording"

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.answers = answers or {}
        self.commands: list[tuple[str, str]] = []
        self.files: dict[str, tuple[bytes, int, str]] = {}

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0, stdin=None, env=None):  # noqa: ANN001
        self.commands.append((user, command))
        status, out, err = next((v for k, v in self.answers.items() if k in command), (0, "", ""))
        return CommandResult(command, status, out, err, 0.01, user=user, host=self.hostname)

    def write_file(self, path: str, content: bytes, *, mode: int = 0o644, owner: str = "root") -> None:
        self.files[path] = (content, mode, owner)


def _step(index: int, kind: StepKind, line: int, **kw) -> Step:  # type: ignore[no-untyped-def]
    return Step(index=index, kind=kind, ref=SourceRef(("Step X",), line, line), **kw)


def _plan(steps: list[Step]) -> Plan:
    return Plan(runbook_path="rb.md", runbook_sha256="0" * 64, profile="test", steps=steps)


def test_shell_steps_run_verbatim_as_operator_and_files_are_written() -> None:
    target = RecordingTarget()
    unit = "[Unit]\nDescription=x"
    plan = _plan([
        _step(0, StepKind.SHELL, 1, raw="sudo mkdir /stdb", command="sudo mkdir /stdb"),
        _step(1, StepKind.FILE_WRITE, 5, path="/etc/x.service", content=unit, editor_command="sudo nano /etc/x"),
        _step(2, StepKind.NOT_RUN, 9, reason="sample output", raw="● x.service"),
        _step(3, StepKind.SHELL, 12, raw="echo 'a  b' | tee f", command="echo 'a  b' | tee f"),
    ])
    result = apply_plan(plan, target)
    assert result.ok
    assert target.commands == [("ubuntu", "sudo mkdir /stdb"), ("ubuntu", "echo 'a  b' | tee f")]
    assert target.files["/etc/x.service"] == (unit.encode() + b"\n", 0o644, "root")
    assert [r["status"] for r in result.transcript()] == ["ok", "ok", "ok"]


def test_first_failing_step_stops_apply_and_becomes_a_finding() -> None:
    target = RecordingTarget({"install": (127, "", "sh: 1: spacetime: not found")})
    plan = _plan([
        _step(0, StepKind.SHELL, 3, raw="sudo true", command="sudo true"),
        _step(1, StepKind.SHELL, 7, raw="spacetime install 1.0", command="spacetime install 1.0"),
        _step(2, StepKind.SHELL, 9, raw="sudo false", command="sudo false"),
    ])
    result = apply_plan(plan, target)
    assert not result.ok and result.stopped_at is plan.steps[1]
    assert [r["status"] for r in result.transcript()] == ["ok", "failed", "skipped"]
    assert len(target.commands) == 2
    (finding,) = result.findings
    assert finding.id == "runbook.step-fails-as-written"
    assert finding.runbook_ref["line_start"] == 7
    assert "exit 127" in finding.summary and "not found" in finding.summary
    assert any("not found" in e.output for e in finding.evidence)


def test_fstab_uuid_comes_from_the_runbooks_blkid_output() -> None:
    uuid = "0b7f3c9e-1111-4222-8333-944455556666"
    target = RecordingTarget({"blkid /dev/nvme1n1": (0, f'/dev/nvme1n1: UUID="{uuid}" TYPE="ext4"\n', "")})
    sub = Substitution("YOUR_UUID_HERE", "", 30, dynamic=True, source="blkid /dev/nvme1n1 UUID")
    plan = _plan([
        _step(0, StepKind.SHELL, 24, raw="sudo blkid /dev/nvme1n1", command="sudo blkid /dev/nvme1n1"),
        _step(1, StepKind.LINE_EDIT, 30, path="/etc/fstab", editor_command="sudo nano /etc/fstab",
              content="UUID=YOUR_UUID_HERE  /stdb  ext4  defaults,nofail  0  2", substitutions=[sub]),
    ])
    result = apply_plan(plan, target)
    assert result.ok
    appended = target.commands[-1][1]
    assert f"UUID={uuid}  /stdb  ext4  defaults,nofail  0  2" in appended
    (resolved,) = result.records[1].resolved
    assert resolved.value == uuid and "line 24" in resolved.source
