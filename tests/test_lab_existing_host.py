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
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.backends.ssh_readonly import refusal
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
    outside = [t["command"] for t in sent if refusal(t["command"]) is not None]
    assert not outside, f"commands outside the read-only allow-list were sent: {outside[:3]}"


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
