"""Plan rendering: the human listing (`plan`) and the JSON (`plan --json`)."""

from __future__ import annotations

import json

import pytest

from harness.model import Plan, StepKind
from harness.plan_render import render_json, render_step, render_text
from harness.planner import build_plan
from tests.conftest import shared_runbook


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(shared_runbook())


def test_text_lists_every_step_with_kind_phase_location_section_and_lines(plan: Plan) -> None:
    text = render_text(plan)
    assert text.startswith(f"runbook: {plan.runbook_path} (sha256 {plan.runbook_sha256})\nprofile: default\n")
    for step in plan.steps:
        header = f"[{step.index:>3}] {step.kind.value:<10} {step.phase:<11} {step.location.value}"
        assert header in text
        assert f"{' > '.join(step.ref.section)}, line" in text
    assert "[  3] shell      apply       server as spacetimedb" in text
    assert "Step 1: Create a Dedicated User for SpacetimeDB, line 25\n" in text


def test_text_shows_exact_commands_and_full_file_content(plan: Plan) -> None:
    text = render_text(plan)
    for step in plan.steps:
        if step.kind is StepKind.SHELL:
            assert f"      $ {step.command}\n" in text
        if step.kind is StepKind.FILE_WRITE:
            block = "\n".join(f"        | {line}" if line else "        |"
                              for line in step.content.split("\n"))
            assert block in text
    assert "        |     # location / {\n" in text


def test_text_shows_substitutions_and_adaptations(plan: Plan) -> None:
    text = render_text(plan)
    assert "example.com -> stdb.lab.test (line 82)" in text
    assert "<host> -> stdb-target (line 195)" in text
    dynamic = "YOUR_UUID_HERE -> <UUID of /dev/nvme1n1, read with blkid at apply time> (line 330) [dynamic:"
    assert dynamic in text
    tail = text[text.index("\nadaptations:\n"):]
    for adaptation in plan.adaptations:
        assert f"  - {adaptation.id}: {adaptation.summary}" in tail


def test_console_and_not_run_steps_render(plan: Plan) -> None:
    console = plan.find(kind=StepKind.CONSOLE)[1]
    lines = render_step(console)
    assert any(line.startswith("      params: {\"action\": \"backup_plan\"") for line in lines)
    assert lines[2] == '      where: line 352: "In AWS Console"'


def test_json_is_the_plan_dict(plan: Plan) -> None:
    data = json.loads(render_json(plan))
    assert data == json.loads(json.dumps(plan.to_dict()))
    assert data["profile"] == "default"
    assert len(data["steps"]) == len(plan.steps)
    fstab = next(s for s in data["steps"] if s["kind"] == "line_edit")
    assert fstab["path"] == "/etc/fstab" and fstab["substitutions"][0]["dynamic"] is True
    assert render_json(plan).startswith("{\n  \"runbook\"")
