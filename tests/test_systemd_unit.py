"""The runbook's unit against systemd's effective one: parsing `systemctl show` as systemd 255 prints it (the
sample is from a lab target) and the unit text as systemd reads it."""

from __future__ import annotations

from harness import systemd_unit

RUNBOOK_UNIT = """[Unit]
Description=SpacetimeDB Server
After=network.target

[Service]
ExecStart=/stdb/spacetime --root-dir=/stdb start --listen-addr='127.0.0.1:3000'
Restart=always
User=spacetimedb
WorkingDirectory=/stdb

[Install]
WantedBy=multi-user.target
"""

SHOWN = """Restart=always
ExecStart={ path=/stdb/spacetime ; argv[]=/stdb/spacetime --root-dir=/stdb start --listen-addr=127.0.0.1:3000 ; \
ignore_errors=no ; start_time=[Sun 2026-12-06 09:40:21 UTC] ; stop_time=[n/a] ; pid=3423 ; code=(null) ; status=0/0 }
Environment=
WorkingDirectory=/stdb
User=spacetimedb
Group=
LoadState=loaded
FragmentPath=/etc/systemd/system/spacetimedb.service
DropInPaths=
NeedDaemonReload=no
"""


def test_the_runbooks_unit_is_what_systemd_runs() -> None:
    effective = systemd_unit.parse_show(SHOWN)
    assert effective["ExecStart"] == "/stdb/spacetime --root-dir=/stdb start --listen-addr=127.0.0.1:3000"
    assert systemd_unit.differences(RUNBOOK_UNIT, effective) == []


def test_a_drop_in_that_changes_the_user_is_a_difference() -> None:
    effective = systemd_unit.parse_show(SHOWN.replace("User=spacetimedb", "User=root"))
    found = systemd_unit.differences(RUNBOOK_UNIT, effective)
    assert [(d.setting, d.runbook, d.effective) for d in found] == [("User", "spacetimedb", "root")]
    assert found[0].describe() == "User: runbook 'spacetimedb', systemd uses 'root'"


def test_execstart_restart_environment_and_defaults() -> None:
    shown = (SHOWN.replace("--listen-addr=127.0.0.1:3000", "--listen-addr=0.0.0.0:3000")
             .replace("Restart=always", "Restart=on-failure").replace("Environment=\n", "Environment=A=1 B=2\n"))
    found = {d.setting for d in systemd_unit.differences(RUNBOOK_UNIT, systemd_unit.parse_show(shown))}
    assert found == {"ExecStart", "Restart", "Environment"}
    # a unit that sets neither Restart= nor User=: systemd's defaults (no, unset) are what it promises
    bare = "[Service]\nExecStart=/bin/true\n"
    expected = systemd_unit.expected_settings(bare)
    assert expected["Restart"] == "no" and expected["User"] == "" and expected["ExecStart"] == "/bin/true"


def test_unit_text_parsing_follows_systemd() -> None:
    text = ("[Service]\n# comment\nEnvironment=A=1\nEnvironment=\nEnvironment=\"C=x y\" B=2\n"
            "ExecStart=-/bin/echo \\\n  'a b'\nUser=u\n")
    expected = systemd_unit.expected_settings(text)
    assert expected["Environment"] == "B=2 C=x y"  # an empty assignment resets the list
    assert expected["ExecStart"] == "/bin/echo a b"  # prefix dropped, continuation joined, quotes undone
    assert systemd_unit.parse_unit(text)["Service"][-1] == ("User", "u")


def test_show_command_asks_for_every_compared_setting_and_its_origin() -> None:
    command = systemd_unit.show_command("spacetimedb")
    for prop in ("User", "ExecStart", "Restart", "DropInPaths", "NeedDaemonReload", "FragmentPath"):
        assert f"-p {prop} " in command
    assert command.endswith(" spacetimedb")
