"""The planner: phases, locations, run_as, placeholder substitution (and nothing else), order, profiles."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import RunbookError, UsageError
from harness.model import Location, Plan, StepKind
from harness.planner import PLACEHOLDER_LIKE, build_plan, substitute, sudo_user
from harness.profiles import builtin_profiles, load_profile
from harness.runbook_parser import split_lines
from tests.conftest import shared_runbook

RUNBOOKS = Path(__file__).resolve().parent / "runbooks"
DEFAULT_VALUES = {"example.com": "stdb.lab.test", "/dev/nvme1n1": "/dev/nvme1n1", "<host>": "stdb-target",
                  "<database-name>": "conformance", "<version-number>": "2.8.2"}


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(shared_runbook())


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return split_lines(shared_runbook().read_text(encoding="utf-8"))


def by_line(plan: Plan, line: int):  # type: ignore[no-untyped-def]
    return next(s for s in plan.steps if s.ref.line_start == line)


def test_indexes_are_renumbered_in_plan_order(plan: Plan) -> None:
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))
    assert plan.profile == "default" and len(plan.runbook_sha256) == 64
    assert [s.ref.line_start for s in plan.steps] == sorted(s.ref.line_start for s in plan.steps)


def test_phases_follow_the_default_profile(plan: Plan) -> None:
    def phase_of(start: int, end: int) -> set[str]:
        return {s.phase for s in plan.steps if start <= s.ref.line_start <= end}

    assert phase_of(20, 184) == {"apply"}
    assert phase_of(185, 199) == {"operator"}
    assert phase_of(200, 218) == {"upgrade"}
    assert phase_of(219, 251) == {"diagnostics"}
    assert phase_of(296, 361) == {"apply"}
    assert phase_of(362, 385) == {"restore"}
    assert [s.ref.line_start for s in plan.runnable("upgrade")] == [205, 209, 213, 217]


def test_locations_and_their_reasons(plan: Plan) -> None:
    operator = [s for s in plan.steps if s.location is Location.OPERATOR]
    assert [s.ref.line_start for s in operator] == [190, 194, 195, 196]
    assert all(s.location_reason == 'line 188: "On your local machine"' for s in operator)
    consoles = [s for s in plan.steps if s.kind is StepKind.CONSOLE]
    assert consoles and all(s.location is Location.CONSOLE for s in consoles)
    assert by_line(plan, 298).location_reason == 'line 297: "In the AWS Console"'
    assert by_line(plan, 353).location_reason == 'line 352: "In AWS Console"'
    assert by_line(plan, 304).location is Location.SERVER
    assert by_line(plan, 304).location_reason == 'line 302: "On the EC2 instance"'
    assert "default" in by_line(plan, 25).location_reason
    runnable = [s for s in plan.steps if s.runs]
    assert {s.location for s in runnable} == {Location.SERVER, Location.OPERATOR}


def test_run_as_comes_from_sudo_u(plan: Plan) -> None:
    run_as = {s.ref.line_start: s.run_as for s in plan.steps if s.run_as}
    assert run_as == {31: "spacetimedb", 209: "spacetimedb", 213: "spacetimedb"}


def test_only_placeholders_are_rewritten(plan: Plan, lines: list[str]) -> None:
    for step in plan.steps:
        if step.kind is StepKind.SHELL:
            expected = step.raw
            for placeholder, value in DEFAULT_VALUES.items():
                expected = expected.replace(placeholder, value)
            assert step.command == expected, step.ref.label()
            assert step.raw == lines[step.ref.line_start - 1].strip()
    certbot = by_line(plan, 173)
    assert certbot.command == lines[172].strip().replace("example.com", "stdb.lab.test")
    assert by_line(plan, 25).command == by_line(plan, 25).raw == "sudo mkdir /stdb"


def test_substitutions_are_listed_per_occurrence_with_their_line(plan: Plan) -> None:
    subs = [(sub.placeholder, sub.value, sub.line, sub.dynamic)
            for s in plan.steps for sub in s.substitutions]
    static = [(p, v, line) for p, v, line, dynamic in subs if not dynamic]
    assert static == [
        ("example.com", "stdb.lab.test", 82), ("example.com", "stdb.lab.test", 173),
        ("example.com", "stdb.lab.test", 190), ("<host>", "stdb-target", 195), ("<host>", "stdb-target", 196),
        ("<database-name>", "conformance", 196), ("<version-number>", "2.8.2", 213),
        ("/dev/nvme1n1", "/dev/nvme1n1", 312), ("/dev/nvme1n1", "/dev/nvme1n1", 318),
        ("/dev/nvme1n1", "/dev/nvme1n1", 324),
    ]
    assert [(p, line) for p, _, line, dynamic in subs if dynamic] == [("YOUR_UUID_HERE", 330)]


def test_file_write_content_is_substituted_and_raw_is_not(plan: Plan, lines: list[str]) -> None:
    site = plan.find(kind=StepKind.FILE_WRITE, path="/etc/nginx/sites-available/spacetimedb")[0]
    expected = "\n".join(line[4:] for line in lines[79:143]).replace("example.com", "stdb.lab.test")
    assert site.content == expected
    assert "example.com" in site.raw and "server_name stdb.lab.test;" in site.content
    unit = plan.find(kind=StepKind.FILE_WRITE, path="/etc/systemd/system/spacetimedb.service")[0]
    assert unit.content == "\n".join(line[4:] for line in lines[41:53])
    assert unit.substitutions == []


def test_fstab_line_edit_keeps_the_dynamic_uuid_for_the_applier(plan: Plan, lines: list[str]) -> None:
    fstab = plan.find(kind=StepKind.LINE_EDIT, path="/etc/fstab")[0]
    assert fstab.content == lines[329].strip()
    [sub] = fstab.substitutions
    assert sub.dynamic and sub.placeholder == "YOUR_UUID_HERE" and sub.line == 330
    assert "blkid" in sub.source and "/dev/nvme1n1" in sub.source


def test_adaptations_declare_every_change(plan: Plan) -> None:
    ids = [a.id for a in plan.adaptations]
    assert ids == ["editor-to-file-write", "editor-to-line-append", "placeholder-substitution",
                   "dynamic-placeholder", "console-to-provider"]
    editor = plan.adaptations[0]
    assert "line 38" in editor.detail and "line 76" in editor.detail
    assert "example.com -> stdb.lab.test (3x, lines 82, 173, 190)" in plan.adaptations[2].detail


def test_volume_first_profile_moves_the_volume_sections_first(lines: list[str]) -> None:
    plan = build_plan(shared_runbook(), "volume-first")
    starts = [s.ref.line_start for s in plan.steps]
    assert starts[:13] == [298, 304, 305, 312, 317, 318, 319, 324, 325, 335, 336, 337, 342]
    assert starts[13] == 25
    assert sorted(starts) == sorted(s.ref.line_start for s in build_plan(shared_runbook()).steps)
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))
    assert plan.sections[0].endswith("Step 0: Create and attach the EBS data volume")
    assert plan.adaptations[-1].id == "section-order"


# ------------------------------------------------------------------------------------- profiles


def test_builtin_profiles() -> None:
    assert builtin_profiles() == ["default", "self-hosting-only", "volume-first"]
    profile = load_profile("default")
    assert profile.placeholders["example.com"].value == "stdb.lab.test"
    uuid = profile.placeholders["YOUR_UUID_HERE"]
    assert uuid.is_dynamic and uuid.device == "/dev/nvme1n1" and uuid.field == "UUID"
    nginx = ("Self-hosting", "Step 7: Troubleshooting", "Nginx Fails to Start")
    assert profile.phase_for(nginx) == "diagnostics"
    assert profile.phase_for(("Self-hosting", "Step 1: Create")) == "apply"


def test_unknown_profile_lists_the_builtins() -> None:
    with pytest.raises(UsageError) as info:
        load_profile("nope")
    assert "unknown profile: nope" in str(info.value) and "default, self-hosting-only, volume-first" in str(info.value)


def write_profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(body)
    return path


def test_custom_profile_by_path_and_dynamic_device_follows_the_device_value(tmp_path: Path) -> None:
    path = write_profile(tmp_path, """
name = "custom"
[placeholders]
"example.com" = "db.example.org"
"/dev/nvme1n1" = "/dev/vdb"
YOUR_UUID_HERE = {dynamic = "blkid", device = "/dev/nvme1n1"}
"<host>" = "h"
"<database-name>" = "d"
"<version-number>" = "1.0.0"
""")
    plan = build_plan(shared_runbook(), path)
    assert plan.profile == "custom"
    assert by_line(plan, 312).command == "sudo mkfs.ext4 -F /dev/vdb"
    fstab = plan.find(kind=StepKind.LINE_EDIT)[0]
    assert "/dev/vdb" in fstab.substitutions[0].source
    assert {s.phase for s in plan.steps} == {"apply"}


@pytest.mark.parametrize(("body", "words"), [
    ('[[phases]]\nsection = "x"\nphase = "later"\n', "unknown phase 'later'"),
    ('[[phases]]\nsection = "("\nphase = "apply"\n', "bad regular expression"),
    ('colour = "red"\n', "unknown keys colour"),
    ('[placeholders]\nX = {dynamic = "dig"}\n', "unknown dynamic source 'dig'"),
    ('name = "x"\n[placeholders\n', "not valid TOML"),
])
def test_bad_profiles_are_usage_errors(tmp_path: Path, body: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        load_profile(write_profile(tmp_path, body))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_order_entry_matching_nothing_is_an_error(tmp_path: Path) -> None:
    default = (Path(__file__).resolve().parent.parent / "harness" / "profiles" / "default.toml").read_text()
    path = write_profile(tmp_path, default.replace("order = []", 'order = ["^No such section"]'))
    with pytest.raises(UsageError, match="order entry '\\^No such section' matches no section"):
        build_plan(shared_runbook(), path)


# ------------------------------------------------------------------------------ small runbooks


def test_local_machine_steps_sudo_users_and_not_run_locations() -> None:
    plan = build_plan(RUNBOOKS / "local-and-users.md")
    publish = by_line(plan, 61)
    assert publish.location is Location.OPERATOR
    assert publish.location_reason == 'line 58: "On your local machine"'
    assert publish.command == "app publish --server https://stdb.lab.test conformance"
    assert by_line(plan, 62).run_as == "deploy" and by_line(plan, 62).location is Location.OPERATOR
    assert by_line(plan, 11).run_as == "app"
    assert by_line(plan, 84).run_as == "app" and by_line(plan, 84).location is Location.SERVER
    not_run = [s for s in plan.steps if s.kind is StepKind.NOT_RUN]
    assert len(not_run) == 6 and all(s.location is Location.NONE for s in not_run)
    assert all(s.location_reason.startswith("not executed: ") for s in not_run)
    write = plan.find(kind=StepKind.FILE_WRITE)[0]
    assert write.content.endswith("host = stdb.lab.test")
    assert [(s.placeholder, s.line) for s in write.substitutions] == [("example.com", 76)]


@pytest.mark.parametrize(("name", "line", "token"), [
    ("unknown-placeholder.md", 7, "<module-name>"),
    ("unknown-your-here.md", 10, "YOUR_API_KEY_HERE"),
])
def test_unknown_placeholder_fails_with_one_line(name: str, line: int, token: str) -> None:
    path = RUNBOOKS / name
    with pytest.raises(RunbookError) as info:
        build_plan(path)
    assert info.value.line == line
    assert str(info.value) == (f"{path}:{line}: unknown placeholder {token} at line {line}; "
                               "add it to the profile's [placeholders]")


@pytest.mark.parametrize(("command", "user"), [
    ("sudo -u spacetimedb bash -c 'x'", "spacetimedb"),
    ("sudo -u spacetimedb -i -- spacetime version", "spacetimedb"),
    ("sudo -iu app true", "app"),
    ("sudo -uapp true", "app"),
    ("sudo --user=deploy true", "deploy"),
    ("sudo --user deploy true", "deploy"),
    ("sudo -g adm -u bob true", "bob"),
    ("sudo journalctl -u spacetimedb", None),
    ("sudo systemctl start x", None),
    ("cd /tmp && sudo -u web ls", "web"),
    ("echo 'sudo -u ghost' | cat", None),
])
def test_sudo_user(command: str, user: str | None) -> None:
    assert sudo_user(command) == user


# ------------------------------------------------------------------------------------- properties

PROFILE = load_profile("default")
LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\n\r"),
    max_size=60)


def has_placeholder(text: str) -> bool:
    return bool(PLACEHOLDER_LIKE.search(text)) or any(key in text for key in PROFILE.placeholders)


@given(LINE_TEXT)
def test_text_without_placeholders_is_not_rewritten(text: str) -> None:
    result = substitute(text, 1, PROFILE)
    if not result.substitutions:
        assert result.text == text
    if not has_placeholder(text):
        assert result.text == text and result.substitutions == []


@given(st.lists(st.tuples(LINE_TEXT.filter(lambda t: not has_placeholder(t)),
                          st.sampled_from(sorted(DEFAULT_VALUES))), max_size=5),
       LINE_TEXT.filter(lambda t: not has_placeholder(t)))
def test_substitution_changes_only_the_placeholders(pieces: list[tuple[str, str]], tail: str) -> None:
    # separate pieces with a space so a placeholder never glues onto a neighbouring word character
    raw = "".join(f"{text} {token} " for text, token in pieces) + tail
    result = substitute(raw, 10, PROFILE)
    expected = "".join(f"{text} {DEFAULT_VALUES[token]} " for text, token in pieces) + tail
    assert result.text == expected
    assert [s.placeholder for s in result.substitutions] == [token for _, token in pieces]
    assert {s.line for s in result.substitutions} <= {10}


COMMAND_WORDS = st.sampled_from(["echo", "sudo ls", "grep -r", "curl -sSf", "df -h", "printf", "true"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(COMMAND_WORDS, LINE_TEXT)
def test_planned_command_equals_raw_for_lines_without_placeholders(word: str, args: str) -> None:
    line = f"{word} {args}".rstrip()
    if has_placeholder(line) or "<<" in line:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rb.md"
        path.write_text(f"# Random\n\nRun:\n\n```sh\n{line}\n```\n", encoding="utf-8")
        plan = build_plan(path)
    [step] = plan.steps
    assert step.kind is StepKind.SHELL and step.ref.line_start == 6
    assert step.command == step.raw == line
    assert step.substitutions == []
