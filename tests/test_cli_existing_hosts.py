"""The command line for existing hosts, staging configs and the lab group: every bad input is exit 2 with one
line on stderr naming the flag (or file and key) and the fix, before anything runs; good flags map onto
RunOptions; the existing flags keep their behaviour. Nothing here starts a run."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import build_parser, lab_table, main, run_options
from harness.run import RunOptions

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = str(REPO / "tests" / "runbooks" / "console.md")
SSH = ["--target", "ssh://deploy@stdb.example.net", "--url", "https://stdb.example.net"]


def _pem(tmp_path: Path) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    key = tmp_path / "id_ed25519"
    key.write_text("key\n")
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    not_pem = tmp_path / "notpem.txt"
    not_pem.write_text("hello\n")
    return {"key": key, "ca": _pem(tmp_path), "bad_pem": bad_pem, "not_pem": not_pem, "dir": tmp_path}


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("stdb-conformance: error: ") and "\n" not in err and "Traceback" not in err, err
    assert captured.out == ""
    return err


# (argv after `run --runbook R`, what the line must say)
BAD_FLAGS = [
    (["--target", "ftp://host"], "--target: malformed target"),
    (["--target", "ssh://"], "--target: malformed target"),
    (["--target", "ssh://u@h:70000", "--url", "https://h.example.net"], "port 70000 is out of range"),
    (["--target", "ssh://u@h", "--backend", "docker"], "--backend docker contradicts --target ssh://u@h"),
    (["--target", "vm://", "--backend", "docker"], "--backend docker contradicts --target vm://"),
    (["--target", "ssh://u@h"], "--url: missing"),
    ([*SSH[:2], "--url", "http://stdb.example.net"], "--url: 'http://stdb.example.net' is not an https:// URL"),
    ([*SSH[:2], "--url", "https://203.0.113.7"], "--url: '203.0.113.7' in 'https://203.0.113.7' is not a host name"),
    ([*SSH[:2], "--url", "https://stdb.example.net/app"], "--url: 'https://stdb.example.net/app' has a path"),
    ([*SSH[:2], "--url", "https://stdb.example.net/?x=1"], "has a path, query or fragment"),
    ([*SSH[:2], "--url", "https://"], "--url: 'https://' has no host name"),
    (["--url", "https://stdb.example.net"], "--url: only for a host the kit did not build"),
    (["--target", "docker://", "--database", "chat"], "--database: only for a host the kit did not build"),
    ([*SSH, "--database", "no/slash"], "--database: 'no/slash' is not a database name"),
    ([*SSH, "--identity-file", "{dir}/nope"], "--identity-file: ssh private key"),
    ([*SSH, "--identity-file", "{dir}"], "is not a file"),
    ([*SSH, "--known-hosts", "{dir}/nope"], "--known-hosts: known_hosts file"),
    ([*SSH, "--known-hosts", "{dir}/no/such/folder/kh", "--accept-new-host-key"], "mkdir -p"),
    ([*SSH, "--vantage", "docker://"], "--vantage: 'docker://' is not a vantage point"),
    ([*SSH, "--vantage", "ssh://"], "--vantage: malformed target"),
    (["--vantage", "ssh://probe@bastion.example.net"], "--vantage: only for a host the kit did not build"),
    ([*SSH, "--expected-version", "latest"], "--expected-version: 'latest' is not a version"),
    ([*SSH, "--resolve", "stdb.example.net"], "--resolve: 'stdb.example.net' has no '='"),
    ([*SSH, "--resolve", "stdb.example.net=stdb.lan"], "--resolve: 'stdb.lan' (for stdb.example.net) is not an IP"),
    ([*SSH, "--resolve", "bad name=192.0.2.1"], "--resolve: 'bad name' is not a host name"),
    ([*SSH, "--resolve", "a.example.net=192.0.2.1", "--resolve", "a.example.net=192.0.2.2"], "two addresses"),
    ([*SSH, "--ca-file", "{dir}/nope.pem"], "--ca-file: CA file"),
    ([*SSH, "--ca-file", "{not_pem}"], "holds no PEM certificate"),
    ([*SSH, "--ca-file", "{bad_pem}"], "holds a malformed PEM certificate"),
    ([*SSH, "--suites", "Service!"], "--suites: 'Service!' is not a suite name"),
    (["--jobs", "2"], "--jobs: only with --config"),
    (["--config", "{dir}/nope.toml"], "--config {dir}/nope.toml: no such file"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_FLAGS, ids=[b[1][:45] for b in BAD_FLAGS])
def test_a_bad_flag_is_one_line_exit_2(extra: list[str], expected: str, files: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    fill = {k: str(v) for k, v in files.items()}
    argv = ["run", "--runbook", RUNBOOK, *(a.format(**fill) for a in extra)]
    err = _one_line_exit_2(argv, capsys)
    assert expected.format(**fill) in err, err
    assert "(" in err, f"no fix given: {err}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_identity_file_is_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    files["key"].chmod(0)
    err = _one_line_exit_2(["run", "--runbook", RUNBOOK, *SSH, "--identity-file", str(files["key"])], capsys)
    assert "is not readable" in err and "chmod u+r" in err


FLEET = """
runbook = "{runbook}"
[[hosts]]
name = "a"
target = "ssh://ops@a.example.net"
url = "https://a.example.net"
[[hosts]]
name = "b"
target = "ssh://ops@b.example.net"
url = "https://b.example.net"
"""


@pytest.mark.parametrize(("extra", "expected"), [
    (["--target", "ssh://x@y"], "--target: not with --config"),
    (["--url", "https://y.example.net"], "--url: not with --config"),
    (["--database", "chat"], "--database: not with --config"),
    (["--backend", "docker"], "--backend docker contradicts host 'a'"),
    (["--jobs", "0"], "--jobs: '0' is not a number of hosts at a time"),
    (["--jobs", "many"], "--jobs: 'many' is not a number"),
    (["--identity-file", "/nonexistent/key"], "--identity-file: ssh private key /nonexistent/key does not exist"),
    (["--resolve", "a.example.net=nope"], "--resolve: 'nope'"),
    (["--runbook", "/nonexistent/rb.md"], "runbook not found"),
    (["--known-hosts", "/nonexistent/kh"], "host 'a': known_hosts: known_hosts file /nonexistent/kh does not exist"),
])
def test_bad_flags_with_a_config_are_one_line(tmp_path: Path, extra: list[str], expected: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(runbook=RUNBOOK))
    err = _one_line_exit_2(["run", "--config", str(config), *extra], capsys)
    assert expected in err, err


def test_a_bad_config_is_one_line_naming_file_host_and_key(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(runbook=RUNBOOK).replace('url = "https://b.example.net"', 'url = 3'))
    err = _one_line_exit_2(["run", "--config", str(config)], capsys)
    assert f"{config}: host 'b': url: 3 is a int, not a string in quotes" in err


def test_a_fleet_host_with_an_unknown_suite_stops_before_any_host_starts(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(runbook=RUNBOOK).replace('name = "b"', 'name = "b"\nsuites = ["nosuch"]'))
    err = _one_line_exit_2(["run", "--config", str(config), "--report-dir", str(tmp_path / "out")], capsys)
    assert f"{config}: host 'b': unknown suite(s): nosuch" in err
    assert not (tmp_path / "out").exists()


def test_bad_input_through_the_module_entry_point_has_no_traceback(tmp_path: Path) -> None:
    for extra in (["--target", "ssh://u@h"], ["--target", "ssh://u@h", "--url", "https://h.example.net",
                                                "--resolve", "h.example.net=x"]):
        proc = subprocess.run([sys.executable, "-m", "harness", "run", "--runbook", RUNBOOK, *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- good flags


def _options(*argv: str) -> RunOptions:
    return run_options(build_parser().parse_args(["run", "--runbook", RUNBOOK, *argv]))


def test_ssh_flags_map_onto_run_options(files: dict[str, Path]) -> None:
    options = _options("--target", "ssh://deploy@stdb.example.net:2222", "--url", "https://stdb.example.net/",
                       "--database", "quickstart-chat", "--identity-file", str(files["key"]),
                       "--known-hosts", str(files["dir"] / "kh"), "--accept-new-host-key", "--allow-mutation",
                       "--vantage", "ssh://probe@bastion.example.net", "--expected-version", "v1.2.3",
                       "--resolve", "stdb.example.net=203.0.113.7", "--resolve", "Other.Example.net=2001:db8::1",
                       "--ca-file", str(files["ca"]), "--suites", "service,routes")
    assert options.backend == "ssh" and options.target == "ssh://deploy@stdb.example.net:2222"
    assert options.url == "https://stdb.example.net" and options.database == "quickstart-chat"
    assert options.identity_file == files["key"] and options.known_hosts == files["dir"] / "kh"
    assert options.accept_new_host_key and options.allow_mutation
    assert options.vantage == "ssh://probe@bastion.example.net" and options.expected_version == "1.2.3"
    assert options.resolve == {"stdb.example.net": "203.0.113.7", "other.example.net": "2001:db8::1"}
    assert options.ca_file == files["ca"] and options.suites == ["service", "routes"]
    assert options.profile == "default" and options.fail_on == "error" and options.spacetimedb == "standin"


def test_the_existing_flags_keep_their_behaviour() -> None:
    plain = _options()
    assert plain.backend == "docker" and plain.target == "" and plain.profile == "default"
    assert plain.fail_on == "error" and plain.spacetimedb == "standin" and plain.suites == []
    assert plain.report_dir == Path.cwd() / "reports" / "out"
    vm = _options("--backend", "vm", "--fail-on", "never", "--spacetimedb", "real", "--keep-lab")
    assert (vm.backend, vm.fail_on, vm.spacetimedb, vm.keep_lab) == ("vm", "never", "real", True)
    assert _options("--target", "vm://").backend == "vm" and _options("--target", "vm://").target == ""
    assert _options("--target", "docker://", "--backend", "docker").backend == "docker"
    assert _options("--allow-mutation").allow_mutation  # accepted on a lab backend: it changes nothing there
    assert _options("--target", *SSH[1:], "--vantage", "").vantage == ""


def test_help_says_what_allow_mutation_does_and_which_value_wins(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "On lab backends the kit may always change its own host" in text
    assert "a host's own table, then a flag given with --config, then the file's top-level defaults" in text
    assert "fleet exit code" in text


# ---------------------------------------------------------------- the lab group (parser and output only)


def test_lab_parser() -> None:
    parser = build_parser()
    up = parser.parse_args(["lab", "up", "--runbook", RUNBOOK, "--backend", "vm", "--profile", "volume-first",
                            "--spacetimedb", "real", "--json"])
    assert (up.func.__name__, up.backend, up.profile, up.spacetimedb, up.json) == ("cmd_lab_up", "vm", "volume-first",
                                                                                     "real", True)
    assert parser.parse_args(["lab", "up"]).backend == "docker"
    listed = parser.parse_args(["lab", "list", "--json"])
    assert listed.func.__name__ == "cmd_lab_list" and listed.json
    down = parser.parse_args(["lab", "down", "ab12cd34"])
    assert down.func.__name__ == "cmd_lab_down" and down.run_id == "ab12cd34"


def test_lab_list_table() -> None:
    now = 1_700_000_000.0
    rows = [{"run_id": "ab12cd34", "backend": "docker", "target": "ssh://root@172.18.0.5", "url": "https://stdb.lab.test",
             "started": now - 3 * 3600 - 5},
            {"run_id": "ef56", "backend": "vm", "target": "ssh://root@10.0.2.15:2222", "url": "", "age": 42},
            {"run_id": "iso", "backend": "vm", "since": dt.datetime.fromtimestamp(now - 120, dt.UTC).isoformat()}]
    lines = lab_table(rows, now=now).splitlines()
    assert lines[0].split() == ["run", "id", "backend", "target", "url", "age"]
    assert lines[1].split() == ["ab12cd34", "docker", "ssh://root@172.18.0.5", "https://stdb.lab.test", "3h"]
    assert lines[2].split() == ["ef56", "vm", "ssh://root@10.0.2.15:2222", "-", "42s"]
    assert lines[3].split() == ["iso", "vm", "-", "-", "2m"]
    assert "lab up" in lab_table([])


def test_lab_without_its_module_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("harness.lab_hosts") is not None:
        pytest.skip("harness.lab_hosts exists: the lab group is tested with it")
    err = _one_line_exit_2(["lab", "list"], capsys)
    assert "harness.lab_hosts" in err


def test_lab_list_json_is_one_json_list(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    pytest.importorskip("harness.lab_hosts")
    assert main(["lab", "list", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run id") or out.startswith("no lab hosts kept up")
