"""Lab tests (vm backend, TCG here: minutes each): the `mounts` suite on a real kernel with an NVMe data
volume, real reboots and a boot without the volume.

The baseline is tests/runbooks/volume-before-install.md (the volume is mounted before the install, so
the install lives on it): every `mounts` check is green there but the proxy one, which has no proxy to
judge. Each of our mutants of that runbook turns a
named `mounts` check red: fstab by device path instead of UUID, no nofail, wrong mount point, wrong
owner (the first and last share a run). Every run must leave no lab resource behind (containers,
network, taps, qemu, temp dirs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab_helpers import VM_LAB, leftovers

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "tests" / "runbooks" / "volume-before-install.md"

pytestmark = VM_LAB


def _run(runbook: Path, report_dir: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backend", "vm", "--runbook", str(runbook),
                           "--suites", "mounts", "--report-dir", str(report_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    report_path = report_dir / "conformance.json"
    assert report_path.exists(), f"no report written (exit {proc.returncode}): {proc.stderr[-3000:]}"
    (report_dir / "run.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, json.loads(report_path.read_text())


def _outcomes(report: dict) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in report["checks"]}


def test_volume_before_install_is_green_across_reboots(tmp_path: Path) -> None:
    code, report = _run(RUNBOOK, tmp_path / "out")
    outcomes = _outcomes(report)
    assert outcomes, "no mounts checks ran"
    # this runbook has no proxy: the nginx/TLS-after-reboot check cannot be decided, everything else passes
    proxy = next(c for c in report["checks"] if c["id"] == "mounts.proxy-and-tls-after-reboot")
    assert proxy["outcome"] == "not-applicable" and "nginx was not active" in proxy["message"], proxy
    rest = {k: v for k, v in outcomes.items() if k != proxy["id"]}
    assert len(rest) >= 10 and all(v == "passed" for v in rest.values()), outcomes
    assert code == 4 and report["verdict"] == "incomplete", (code, report["verdict"], report.get("lab_error"))
    scenario = report["environment"]["scenario_mounts"]
    boots = {e["name"]: e["boot_id"] for e in scenario["events"]}
    assert set(boots) == {"before", "rebooted", "detached", "reattached"}, boots
    assert len(set(boots.values())) == 4, f"every boot must have its own boot id: {boots}"
    assert report["environment"]["vm"]["accel"] in ("kvm", "tcg")
    assert any(k.startswith("scenario:mounts") for k in report["timings"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert boots["rebooted"] in html and "Boots and scenarios" in html
    assert not leftovers(report["run_id"])


# (name, [(text replaced in the runbook, replacement)], checks that must go red). Each VM run costs minutes
# under TCG, so two independent defects that turn different checks red share one run.
MUTANTS = [
    ("fstab-device-path+wrong-owner",
     [("UUID=YOUR_UUID_HERE  /stdb", "/dev/nvme1n1  /stdb"),
      ("sudo chown -R spacetimedb:spacetimedb /stdb", "sudo chown -R root:root /stdb")],
     ["mounts.fstab-entry-by-uuid", "mounts.owned-by-service-user"]),
    ("no-nofail", [("defaults,nofail", "defaults")],
     ["mounts.fstab-nofail", "mounts.boot-without-volume-reaches-multi-user"]),
    ("wrong-mount-point", [("UUID=YOUR_UUID_HERE  /stdb", "UUID=YOUR_UUID_HERE  /srv/stdb")],
     ["mounts.stdb-is-data-volume", "mounts.persists-across-reboot"]),
]


@pytest.mark.parametrize(("name", "edits", "red_checks"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mounts_mutant_turns_named_check_red(tmp_path: Path, name: str, edits: list[tuple[str, str]],
                                             red_checks: list[str]) -> None:
    text = RUNBOOK.read_text()
    for old, new in edits:
        assert old in text, f"mutant {name}: the runbook no longer contains {old!r}"
        text = text.replace(old, new, 1)
    mutant = tmp_path / f"mutant-{name}.md"
    mutant.write_text(text)
    code, report = _run(mutant, tmp_path / "out")
    outcomes = _outcomes(report)
    for red in red_checks:
        assert outcomes.get(red) == "failed", f"{red} did not go red for mutant {name}: {outcomes}"
        failed = next(c for c in report["checks"] if c["id"] == red)
        assert failed["evidence"], "a failed check must carry evidence"
    assert code == 1 and report["verdict"] == "fail"
    contradicted = [f for f in report["findings"] if f["id"] == "runbook.claim-contradicted"]
    assert contradicted, "a broken mount promise must become a finding about the runbook"
    assert not leftovers(report["run_id"])
