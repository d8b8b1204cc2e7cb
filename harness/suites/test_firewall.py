"""Suite `firewall`: what the runbook's `ufw allow 'Nginx Full'` / `ufw reload` actually change.

One run cannot observe "before" the runbook from the remote vantage, so the suite records the facts that decide
it: `ufw status verbose` (label "ufw status"), the packet-filter rules in the kernel, and which of the target's
TCP ports answer from the remote vantage now (the lab client container, this machine, or an ssh host: the
`remote` fixture; the target's address is the site's pinned address, else the vantage's DNS answer).
`firewall.active` is not required: the runbook never enables ufw, and the kit reports that honestly (the
findings engine turns "rule added on an inactive firewall" into a finding) instead of failing the whole verdict
over a step the runbook presents as optional hardening.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from harness.model import Plan, Step
from harness.pytest_plugin import CheckRecorder
from harness.targets.base import Target
from harness.vantage import Site, Vantage

PORTS = (22, 80, 443, 3000)
# stdlib-only connect test run on the vantage (python3 is in the lab's base image); one bounded try per port.
# The first argument is an address or a name; a name is resolved there, once, and the answer is printed.
_CONNECT = ("import json,socket,sys\n"
            "fam,_,_,_,sa=socket.getaddrinfo(sys.argv[1],None,0,socket.SOCK_STREAM)[0]; ip=sa[0]; out={}\n"
            "for p in map(int,sys.argv[2:]):\n"
            "  s=socket.socket(fam); s.settimeout(2)\n"
            "  try:\n"
            "    s.connect((ip,p)); out[p]='open'\n"
            "  except socket.timeout: out[p]='filtered (timeout)'\n"
            "  except OSError as e: out[p]='closed (%s)' % (e.strerror or e)\n"
            "  finally: s.close()\n"
            "print(json.dumps({'address':ip,'ports':out}))\n")


def _ufw_steps(plan: Plan) -> list[Step]:
    return [s for s in plan.steps if s.command and re.search(r"\bufw\b", s.command)]


def _remote_ports(remote: Vantage, site: Site, check: CheckRecorder) -> dict[str, str]:
    where = site.connect_host
    res = remote.run(f"timeout 20 {shlex.quote(remote.python)} -c {shlex.quote(_CONNECT)} {shlex.quote(where)} "
                     f"{' '.join(map(str, PORTS))}", timeout=30)
    try:
        answer = json.loads(res.stdout.strip().splitlines()[-1])
        address, ports = str(answer["address"]), dict(answer["ports"])
    except (ValueError, IndexError, KeyError, TypeError):
        address, ports = where, {}
    resolved = "" if address == where else f" ({where} resolved on the vantage)"
    check.note("vantage", remote.describe())
    check.note("TCP ports of the target from the remote vantage", json.dumps(ports, indent=1),
               command=f"python3 socket connect to {address}{resolved} ports {PORTS} (2 s each)",
               status=res.exit_status)
    if not ports and res.stderr.strip():
        check.note("port probe stderr", res.stderr.strip()[-500:])
    return ports


@pytest.fixture(scope="module")
def ufw_status(target: Target) -> str:
    return target.run("ufw status verbose 2>&1", timeout=30).stdout


@pytest.mark.check("firewall.rules-recorded", claim="what `ufw allow 'Nginx Full'` and `ufw reload` changed: ufw's "
                                                    "status and rules, the kernel's packet filter, and the ports "
                                                    "that answer from remote")
def test_rules_recorded(remote, site, target, plan: Plan, check: CheckRecorder) -> None:
    steps = _ufw_steps(plan)
    if steps:
        check.ref(steps[0])
    status = check.run(target, "ufw status verbose 2>&1", label="ufw status")
    check.run(target, "ufw show added 2>&1", label="ufw rules added (ufw show added)")
    check.run(target, "ufw app info 'Nginx Full' 2>&1", label="the 'Nginx Full' application profile")
    check.run(target, "grep -E '^(ENABLED|IPV6)=' /etc/ufw/ufw.conf 2>&1", label="ufw.conf")
    rules = check.run(target, "(iptables -S 2>&1; echo '-- nft --'; nft list ruleset 2>&1) | head -c 6000",
                      label="kernel packet-filter rules (iptables -S, nft list ruleset)")
    ports = _remote_ports(remote, site, check)
    active = re.search(r"^Status:\s*active", status.stdout, re.MULTILINE) is not None
    in_kernel = re.search(r"ufw-user-input|ufw-before-input", rules.stdout) is not None
    check.note("summary", json.dumps({
        "runbook_ufw_steps": [s.command for s in steps], "ufw_active": active,
        "ufw_chains_in_kernel": in_kernel, "ports_from_remote": ports}, indent=1))
    assert status.ok, (f"`ufw status` failed (exit {status.exit_status}): "
                       f"{(status.stdout + status.stderr).strip()[-200:] or 'no output'}")
    assert re.search(r"^Status:\s*\S+", status.stdout, re.MULTILINE), \
        f"`ufw status` printed no status line: {status.stdout.strip()[-200:] or 'nothing'}"
    assert ports, "the remote port probe returned nothing"


@pytest.mark.check("firewall.active", required=False,
                   claim="the firewall the runbook configures is active, so `ufw allow 'Nginx Full'` is what "
                         "lets 80/443 in (the runbook never runs `ufw enable`: expected to fail, reported "
                         "honestly)")
def test_firewall_active(target, ufw_status: str, plan: Plan, check: CheckRecorder) -> None:
    steps = _ufw_steps(plan)
    if not steps:
        check.not_applicable("the runbook runs no ufw command")
    check.ref(steps[0])
    check.note("ufw status", ufw_status, command="ufw status verbose")
    active = re.search(r"^Status:\s*active", ufw_status, re.MULTILINE) is not None
    assert active, ("ufw is inactive: `ufw allow 'Nginx Full'` and `ufw reload` added rules to a firewall that "
                    "filters nothing; every listening port stays reachable")


@pytest.mark.check("firewall.web-ports-open", claim="after the runbook's firewall steps, 80 and 443 answer from "
                                                    "the remote client, and the backend's 3000 does not")
def test_web_ports(remote, site, target, plan: Plan, check: CheckRecorder) -> None:
    steps = _ufw_steps(plan)
    if steps:
        check.ref(steps[0])
    ports = _remote_ports(remote, site, check)
    assert ports.get("80") == "open" and ports.get("443") == "open", f"web ports from remote: {ports}"
    assert ports.get("3000") != "open", "the backend's port 3000 answers from remote"
