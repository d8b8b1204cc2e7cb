"""Staging configs (harness/staging.py): the documented example loads, relative paths resolve against the
file's folder, precedence is host table > flags > file defaults, and every bad file is one line naming the
file, the host and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import build_parser, run_options
from harness.errors import UsageError
from harness.fleet import run_argv
from harness.staging import DEFAULT_JOBS, load_config

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "tests" / "runbooks" / "console.md"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A config folder with the files the documented example names."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "staging_ed25519").write_text("not really a key\n")
    (tmp_path / "known_hosts").write_text("")
    shutil.copy(RUNBOOK, tmp_path / "self-hosting.md")
    return tmp_path


def _write(folder: Path, text: str, name: str = "staging.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


FLEET = """
runbook = "self-hosting.md"
identity_file = "keys/staging_ed25519"
suites = ["service"]

[[hosts]]
name = "eu-1"
target = "ssh://deploy@eu-1.example.net"
url = "https://stdb-eu.example.net"

[[hosts]]
name = "us-1"
target = "ssh://deploy@us-1.example.net:2222"
url = "https://stdb-us.example.net/"
suites = ["service", "routes"]
"""


def test_the_documented_example_loads(folder: Path) -> None:
    path = folder / "staging.toml"
    shutil.copy(REPO / "docs" / "staging.example.toml", path)
    config = load_config(path)
    assert config.is_fleet and [h.name for h in config.hosts] == ["eu-1", "us-1"]
    assert config.jobs == 2 and config.report_dir == folder / "reports" / "staging"
    eu, us = (config.to_run_options(h) for h in config.hosts)
    assert eu.runbook == folder / "self-hosting.md" and eu.identity_file == folder / "keys" / "staging_ed25519"
    assert eu.target == "ssh://deploy@eu-1.example.net" and eu.url == "https://stdb-eu.example.net"
    assert eu.database == "quickstart-chat" and eu.expected_version == "1.2.0" and not eu.allow_mutation
    assert eu.report_dir == folder / "reports" / "staging" / "eu-1"
    assert us.allow_mutation and us.vantage == "ssh://probe@bastion.example.net" and us.database == ""
    assert us.resolve == {"stdb-us.example.net": "203.0.113.20"} and us.target.endswith(":2222")
    assert eu.suites == us.suites == ["service", "routes", "tls", "firewall"]


def test_relative_paths_resolve_against_the_files_folder(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    path = _write(folder, FLEET)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(path)
    options = config.to_run_options("eu-1")
    assert options.runbook == folder / "self-hosting.md" and options.identity_file == folder / "keys/staging_ed25519"
    assert config.jobs == DEFAULT_JOBS
    assert config.to_run_options("us-1").url == "https://stdb-us.example.net"  # the trailing / dropped


def test_one_host_at_the_top_level(folder: Path) -> None:
    path = _write(folder, 'runbook = "self-hosting.md"\ntarget = "ssh://ops@stdb.example.net"\n'
                          'url = "https://stdb.example.net"\nreport_dir = "out"\n')
    config = load_config(path)
    assert not config.is_fleet and config.hosts[0].name == "stdb.example.net"  # named after the url
    options = config.to_run_options(config.hosts[0])
    assert options.report_dir == folder / "out" and options.backend == "ssh"  # one host: no per-host folder
    one = _write(folder, 'runbook = "self-hosting.md"\n[[hosts]]\ntarget = "ssh://o@h.example.net"\n'
                         'url = "https://h.example.net"\n', "one.toml")
    assert not load_config(one).is_fleet


def test_precedence_host_table_then_flags_then_file_defaults(folder: Path) -> None:
    path = _write(folder, FLEET.replace('suites = ["service"]\n',
                                        'suites = ["service"]\nfail_on = "warning"\nexpected_version = "1.0.0"\n'))
    config = load_config(path).with_overrides({"suites": ["tls"], "fail_on": None, "expected_version": "2.0.0"})
    eu, us = config.to_run_options("eu-1"), config.to_run_options("us-1")
    assert eu.suites == ["tls"]  # the flag replaces the file's default
    assert us.suites == ["service", "routes"]  # the host's own table still wins
    assert eu.fail_on == "warning"  # a flag not given changes nothing
    assert eu.expected_version == us.expected_version == "2.0.0"


def test_connection_defaults_do_not_apply_to_lab_hosts(folder: Path) -> None:
    path = _write(folder, FLEET + '\n[[hosts]]\nname = "lab"\ntarget = "docker://"\n')
    options = load_config(path).to_run_options("lab")
    assert options.backend == "docker" and options.target == "" and options.identity_file is None
    assert options.suites == ["service"]  # other defaults do apply


def test_a_hosts_options_round_trip_through_the_command_line(folder: Path) -> None:
    text = FLEET.replace('suites = ["service"]\n', 'suites = ["service"]\naccept_new_host_key = true\n'
                         'known_hosts = "new_known_hosts"\nresolve = { "stdb-eu.example.net" = "192.0.2.1" }\n'
                         'vantage = "ssh://probe@bastion.example.net:2200"\nallow_mutation = true\n', 1)
    config = load_config(_write(folder, text))
    for host in config.hosts:
        options = config.to_run_options(host)
        argv = run_argv(options)
        assert argv[1:4] == ["-m", "harness", "run"]
        assert run_options(build_parser().parse_args(argv[3:])) == options


BAD = [
    ("colour = 'red'\n" + FLEET, "colour: unknown key", "known:"),
    (FLEET + "colour = 'red'\n", "host 'us-1': colour: unknown key", "known:"),
    (FLEET.replace('name = "eu-1"\n', 'name = "eu-1"\njobs = 2\n'), "host 'eu-1': jobs: unknown key (only at the top",
     "known:"),
    (FLEET.replace('suites = ["service"]', 'suites = "service"'), "suites: 'service' is not a list", '["service"'),
    (FLEET.replace('suites = ["service"]', 'jobs = "2"'), "jobs: '2' is not a whole number", "at least 1"),
    (FLEET.replace('suites = ["service"]', "jobs = 0"), "jobs: 0 is not a number", "at least 1"),
    (FLEET.replace('suites = ["service"]', 'allow_mutation = "yes"'), "allow_mutation: 'yes' is a str",
     "true or false"),
    (FLEET.replace('suites = ["service"]', 'fail_on = "sometimes"'), "fail_on: 'sometimes' is not one of", "error"),
    (FLEET.replace('target = "ssh://deploy@eu-1.example.net"\n', ''), "host 'eu-1': target: missing", "ssh://"),
    (FLEET.replace('url = "https://stdb-eu.example.net"\n', ''), "host 'eu-1': url: missing", "https://DOMAIN"),
    (FLEET.replace('"https://stdb-eu.example.net"', '"http://stdb-eu.example.net"'), "host 'eu-1': url:", "https"),
    (FLEET.replace('"ssh://deploy@eu-1.example.net"', '"ftp://eu-1"'), "host 'eu-1': target: malformed", "ssh://"),
    (FLEET.replace('name = "us-1"', 'name = "eu-1"'), "hosts[2]: name 'eu-1' is also the name of hosts[1]",
     "its own name"),
    (FLEET.replace('name = "us-1"', 'name = "us 1"'), "hosts[2]: name: 'us 1' is not a usable host name",
     "report folder"),
    (FLEET.replace('identity_file = "keys/staging_ed25519"', 'identity_file = "keys/nope"'),
     "identity_file: ssh private key", "existing"),
    (FLEET.replace('runbook = "self-hosting.md"', 'runbook = "missing.md"'), "runbook: runbook", "existing runbook"),
    (FLEET.replace('suites = ["service"]', 'known_hosts = "nope"'), "host 'eu-1': known_hosts: known_hosts file",
     "--accept-new-host-key"),
    (FLEET.replace('suites = ["service"]', 'resolve = { "x.example.net" = "not-an-ip" }'),
     "resolve: 'not-an-ip' (for x.example.net) is not an IP address", "NAME=ADDRESS"),
    (FLEET.replace('suites = ["service"]', 'vantage = "vm://"'), "vantage: 'vm://' is not a vantage point", "ssh://"),
    (FLEET.replace('suites = ["service"]', 'expected_version = "latest"'), "expected_version: 'latest'", "MAJOR"),
    ('target = "ssh://a@b.example.net"\nurl = "https://b.example.net"\n' + FLEET, "at the top level and [[hosts]]",
     "each [[hosts]] table"),
    ('runbook = "self-hosting.md"\n', "no host", "[[hosts]]"),
    ("hosts = 3\n", "hosts must be [[hosts]] tables", "one [[hosts]]"),
    (FLEET + '\n[[hosts]]\nname = "lab"\ntarget = "docker://"\nurl = "https://x.example.net"\n',
     "host 'lab': url: only for an ssh:// target", "drop the key"),
    ("this is = not toml [\n", "not valid TOML", "fix the syntax"),
]


@pytest.mark.parametrize(("text", "expected", "fix"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_file_is_one_line_naming_file_key_and_fix(folder: Path, text: str, expected: str, fix: str) -> None:
    path = _write(folder, text)
    with pytest.raises(UsageError) as err:
        load_config(path)
    line = err.value.one_line()
    assert "\n" not in line and line.startswith(f"{path}: "), line
    assert expected in line and fix in line, line
    assert err.value.exit_code == 2


def test_a_missing_config_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--config .*: no such file"):
        load_config(tmp_path / "nope.toml")
