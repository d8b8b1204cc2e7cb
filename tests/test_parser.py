"""The runbook parser: Markdown -> ordered typed raw steps with heading paths and source lines.

Expectations on the shared runbook are computed from the runbook's own lines (read by number), never
pasted: a reworded runbook fails here with the line that changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import RunbookError, UsageError
from harness.model import StepKind
from harness.runbook_parser import RawStep, parse_runbook, split_lines
from tests.conftest import shared_runbook

RUNBOOKS = Path(__file__).resolve().parent / "runbooks"
SHELL, WRITE, EDIT, CONSOLE, NOT_RUN = (StepKind.SHELL, StepKind.FILE_WRITE, StepKind.LINE_EDIT,
                                        StepKind.CONSOLE, StepKind.NOT_RUN)

# (kind, first line, last line) of every step of the shared runbook, in document order.
SHARED_STEPS = [
    (SHELL, 25, 25), (SHELL, 26, 26), (SHELL, 27, 27), (SHELL, 31, 31),
    (WRITE, 38, 53), (SHELL, 57, 57), (SHELL, 58, 58), (SHELL, 62, 62),
    (SHELL, 69, 69), (SHELL, 70, 70), (WRITE, 76, 143), (SHELL, 149, 149), (SHELL, 153, 153),
    (SHELL, 159, 159), (SHELL, 160, 160),
    (SHELL, 167, 167), (SHELL, 173, 173), (SHELL, 177, 177), (SHELL, 183, 183),
    (SHELL, 190, 190), (SHELL, 194, 194), (SHELL, 195, 195), (SHELL, 196, 196),
    (SHELL, 205, 205), (SHELL, 209, 209), (SHELL, 213, 213), (SHELL, 217, 217),
    (SHELL, 226, 226), (SHELL, 230, 230), (SHELL, 234, 234), (SHELL, 240, 240), (SHELL, 246, 246),
    (SHELL, 250, 250),
    (CONSOLE, 298, 299),
    (SHELL, 304, 304), (SHELL, 305, 305), (SHELL, 312, 312), (SHELL, 317, 317), (SHELL, 318, 318),
    (SHELL, 319, 319), (SHELL, 324, 324), (EDIT, 325, 330), (SHELL, 335, 335), (SHELL, 336, 336),
    (SHELL, 337, 337), (SHELL, 342, 342),
    (CONSOLE, 353, 360),
    (CONSOLE, 364, 364), (CONSOLE, 365, 365), (CONSOLE, 366, 366), (CONSOLE, 367, 367), (CONSOLE, 368, 368),
    (CONSOLE, 373, 373), (CONSOLE, 374, 374), (CONSOLE, 375, 375), (SHELL, 378, 378), (SHELL, 382, 382),
    (CONSOLE, 384, 384),
]


@pytest.fixture(scope="module")
def shared() -> tuple[list[RawStep], list[str]]:
    path = shared_runbook()
    parsed = parse_runbook(path)
    return parsed.steps, split_lines(path.read_text(encoding="utf-8"))


def dedent(lines: list[str], first: int, last: int, columns: int = 4) -> str:
    """Source lines first..last (1-based) with `columns` leading spaces removed."""
    return "\n".join(line[columns:] if line.startswith(" " * columns) else line.strip()
                     for line in lines[first - 1:last])


def test_shared_runbook_every_step_in_order_with_kind_and_lines(shared) -> None:
    steps, _ = shared
    assert [(s.kind, s.line_start, s.line_end) for s in steps] == SHARED_STEPS


def test_shared_runbook_shell_steps_are_the_runbook_lines_verbatim(shared) -> None:
    steps, lines = shared
    for step in steps:
        if step.kind is SHELL:
            expected = lines[step.line_start - 1].strip()
            assert step.raw == expected == step.body, f"line {step.line_start}"
            assert step.body_line == step.line_start


def test_systemd_unit_is_one_file_write_with_the_full_block(shared) -> None:
    steps, lines = shared
    unit = next(s for s in steps if s.kind is WRITE and s.path == "/etc/systemd/system/spacetimedb.service")
    assert unit.editor_command == lines[37].strip() == "sudo nano /etc/systemd/system/spacetimedb.service"
    assert unit.body == dedent(lines, 42, 53)
    assert unit.body.split("\n")[3] == ""  # interior blank line kept
    assert unit.body_line == 42
    assert unit.raw == f"{unit.editor_command}\n{unit.body}"
    assert not any(s.kind is SHELL and "nano" in s.raw for s in steps)


def test_nginx_site_is_one_file_write_keeping_commented_locations(shared) -> None:
    steps, lines = shared
    site = next(s for s in steps if s.kind is WRITE and s.path == "/etc/nginx/sites-available/spacetimedb")
    assert site.editor_command == lines[75].strip()
    assert site.body == dedent(lines, 80, 143)
    assert "    # location / {" in site.body.split("\n")
    assert site.body.count("\n") == 143 - 80
    assert (site.line_start, site.line_end) == (76, 143)


def test_fstab_is_a_line_edit_and_blkid_stays_a_shell_step(shared) -> None:
    steps, lines = shared
    fstab = next(s for s in steps if s.kind is EDIT)
    assert fstab.path == "/etc/fstab"
    assert fstab.editor_command == lines[324].strip() == "sudo nano /etc/fstab"
    assert fstab.body == lines[329].strip()
    assert "YOUR_UUID_HERE" in fstab.body
    assert (fstab.line_start, fstab.line_end, fstab.body_line) == (325, 330, 330)
    blkid = steps[steps.index(fstab) - 1]
    assert blkid.kind is SHELL and blkid.raw == lines[323].strip() == "sudo blkid /dev/nvme1n1"


def test_headings_setext_and_atx_with_anchor_tails_stripped(shared) -> None:
    parsed = parse_runbook(shared_runbook())
    titles = {h.line: (h.level, h.title) for h in parsed.headings}
    assert titles[1] == (1, "Self-hosting")
    assert titles[20] == (2, "Step 1: Create a Dedicated User for SpacetimeDB")
    assert titles[67] == (3, "Install Nginx")
    assert titles[254] == (1, "Backups & long-term storage")
    assert all("Direct link" not in h.title and "](#" not in h.title for h in parsed.headings)
    steps, _ = shared
    assert steps[0].section == ("Self-hosting", "Step 1: Create a Dedicated User for SpacetimeDB")
    assert steps[9].section[-1] == "Install Nginx"
    fstab = next(s for s in steps if s.kind is EDIT)
    assert fstab.section[0] == "Backups & long-term storage"
    assert fstab.section[-1].startswith("Step 1: Format + mount")


def test_console_step_create_and_attach_volume(shared) -> None:
    steps, _ = shared
    volume = next(s for s in steps if s.kind is CONSOLE)
    assert volume.params == {"action": "create_and_attach_volume", "volume_type": "gp3", "size_gb": 200,
                             "same_az": True}
    assert volume.intro == "In the AWS Console:" and volume.intro_line == 297


def test_console_step_aws_backup_plan(shared) -> None:
    steps, _ = shared
    plan = next(s for s in steps if s.kind is CONSOLE and s.params["action"] == "backup_plan")
    assert plan.params == {
        "action": "backup_plan",
        "rules": [
            {"name": "hourly", "schedule": "hourly", "retention": {"hours": 48}},
            {"name": "daily", "schedule": "daily", "retention": {"days": 14}},
            {"name": "monthly", "schedule": "monthly", "retention": {"months_min": 6, "months_max": 12}},
        ],
        "selection": {"tag": {"Name": "spacetimedb-data"}},
        "copy_to_other_region": "optional", "vault": "", "creates_vault": False,
    }


def test_restore_lists_interleave_manual_steps_and_code(shared) -> None:
    steps, lines = shared
    restore = [s for s in steps if s.section[-1].startswith("Restore strategy")]
    assert [(s.kind, s.params.get("action")) for s in restore] == [
        (CONSOLE, "restore_volume_from_snapshot"), (CONSOLE, "attach_volume"), (CONSOLE, "mount_volume"),
        (SHELL, None), (SHELL, None), (CONSOLE, "verify_query")]
    assert restore[1].params["instance"] == "recovery"
    assert restore[2].params["mount_point"] == "/stdb"
    assert restore[3].raw == lines[377].strip() and restore[3].notes == ["4) Ensure ownership:"]
    assert restore[4].raw == lines[381].strip()
    assert restore[5].params["command"] == "spacetime sql ..."
    drill = [s for s in steps if s.section[-1] == "Step 4: Regularly test restores"]
    assert [s.params["action"] for s in drill] == [
        "restore_volume_from_snapshot", "attach_volume", "mount_volume", "start_service", "verify_query"]
    assert drill[1].params["instance"] == "staging"


def test_prose_lists_are_not_steps(shared) -> None:
    steps, _ = shared
    assert not [s for s in steps if 386 <= s.line_start <= 404 or 256 <= s.line_start <= 295]


# ------------------------------------------------------------------------------ small runbooks


def local() -> list[RawStep]:
    return parse_runbook(RUNBOOKS / "local-and-users.md").steps


def test_comments_become_notes_of_next_command_and_trailing_ones_of_the_last() -> None:
    steps = local()
    assert steps[0].raw == "sudo useradd --system app"
    assert steps[0].notes == ["# create the service user first"]
    assert steps[2].notes == ["# trailing comment about certbot"]
    assert steps[1].notes == []


def test_continuation_lines_are_one_step_with_their_line_span() -> None:
    steps = local()
    install = steps[1]
    assert (install.line_start, install.line_end) == (11, 12)
    assert install.raw == "sudo -u app bash -c 'curl -sSf https://get.app.dev \\\n  | sh -s -- --yes'"
    apt = steps[2]
    assert (apt.line_start, apt.line_end) == (13, 15)
    assert apt.raw.split("\n") == ["sudo apt-get install -y \\", "    nginx \\", "    certbot"]


def test_sample_output_transcripts_tables_and_comment_only_blocks_do_not_run() -> None:
    not_run = {s.line_start: s.reason for s in local() if s.kind is NOT_RUN}
    assert set(not_run) == {20, 28, 32, 39, 44, 51}
    assert "You should see" in not_run[20]
    assert "text" in not_run[28]
    assert "●" in not_run[32]
    assert "comment lines only" in not_run[39]
    assert "transcript" in not_run[44]
    assert "does not look like shell commands" in not_run[51]


def test_fenced_block_without_info_string_is_shell() -> None:
    status = next(s for s in local() if s.line_start == 25)
    assert status.kind is SHELL and status.raw == "sudo systemctl status app"


def test_vim_file_write_keeps_blank_and_comment_lines() -> None:
    write = next(s for s in local() if s.kind is WRITE)
    assert write.path == "/etc/app/app.conf" and write.editor_command == "sudo vim /etc/app/app.conf"
    assert write.body.split("\n") == ["[server]", "listen = 127.0.0.1:3000", "", "# keep this comment",
                                      "# [tls]", "host = example.com"]
    assert (write.line_start, write.line_end, write.body_line) == (67, 76, 71)


def test_heredoc_is_one_shell_step() -> None:
    heredoc = next(s for s in local() if s.line_start == 81)
    assert heredoc.kind is SHELL and heredoc.line_end == 83
    assert heredoc.raw.split("\n")[-1] == "EOF"


def test_code_inside_list_item_is_a_step_with_the_item_as_note() -> None:
    last = local()[-1]
    assert last.kind is SHELL and last.line_start == 89
    assert last.raw == "sudo ln -s /etc/app/app.conf /etc/app/enabled/"
    assert last.notes == ["- Enable the config:"]


def test_editor_variants_sudo_e_same_block_content_and_commands_after_the_editor() -> None:
    steps = parse_runbook(RUNBOOKS / "editors.md").steps
    assert [(s.kind, s.line_start, s.line_end, s.path) for s in steps] == [
        (WRITE, 5, 8, "/etc/app/x.conf"), (WRITE, 13, 20, "/etc/app/y.conf"), (SHELL, 14, 14, "")]
    assert steps[0].body == "[x]\na = 1" and steps[0].body_line == 7
    assert steps[0].editor_command == "sudo -e /etc/app/x.conf"
    assert steps[1].body == "key=value" and steps[1].body_line == 20
    assert steps[2].raw == "sudo systemctl daemon-reload"


def test_console_params_are_parsed_from_the_text_not_hard_coded() -> None:
    steps = parse_runbook(RUNBOOKS / "console.md").steps
    assert steps[0].params == {"action": "create_volume", "volume_type": "gp2", "size_gb": 500,
                               "same_az": False}
    assert steps[1].params == {
        "action": "backup_plan",
        "rules": [
            {"name": "daily", "schedule": "daily", "retention": {"days": 30}},
            {"name": "weekly", "schedule": "weekly", "retention": {"weeks": 8}},
            {"name": "yearly", "schedule": "yearly", "retention": {"years_min": 1, "years_max": 3}},
        ],
        "selection": {"tag": {"Role": "db-data"}},
        "copy_to_other_region": "no", "vault": "", "creates_vault": False,
    }
    drill = steps[2:]
    assert [(s.kind, s.line_start) for s in drill] == [
        (CONSOLE, 20), (CONSOLE, 21), (CONSOLE, 22), (SHELL, 25), (SHELL, 29), (CONSOLE, 31)]
    assert drill[1].params == {"action": "attach_volume", "instance": "drill"}
    assert drill[2].params == {"action": "mount_volume", "mount_point": "/data"}
    assert drill[4].raw == "sudo systemctl start app"
    assert drill[5].params == {"action": "verify_query", "command": 'app sql "select 1"'}
    assert len(steps) == 8  # the informational list under "Notes" is not a step


# ------------------------------------------------------------------------------------ malformed


@pytest.mark.parametrize(("name", "line", "words"), [
    ("unclosed-fence.md", 5, "unclosed code fence"),
    ("editor-no-block.md", 7, "editor step `sudo nano /etc/app.conf` has no content block"),
    ("editor-then-command.md", 6, "editor step `sudo nano /etc/app.conf` has no content block"),
    ("empty.md", 1, "runbook is empty"),
    ("prose-only.md", 1, "no steps found"),
])
def test_malformed_runbooks_fail_with_one_line_naming_file_and_line(name: str, line: int, words: str) -> None:
    path = RUNBOOKS / name
    with pytest.raises(RunbookError) as info:
        parse_runbook(path)
    message = info.value.one_line()
    assert info.value.line == line
    assert message.startswith(f"{path}:{line}: ")
    assert words in message
    assert "\n" not in message and str(info.value) == message


def test_missing_runbook_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.md"
    with pytest.raises(UsageError) as info:
        parse_runbook(missing)
    assert not isinstance(info.value, RunbookError)
    assert info.value.one_line() == f"runbook not found: {missing} (pass --runbook or set STDB_RUNBOOK)"


def test_non_utf8_runbook_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.md"
    path.write_bytes(b"# T\n\n    sudo true\n\ncaf\xe9\n")
    with pytest.raises(RunbookError) as info:
        parse_runbook(path)
    assert info.value.line == 5 and "UTF-8" in str(info.value)


def test_crlf_runbook_parses_like_lf(tmp_path: Path) -> None:
    path = tmp_path / "crlf.md"
    path.write_bytes(b"# T\r\n\r\nRun:\r\n\r\n```sh\r\nsudo true\r\n```\r\n")
    steps = parse_runbook(path).steps
    assert [(s.kind, s.raw, s.line_start) for s in steps] == [(SHELL, "sudo true", 6)]
