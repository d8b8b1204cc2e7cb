"""The remote vantage point (harness/vantage.py), without a lab: the local vantage runs bounded commands and
agents; the connection helpers pin the domain and carry the trust bundle; the run state's `site` and `vantage`
(and their older fallbacks) are read as documented; ssh and lab-client vantages build the argv they should.
End to end on loopback: a TLS site for a name that does not resolve, reached only through --connect/--resolve
and trusted only through the bundle."""

from __future__ import annotations

import base64
import hashlib
import json
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import vantage as vmod
from harness.agents import http_probe, ws_subscribe
from harness.errors import LabError
from harness.probe_client import ProbeSession
from harness.targets.base import CommandResult
from harness.vantage import (
    LabClientVantage,
    LocalVantage,
    Site,
    SshVantage,
    Vantage,
    agent_command,
    agent_flags,
    curl_args,
    openssl_connect_args,
    site_from_state,
    vantage_from_state,
)

DOMAIN = "stdb.vantage.test"  # never resolves: only --connect / --resolve reach the loopback site


class FixedCa(Vantage):
    """A vantage that only answers ca_path (for the argument builders)."""

    def __init__(self, ca: str) -> None:
        super().__init__()
        self._ca = ca

    def run(self, command: str, *, user: str = "root", timeout: float = 60.0,
            stdin: bytes | None = None) -> CommandResult:
        raise AssertionError("not used")

    def popen_argv(self, argv: list[str], *, user: str = "root") -> list[str]:
        return argv

    def describe(self) -> str:
        return "fixed"


# ---------------------------------------------------------------- local vantage


def test_local_runs_a_command_with_stdin() -> None:
    with LocalVantage() as local:
        res = local.run("read line; echo got:$line; echo err >&2; exit 3", stdin=b"hello\n", timeout=10)
    assert res.exit_status == 3 and res.stdout.strip() == "got:hello" and res.stderr.strip() == "err"
    assert res.host == socket.gethostname() and not res.timed_out
    assert local.is_kit_machine and local.describe() == f"this machine ({socket.gethostname()})"


def test_local_timeout_kills_the_whole_pipeline() -> None:
    started = time.monotonic()
    res = LocalVantage().run("sleep 30 | cat; echo never", timeout=1)
    assert res.timed_out and res.exit_status == 124 and "never" not in res.stdout
    assert time.monotonic() - started < 10


def test_local_long_lived_agent_is_bounded() -> None:
    local = LocalVantage()
    script = "import sys\nfor n, line in enumerate(sys.stdin):\n    print('echo', line.strip(), flush=True)\n"
    proc = subprocess.Popen(local.popen_argv([local.python, "-u", "-c", script]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for n in range(3):
            proc.stdin.write(f"r{n}\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "the agent did not answer within 10 s"
            assert proc.stdout.readline().strip() == f"echo r{n}"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_local_agent_path_and_bundle(tmp_path: Path) -> None:
    assert Path(LocalVantage().agent_path("ws_subscribe.py")).is_file()
    assert LocalVantage().ca_path() == ""
    extra = tmp_path / "extra.pem"
    extra.write_text("-----BEGIN CERTIFICATE-----\nEXTRA\n-----END CERTIFICATE-----\n")
    local = LocalVantage(extra_ca=str(extra))
    bundle = Path(local.ca_path())
    text = bundle.read_text()
    assert text.rstrip().endswith("EXTRA\n-----END CERTIFICATE-----")
    system = next((Path(p) for p in vmod.SYSTEM_BUNDLES if Path(p).is_file()), None)
    if system is not None:  # the system store is kept: --cacert/-CAfile/cafile would otherwise replace it
        assert text.startswith(system.read_text()[:200])
    assert local.ca_path() == str(bundle)  # built once
    local.close()
    assert not bundle.exists()


# ---------------------------------------------------------------- connection arguments


def test_curl_args() -> None:
    pinned = Site(DOMAIN, f"https://{DOMAIN}", "10.1.2.3", "/kit/ca.pem")
    assert curl_args(pinned, FixedCa("/v/ca-bundle.pem")) == (
        f"--resolve {DOMAIN}:443:10.1.2.3 --resolve {DOMAIN}:80:10.1.2.3 --cacert /v/ca-bundle.pem")
    assert curl_args(pinned, FixedCa("")) == f"--resolve {DOMAIN}:443:10.1.2.3 --resolve {DOMAIN}:80:10.1.2.3"
    dns = Site(DOMAIN, f"https://{DOMAIN}")
    assert curl_args(dns, FixedCa("")) == ""
    assert curl_args(dns, FixedCa("/v/b.pem")) == "--cacert /v/b.pem"


def test_openssl_connect_args() -> None:
    assert openssl_connect_args(Site(DOMAIN, "", "10.1.2.3"), FixedCa("")) == (
        f"-connect 10.1.2.3:443 -servername {DOMAIN}")
    assert openssl_connect_args(Site(DOMAIN, ""), FixedCa("/v/b.pem")) == (
        f"-connect {DOMAIN}:443 -servername {DOMAIN} -CAfile /v/b.pem")
    assert openssl_connect_args(Site(DOMAIN, "", "fd00::10"), FixedCa("")).startswith("-connect '[fd00::10]:443'")


def test_agent_flags_and_command() -> None:
    assert agent_flags(Site(DOMAIN, "", "10.1.2.3"), FixedCa("/v/b.pem")) == [
        "--connect", "10.1.2.3", "--cafile", "/v/b.pem"]
    assert agent_flags(Site(DOMAIN, ""), FixedCa("")) == []
    lab = LabClientVantage("stdbc-x-client")
    assert agent_command(lab, "ws_subscribe.py", ["wss://d/x", "SELECT * FROM probe", ""]) == (
        "python3 /lab/agents/ws_subscribe.py wss://d/x 'SELECT * FROM probe' ''")


def test_agents_parse_their_new_flags() -> None:
    args = ws_subscribe.parser().parse_args(["wss://d/s", "Q", "--until", "X", "--connect", "10.0.0.1",
                                             "--cafile", "/ca.pem"])
    assert (args.connect, args.cafile, args.until, args.timeout) == ("10.0.0.1", "/ca.pem", "X", 30.0)
    args = ws_subscribe.parser().parse_args(["wss://d/s", "", "--until", "X"])
    assert args.connect is None and args.cafile is None and args.query == ""
    args = http_probe.parser().parse_args(["--connect", "10.0.0.1", "--cafile", "/ca.pem"])
    assert (args.connect, args.cafile) == ("10.0.0.1", "/ca.pem")
    args = http_probe.parser().parse_args([])
    assert args.connect is None and args.cafile is None


# ---------------------------------------------------------------- the run state


def test_site_from_state() -> None:
    declared = site_from_state({"site": {"domain": "a.example", "url": "https://a.example", "address": "",
                                         "ca_file": ""}})
    assert declared == Site("a.example", "https://a.example", "", "", True)
    assert declared.connect_host == "a.example"
    nested = {"lab": {"run_id": "r", "target": {}, "services": {"domain": "stdb.lab.test",
                                                               "ips": {"target": "172.30.0.10"}}}}
    assert site_from_state(nested) == Site("stdb.lab.test", "https://stdb.lab.test", "172.30.0.10", "", False)
    flat = {"lab": {"domain": "stdb.lab.test", "ips": {"target": "172.30.0.10"}, "containers": {}}}
    assert site_from_state(flat).connect_host == "172.30.0.10"
    with pytest.raises(LabError):
        site_from_state({"lab": {"run_id": "r", "target": {}, "services": None}})


def test_vantage_from_state() -> None:
    local = vantage_from_state({"vantage": {"kind": "local"}, "site": {"domain": "d", "ca_file": "/k/ca.pem"}})
    assert isinstance(local, LocalVantage) and local.extra_ca == "/k/ca.pem"
    lab = vantage_from_state({"vantage": {"kind": "lab-client", "container": "stdbc-r-client",
                                          "ca_dir_host": "/w/ca"}, "site": {"domain": "d"}})
    assert isinstance(lab, LabClientVantage) and lab.describe() == "lab client container stdbc-r-client"
    old = vantage_from_state({"lab": {"run_id": "r", "services": {"containers": {"client": "stdbc-o-client"}}}})
    assert isinstance(old, LabClientVantage) and old.container == "stdbc-o-client" and old.extra_ca == ""
    ssh = vantage_from_state({"vantage": {"kind": "ssh", "url": "ssh://ops@10.9.8.7:2222", "identity_file": "/k/id",
                                          "known_hosts": "/k/kh"}, "site": {"domain": "d"}})
    try:
        assert isinstance(ssh, SshVantage) and (ssh.user, ssh.host, ssh.port) == ("ops", "10.9.8.7", 2222)
    finally:
        ssh.close()
    with pytest.raises(LabError):
        vantage_from_state({"vantage": {"kind": "carrier-pigeon"}})
    with pytest.raises(LabError):
        vantage_from_state({"lab": {"services": {"containers": {}}}})


# ---------------------------------------------------------------- ssh and lab client argv


def _capture(monkeypatch: pytest.MonkeyPatch, stdout: str = "") -> list[list[str]]:
    calls: list[list[str]] = []

    def fake(argv: list[str], **kw: Any) -> CommandResult:
        calls.append(argv)
        return CommandResult(command=kw["command"], exit_status=0, stdout=stdout, stderr="", duration=0.0)

    monkeypatch.setattr(vmod, "_run_argv", fake)
    return calls


def test_ssh_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = SshVantage("ssh://ops@host.example:2222", identity_file="/k/id", known_hosts="/k/kh")
    options = ssh.ssh_options()
    for pair in (["-o", "BatchMode=yes"], ["-p", "2222"], ["-i", "/k/id"], ["-o", "UserKnownHostsFile=/k/kh"],
                 ["-o", "StrictHostKeyChecking=yes"], ["-o", "ControlMaster=auto"]):
        assert any(options[i:i + 2] == pair for i in range(len(options))), pair
    control = next(o for o in options if o.startswith("ControlPath="))
    assert len(control) < 100 and control.endswith("/cm-%C")
    argv = ssh.popen_argv(["python3", "-u", "/tmp/x/http_probe.py", "--connect", "10.0.0.1"])
    assert argv[0] == "ssh" and argv[-2] == "ops@host.example"
    assert argv[-1] == "python3 -u /tmp/x/http_probe.py --connect 10.0.0.1"
    calls = _capture(monkeypatch)
    ssh.run("echo 'a b' | wc -c", timeout=7)
    assert calls[-1][-1] == "timeout -k 5 7 bash -c 'echo '\"'\"'a b'\"'\"' | wc -c'"
    assert ssh.describe() == "ssh://ops@host.example:2222"
    ssh.close()
    assert calls[-1][:2] == ["ssh", "-o"] and "-O" in calls[-1] and "exit" in calls[-1]


def test_ssh_without_known_hosts_uses_the_defaults() -> None:
    ssh = SshVantage("ssh://host.example")
    try:
        options = " ".join(ssh.ssh_options())
        assert "StrictHostKeyChecking" not in options and "-p " not in options and "-i " not in options
        assert ssh.destination == "host.example"
    finally:
        ssh.close()
    with pytest.raises(LabError):
        SshVantage("https://host.example")


def test_ssh_copies_agents_and_bundle_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    extra = tmp_path / "ca.pem"
    extra.write_text("PEM")
    calls = _capture(monkeypatch, stdout="/tmp/stdbc-vantage-abc123\n")
    ssh = SshVantage("ssh://ops@h", extra_ca=str(extra))
    assert ssh.agent_path("http_probe.py") == "/tmp/stdbc-vantage-abc123/agents/http_probe.py"
    assert ssh.agent_path("http_probe.py") == "/tmp/stdbc-vantage-abc123/agents/http_probe.py"
    assert ssh.ca_path() == "/tmp/stdbc-vantage-abc123/ca-bundle.pem"
    assert ssh.ca_path() == "/tmp/stdbc-vantage-abc123/ca-bundle.pem"
    remote = [c[-1] for c in calls]
    assert sum("mktemp" in r for r in remote) == 1
    assert sum("http_probe.py" in r for r in remote) == 1
    assert sum("ca-bundle.pem" in r for r in remote) == 1
    ssh.close()


def test_lab_client_argv_and_mounted_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = LabClientVantage("stdbc-r-client", extra_ca="/w/ca/vantage-ca.pem", ca_dir_host="/w/ca")
    assert lab.popen_argv(["python3", "-u", "/lab/agents/http_probe.py"]) == [
        "docker", "exec", "-i", "-u", "root", "stdbc-r-client", "python3", "-u", "/lab/agents/http_probe.py"]
    assert lab.agent_path("http_probe.py") == "/lab/agents/http_probe.py"
    commands: list[str] = []

    def fake_run(command: str, **_kw: Any) -> CommandResult:
        commands.append(command)
        return CommandResult(command=command, exit_status=0, stdout="", stderr="", duration=0.0)

    monkeypatch.setattr(lab, "run", fake_run)
    assert lab.ca_path() == "/tmp/stdbc-vantage/ca-bundle.pem"
    assert len(commands) == 1 and "/lab/ca/vantage-ca.pem" in commands[0]  # the mount, no copy
    assert "/etc/ssl/certs/ca-certificates.crt" in commands[0]


# ---------------------------------------------------------------- end to end on loopback


def _recv_exact(conn: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, len(payload)]) + payload


@pytest.fixture()
def tls_site(tmp_path: Path) -> Iterator[tuple[int, Path, list[dict[str, Any]]]]:
    """A TLS server on loopback for DOMAIN (certificate from a throwaway CA): plain requests get 200 naming
    their Host; websocket upgrades get 101, IdentityToken, then InitialSubscription after the Subscribe."""
    from harness.lab.ca import LabCA

    ca = LabCA(tmp_path / "ca", "vantage-test")
    issued = ca.issue("site", [DOMAIN])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert_path, issued.key_path)
    seen: list[dict[str, Any]] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def answer(raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += _recv_exact(conn, 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                entry: dict[str, Any] = {"line": lines[0], "host": headers.get("host")}
                seen.append(entry)
                if headers.get("upgrade", "").lower() != "websocket":
                    body = f"ok host={headers.get('host')}".encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                                 + body)
                    return
                accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-"
                                                        "C5AB0DC85B11").encode()).digest()).decode()
                conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Accept: {accept}\r\n"
                              f"Sec-WebSocket-Protocol: {headers.get('sec-websocket-protocol')}\r\n\r\n").encode())
                conn.sendall(_frame('{"IdentityToken": {"identity": "x"}}'))
                _, b2 = _recv_exact(conn, 2)
                n = b2 & 0x7F
                if n == 126:
                    n = int.from_bytes(_recv_exact(conn, 2), "big")
                mask = _recv_exact(conn, 4)
                entry["subscribe"] = json.loads(bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exact(conn, n))))
                conn.sendall(_frame('{"InitialSubscription": {"database_update": {"tables": []}}}'))
                stop.wait(2)
        except (OSError, EOFError, ssl.SSLError) as exc:
            seen.append({"error": repr(exc)})

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=answer, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], ca.cert_path, seen
    stop.set()
    thread.join(timeout=5)
    srv.close()


def test_probe_session_reaches_the_site_only_through_flags(tls_site) -> None:  # type: ignore[no-untyped-def]
    port, ca_file, seen = tls_site
    site = Site(DOMAIN, f"https://{DOMAIN}", "127.0.0.1", str(ca_file))
    with LocalVantage(extra_ca=str(ca_file)) as local:
        request = {"scheme": "https", "host": DOMAIN, "port": port, "server_name": DOMAIN, "method": "GET",
                   "path": "/v1/identity", "timeout": 5, "cafile": None}
        with ProbeSession(local, max_requests=2, agent_args=agent_flags(site, local)) as probe:
            result = probe.send(request)
            assert result["status"] == 200 and result["body"] == f"ok host={DOMAIN}", result
            probe.send(request)
            with pytest.raises(LabError, match="bound of 2 requests"):
                probe.send(request)
        with ProbeSession(local, max_requests=1, agent_args=["--connect", "127.0.0.1"]) as untrusted:
            result = untrusted.send(request)  # the system store alone does not trust the throwaway CA
            assert result["status"] == 0 and "CERTIFICATE_VERIFY_FAILED" in result["error"]
    assert seen[0] == {"line": "GET /v1/identity HTTP/1.1", "host": DOMAIN}


def test_ws_subscribe_with_connect_and_cafile(tls_site) -> None:  # type: ignore[no-untyped-def]
    port, ca_file, seen = tls_site
    site = Site(DOMAIN, f"https://{DOMAIN}", "127.0.0.1", str(ca_file))
    with LocalVantage(extra_ca=str(ca_file)) as local:
        command = agent_command(local, "ws_subscribe.py", [
            f"wss://{DOMAIN}:{port}/v1/database/named/subscribe", "", "--until", "InitialSubscription",
            "--timeout", "10", *agent_flags(site, local)])
        res = local.run(command, timeout=30)
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert res.exit_status == 0, (res.stdout, res.stderr)
    assert events[0]["status"] == 101 and events[0]["protocol"] == "v1.json.spacetimedb"
    assert [e.get("kind") for e in events if e["event"] == "message"] == ["IdentityToken", "InitialSubscription"]
    upgrade = next(s for s in seen if "subscribe" in s)
    assert upgrade["host"] == DOMAIN
    assert upgrade["subscribe"] == {"Subscribe": {"query_strings": [], "request_id": 1}}


def test_curl_trusts_the_bundle_and_keeps_the_name(tls_site) -> None:  # type: ignore[no-untyped-def]
    port, ca_file, _ = tls_site
    site = Site(DOMAIN, f"https://{DOMAIN}", "127.0.0.1", str(ca_file))
    with LocalVantage(extra_ca=str(ca_file)) as local:
        # the helper pins 443 and 80; the loopback server listens elsewhere, so its port is pinned here too
        res = local.run(f"curl -sS --max-time 10 {curl_args(site, local)} --resolve {DOMAIN}:{port}:127.0.0.1 "
                        f"https://{DOMAIN}:{port}/", timeout=30)
    assert res.ok and res.stdout == f"ok host={DOMAIN}:{port}", (res.stdout, res.stderr)


def test_agents_run_unchanged_without_flags() -> None:
    """http_probe started with no arguments (as `python -c SOURCE` in older callers) still serves stdin."""
    source = (Path(vmod.AGENTS) / "http_probe.py").read_text()
    proc = subprocess.run([sys.executable, "-u", "-c", source], input="", capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and proc.stdout == ""


def test_ssh_vantage_records_every_command_and_writes_only_in_its_scratch_folder(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 27, one gate: the ssh vantage point's commands are in its transcript; it writes nowhere else than
    the scratch folder mktemp made, and removes only that folder."""
    import json

    calls = _capture(monkeypatch, stdout="/tmp/stdbc-vantage-abc123\n")
    transcript = tmp_path / "vantage-transcript.jsonl"
    ssh = SshVantage("ssh://ops@h", transcript=str(transcript))
    ssh.agent_path("http_probe.py")
    ssh.popen_argv(["python3", "-u", "/tmp/stdbc-vantage-abc123/agents/http_probe.py"])
    with pytest.raises(LabError, match="writes only under its scratch folder"):
        ssh._put("/etc/cron.d/x", b"x")
    ssh.close()
    lines = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert [line["command"].split()[0] for line in lines] == ["mktemp", "mkdir", "python3", "rm"]
    assert lines[-1]["command"] == "rm -rf /tmp/stdbc-vantage-abc123" and all("env" in line for line in lines)
    assert lines[2]["purpose"] == "long-lived agent"
    assert sum("/etc/cron.d" in c[-1] for c in calls) == 0
    bad = _capture(monkeypatch, stdout="/home/ops\n")  # a scratch folder that is not mktemp's: refused, not used
    other = SshVantage("ssh://ops@h")
    with pytest.raises(LabError, match="scratch folder"):
        other.agent_path("http_probe.py")
    other.close()
    assert not any(c[-1].startswith("rm ") or "rm -rf" in c[-1] for c in bad)
