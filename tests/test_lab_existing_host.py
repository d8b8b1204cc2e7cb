"""Lab test (docker): a host the kit did not build, judged over ssh, read-only by default.

`lab up` builds a docker lab host with the reference runbook and keeps it; `run <run_args>` then judges it as
an existing host over ssh from this machine. Against a docker run of the same runbook and profile:
- every check that does not change the host has the same outcome over ssh;
- every check marked `mutates` is not-applicable ("changes the host: needs --allow-mutation");
- the host's state digest is equal before and after, and the transcript holds no command outside the
  read-only allow-list (refused commands were never sent);
- with --allow-mutation a mutating check (service.restart-always) is decided;
- three host mutants of the catalogue (listen address, an open proxy route, fstab without nofail) turn their
  checks red over ssh as they do on docker.
One lab host for all of it; the comparison run starts beside `lab up`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.backends.ssh_catalogue import match
from harness.selftest.catalogue import load_catalogue
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "tests" / "runbooks" / "self-hosting-volume-first.md"  # volume mounted before the install
PROFILE = "default"
COMPARED = "service,routes,tls,firewall,mounts"
MUTANTS = {"firewall-backend-exposed": ["service.listens-on-loopback-only", "firewall.web-ports-open"],
           "routes-host-site-opened": ["routes.closed-families-403"],
           "mounts-nofail-removed-on-host": ["mounts.fstab-nofail"]}
ENV = {"STDB_ROUTES_EXAMPLES": "40", "STDB_HYPOTHESIS_SEED": "20251203"}


def _kit(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ENV})


def _report(path: Path) -> dict[str, Any]:
    return json.loads((path / "conformance.json").read_text())


def _outcomes(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def _mutating_checks() -> set[str]:
    from harness.selftest.catalogue import known_checks

    found = set()
    for path in (REPO / "harness" / "suites").glob("test_*.py"):
        text = path.read_text()
        for check_id in known_checks():
            marker = f'@pytest.mark.check("{check_id}", mutates='
            if marker in text:
                found.add(check_id)
    return found


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("existing-host")
    docker_run: dict[str, Any] = {}

    def comparison() -> None:
        docker_run["proc"] = _kit("run", "--backend", "docker", "--runbook", str(RUNBOOK), "--profile", PROFILE,
                                  "--suites", COMPARED, "--report-dir", str(out / "docker"))

    thread = threading.Thread(target=comparison)
    thread.start()
    up = _kit("lab", "up", "--backend", "docker", "--runbook", str(RUNBOOK), "--profile", PROFILE, "--json",
              "--report-dir", str(out / "lab-up"))
    thread.join()
    assert up.returncode == 0, up.stderr[-3000:]
    info = json.loads(up.stdout)
    try:
        yield {"info": info, "out": out, "docker": docker_run["proc"]}
    finally:
        down = _kit("lab", "down", info["run_id"], timeout=600)
        assert down.returncode == 0, down.stderr[-2000:]
        assert not leftovers(info["run_id"]), leftovers(info["run_id"])


def test_read_only_run_over_ssh_matches_docker(kept: dict[str, Any]) -> None:
    info, out = kept["info"], kept["out"]
    assert kept["docker"].returncode in (0, 1, 4), kept["docker"].stderr[-2000:]
    docker = _outcomes(_report(out / "docker"))
    ssh = _kit("run", *info["run_args"], "--report-dir", str(out / "ssh"))
    assert ssh.returncode in (0, 1, 4), ssh.stderr[-3000:]
    report = _report(out / "ssh")
    outcomes = _outcomes(report)
    mutating = _mutating_checks()
    assert mutating, "no check declares what it changes"
    differ = {c: (docker[c], outcomes.get(c)) for c in docker if c not in mutating and outcomes.get(c) != docker[c]}
    assert not differ, f"read-only checks with another outcome over ssh than on docker: {differ}"
    checks = {c["id"]: c for c in report["checks"]}
    for check_id in mutating & set(checks):
        assert checks[check_id]["outcome"] == "not-applicable", (check_id, checks[check_id]["outcome"])
        assert "needs --allow-mutation" in checks[check_id]["message"], checks[check_id]["message"]
    env = report["environment"]
    digest = env["state_digest"]
    assert digest["equal"] and digest["before"] == digest["after"], digest.get("changes")
    facts = env["ssh"]
    assert facts["ssh_connections"] >= 1 and facts["commands_sent"] > 20, facts
    transcript = [json.loads(line) for line in (out / "ssh" / "host-transcript.jsonl").read_text().splitlines()]
    sent = [t for t in transcript if not t.get("refused")]
    assert len(sent) == facts["commands_sent"]
    outside = [t["command"] for t in sent if "argv" not in t or isinstance(match(t["argv"]), str)]
    assert not outside, f"commands outside the read-only catalogue were sent: {outside[:3]}"
    troubleshooting = [e for c in report["checks"] for e in c.get("evidence", [])
                       if "troubleshooting" in str(e.get("label", ""))]
    assert all("script -qec" not in str(e.get("command", "")) for e in troubleshooting)


AUDIT_USER = "stdbc-audit"


def test_an_audit_user_with_the_printed_drop_in_decides_the_same_read_only_checks(kept: dict[str, Any]) -> None:
    """Least privilege on the host too: a user whose sudo allows exactly the catalogue (`staging sudoers`) gets
    the same outcomes as the full-sudo login on the same host, and sudo itself refuses what the kit would."""
    info, out = kept["info"], kept["out"]
    container = f"stdbc-{info['run_id']}-target"
    printed = _kit("staging", "sudoers", "--user", AUDIT_USER)
    assert printed.returncode == 0, printed.stderr
    setup = (f"useradd -m -s /bin/bash {AUDIT_USER} && install -d -m 700 -o {AUDIT_USER} /home/{AUDIT_USER}/.ssh && "
             f"install -m 600 -o {AUDIT_USER} /home/ubuntu/.ssh/authorized_keys /home/{AUDIT_USER}/.ssh/ && "
             f"cat > /tmp/stdbc-audit && visudo -cf /tmp/stdbc-audit && "
             f"install -m 0440 /tmp/stdbc-audit /etc/sudoers.d/stdbc-audit && rm /tmp/stdbc-audit")
    done = subprocess.run(["docker", "exec", "-i", container, "bash", "-c", setup], input=printed.stdout,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        refused = subprocess.run(["docker", "exec", "-u", AUDIT_USER, container, "sudo", "-n", "-u", "root", "--",
                                  "journalctl", "--rotate"], capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "password is required" in refused.stderr, refused.stderr
        args = [a.replace("ssh://ubuntu@", f"ssh://{AUDIT_USER}@") for a in info["run_args"]]
        run = _kit("run", *args, "--report-dir", str(out / "ssh-audit"))
        assert run.returncode in (0, 1, 4), run.stderr[-3000:]
        full, audit = _outcomes(_report(out / "ssh")), _outcomes(_report(out / "ssh-audit"))
        differ = {c: (full[c], audit.get(c)) for c in full if audit.get(c) != full[c]}
        assert not differ, f"the audit user decided these read-only checks otherwise: {differ}"
        assert _report(out / "ssh-audit")["environment"]["state_digest"]["equal"]
    finally:
        subprocess.run(["docker", "exec", container, "bash", "-c",
                        f"rm -f /etc/sudoers.d/stdbc-audit; userdel -r {AUDIT_USER}"], capture_output=True, timeout=60)


def test_allow_mutation_decides_the_mutating_checks(kept: dict[str, Any]) -> None:
    info, out = kept["info"], kept["out"]
    run = _kit("run", *info["run_args"], "--allow-mutation", "--suites", "service", "--report-dir",
               str(out / "ssh-mutation"))
    assert run.returncode in (0, 1, 4), run.stderr[-3000:]
    checks = {c["id"]: c for c in _report(out / "ssh-mutation")["checks"]}
    docker = _outcomes(_report(out / "docker"))
    assert checks["service.restart-always"]["outcome"] == docker["service.restart-always"] == "passed", \
        checks["service.restart-always"]["message"]


def test_host_mutants_turn_their_checks_red_over_ssh(kept: dict[str, Any]) -> None:
    info, out = kept["info"], kept["out"]
    catalogue = load_catalogue()
    container = f"stdbc-{info['run_id']}-target"
    for mutant_id in MUTANTS:
        for command in catalogue.mutant(mutant_id).commands:
            done = subprocess.run(["docker", "exec", container, "bash", "-c", command], capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (mutant_id, done.stderr)
    before = _outcomes(_report(out / "ssh"))
    run = _kit("run", *info["run_args"], "--suites", "service,routes,firewall,mounts", "--report-dir",
               str(out / "ssh-mutants"))
    assert run.returncode == 1, run.stderr[-3000:]
    after = _outcomes(_report(out / "ssh-mutants"))
    for mutant_id, checks in MUTANTS.items():
        for check_id in checks:
            assert before[check_id] == "passed", (check_id, before[check_id])
            assert after[check_id] in ("failed", "error"), (mutant_id, check_id, after[check_id])


SECRET_MARK = "stdbcSECRETmark27"
# what an independent look (docker exec, not the kit) compares before and after: every file's size, mtime and
# ctime under the places the corpus aims at (the server's own logs, and the journal's growth, excepted), the
# journal's file names (a rotation or a vacuum changes them), the mount table and the firewall's rules
INDEPENDENT_LOOK = ("find /etc /stdb /tmp /root /home /var/spool /usr/local -xdev -path /stdb/data/logs -prune -o "
                    "-printf '%p %s %T@ %C@\\n' 2>/dev/null | sort; ls /var/log/journal/*/ 2>/dev/null | sort; "
                    "findmnt -rn -o TARGET,SOURCE,OPTIONS | sort; iptables -S 2>/dev/null")


def _hostile_runbook(out: Path, commands: list[str]) -> Path:
    """The lab's runbook with a troubleshooting subsection (a heading the service suite picks) of commands that
    look read-only but write, remount, rotate or vacuum the journal, or print secrets."""
    text = RUNBOOK.read_text()
    anchor = "### SpacetimeDB Service Fails to Start"
    assert anchor in text
    blocks = "".join(f"\nIf that did not help:\n\n    {command}\n" for command in commands)
    hostile = text.replace(anchor, f"### SpacetimeDB service deeper checks\n{blocks}\n{anchor}", 1)
    path = out / "hostile-runbook.md"
    path.write_text(hostile)
    return path


def test_a_hostile_troubleshooting_section_changes_nothing_and_reads_no_secret(kept: dict[str, Any]) -> None:
    """Issue 27's acceptance: on the kept host (its service check red from the mutants above), a read-only run
    whose runbook holds the corpus in its troubleshooting changes nothing an independent look sees, no planted
    secret reaches the report dir, and the runbook's own read-only troubleshooting runs and is in the evidence."""
    from tests.test_ssh_catalogue import LOOKS_READ_ONLY_BUT_IS_NOT

    info, out = kept["info"], kept["out"]
    container = f"stdbc-{info['run_id']}-target"

    def look() -> str:
        done = subprocess.run(["docker", "exec", container, "bash", "-c", INDEPENDENT_LOOK], capture_output=True,
                              text=True, timeout=300)
        return done.stdout

    plant = (f"mkdir -p /root/.aws /home/ubuntu/.spacetime && printf '[default]\\naws_secret_access_key = "
             f"{SECRET_MARK}aws\\n' > /root/.aws/credentials && printf 'spacetimedb_token = \"{SECRET_MARK}cli\"\\n' "
             f"> /home/ubuntu/.spacetime/cli.toml && usermod -p '$6$salt${SECRET_MARK}hash' spacetimedb")
    planted = subprocess.run(["docker", "exec", container, "bash", "-c", plant], capture_output=True, text=True,
                             timeout=60)
    assert planted.returncode == 0, planted.stderr
    # an editor step, a here-document and a leading environment assignment are not steps the runbook parser
    # takes as shell commands (the plan says "does not look like shell commands"): left out here, in the unit test
    hostile = [c for c in LOOKS_READ_ONLY_BUT_IS_NOT
               if not c.startswith("vi ") and "<<" not in c and not re.match(r"[A-Z_]+=", c)]
    runbook = _hostile_runbook(out, hostile)
    before = look()
    run = _kit("run", *info["run_args"], "--runbook", str(runbook), "--suites", "service",
               "--report-dir", str(out / "ssh-hostile"))
    after = look()
    assert run.returncode in (0, 1), run.stderr[-3000:]
    assert before == after, "\n".join(sorted(set(after.splitlines()) ^ set(before.splitlines())))[:3000]
    report_dir = out / "ssh-hostile"
    for path in report_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            assert SECRET_MARK.encode() not in data, f"a planted secret reached {path}"
    report = _report(report_dir)
    assert report["environment"]["state_digest"]["equal"]
    evidence = [e for c in report["checks"] for e in c.get("evidence", [])
                if "troubleshooting" in str(e.get("label", ""))]
    ran = {e["command"]: e for e in evidence if "runbook's own" in e["label"]}
    journal = "sudo journalctl -u spacetimedb --no-pager | tail -20"
    assert journal in ran and ran[journal]["output"].strip() and ran[journal]["status"] == 0, sorted(ran)
    assert "sudo ls -lah /stdb/spacetime" in ran, sorted(ran)
    deeper = [e for e in evidence if "deeper checks" in e["label"]]
    # every hostile command is attached, none ran (the plan substitutes the lab's domain into some of them)
    assert all("not run: outside the read-only catalogue" in e["label"] for e in deeper)
    assert len({e["command"] for e in deeper}) == len(hostile), sorted(set(hostile) - {e["command"] for e in deeper})
    from harness.backends.readonly_script import refusal

    assert all(refusal(command) is None for command in ran), [c for c in ran if refusal(c)]
    transcript = [json.loads(line) for line in (report_dir / "host-transcript.jsonl").read_text().splitlines()]
    assert all("argv" in t and not isinstance(match(t["argv"]), str) for t in transcript if not t.get("refused"))
