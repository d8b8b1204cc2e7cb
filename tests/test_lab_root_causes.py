"""Lab test (docker): root causes on the shared runbook, and a fix verified with `diff`.

The shared runbook installs SpacetimeDB into /stdb (Step 1) and later mounts the data volume over /stdb (backups,
Step 1): the mount hides the server and its data. The report must name that step as the root cause of the service,
sql, operator and backup failures that follow, list every other failure as unexplained, and put the counts on its
first lines. tests/runbooks/self-hosting-mount-fixed.md changes only that step (the contents are copied onto the
volume before it is mounted): `stdb-conformance diff` of the two reports shows those failures gone and no new one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reports.markdown import root_cause_headline
from tests.conftest import REPO_ROOT, shared_runbook
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab

FIXED = REPO_ROOT / "tests" / "runbooks" / "self-hosting-mount-fixed.md"


def _run(runbook: Path, out: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "--backend", "docker", "--runbook", str(runbook),
                           "--report-dir", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert (out / "conformance.json").exists(), proc.stderr[-3000:]
    report = json.loads((out / "conformance.json").read_text())
    assert not report["lab_error"], report["lab_error"]
    assert not leftovers(report["run_id"])
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Path, Path]:
    root = tmp_path_factory.mktemp("root-causes")
    shared, fixed = root / "shared", root / "fixed"
    # the two runs side by side (runs at once do not collide: test_lab_concurrency); half the wall time in CI
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.submit(_run, shared_runbook(), shared), pool.submit(_run, FIXED, fixed)
        return first.result(), second.result(), shared, fixed


def test_the_step_that_hides_the_install_is_the_root_cause(runs: tuple[Any, ...]) -> None:
    report, _, out, _ = runs
    failed = {c["id"] for c in report["checks"] if c["outcome"] in ("failed", "error")}
    cause = report["root_causes"][0]
    assert cause["kind"] == "broke" and "mount" in cause["command"], cause
    assert "hides what was there" in cause["summary"] and "/stdb/spacetime" in cause["summary"]
    assert "mount the volume at /stdb before those steps run" in cause["fix"]
    explained = set(cause["explains"]) | set(cause["explains_through"])
    for check in ("service.sql-from-target", "service.restart-always", "operator.subscribe-sees-row",
                  "backup_restore.database-seeded"):
        assert check in explained, (check, sorted(explained))
    everything = {c for rc in report["root_causes"] for c in rc["explains"] + rc["explains_through"]}
    everything |= {u["check"] for u in report["unexplained"]}
    assert everything == failed  # every failed check is explained or listed as unexplained
    # the state trace is in the data, with its cost
    trace = report["state_trace"]
    assert trace["fingerprints"] > 20 and trace["cost"]["seconds"] > 0 and not trace["errors"]
    # the first lines of conformance.md and the first screen of report.html
    head = (out / "conformance.md").read_text().split("## Findings about the runbook")[0]
    assert f"## Root causes: {root_cause_headline(report)}" in head
    html = (out / "report.html").read_text()
    assert html.index("Root causes:") < html.index("Findings about the runbook")


def test_step6s_defect_behind_its_first_error_is_reported(runs: tuple[Any, ...]) -> None:
    report = runs[0]
    upgrade = next(c for c in report["checks"] if c["id"] == "upgrade.version-upgrade")
    tried = [e for e in upgrade["evidence"] if e["label"].startswith("repair tried in the lab")]
    assert tried and "-i" not in tried[0]["command"].split(), tried
    ids = {f["id"] for f in report["findings"]}
    assert ids & {"runbook.defect-behind-defect", "runbook.repair-tried-in-the-lab"}, ids


def test_diff_shows_the_fix_and_no_new_failure(runs: tuple[Any, ...]) -> None:
    report, fixed_report, shared, fixed = runs
    proc = subprocess.run([sys.executable, "-m", "harness", "diff", str(shared), str(fixed), "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0 and data["ok"] and not data["new_failures"], data["new_failures"]
    for check in ("service.sql-from-target", "service.restart-always", "backup_restore.database-seeded"):
        assert check in data["fixed"], (check, data["fixed"])
    assert any("mount" in c for c in data["root_causes_gone"]), data["root_causes_gone"]
    assert not any("mount" in c["command"] for c in fixed_report["root_causes"])
