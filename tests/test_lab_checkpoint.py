"""Lab test (docker): a run started from a checkpoint gives the outcomes of a fresh run, check by check; a
checkpoint whose host does not come back as it was kept is not used.

The fresh runs are the session's selftest (tests/conftest.py `docker_selftest`): its self-hosting baseline ran
every step on a fresh host and kept checkpoints; its mutants' runs started from them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness import checkpoint
from harness.checkpoint_run import KEPT_FILE
from tests.conftest import selftest_unit
from tests.lab_helpers import REPO, leftovers

pytestmark = pytest.mark.lab


def _again(unit_dir: Path, out: Path, suites: str | None = None) -> dict[str, Any]:
    """The unit's own run (same runbook, profile, suites, env), from a checkpoint, into `out`."""
    meta = json.loads((unit_dir / "unit.json").read_text())
    argv = list(meta["argv"])
    if "--save-checkpoint" in argv:
        at = argv.index("--save-checkpoint")
        del argv[at:at + 2]
    argv[argv.index("--report-dir") + 1] = str(out)
    if suites:
        argv[argv.index("--suites") + 1] = suites
    proc = subprocess.run([*argv, "--from-checkpoint"], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, **meta["env"]})
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    report: dict[str, Any] = json.loads((out / "conformance.json").read_text())
    assert not report.get("lab_error"), report["lab_error"]
    assert not leftovers(report["run_id"]), leftovers(report["run_id"])
    return report


def test_a_run_from_a_checkpoint_gives_the_fresh_runs_outcomes(docker_selftest: dict[str, Any],
                                                               tmp_path: Path) -> None:
    fresh, unit_dir = selftest_unit(docker_selftest, "self-hosting.baseline")
    kept = fresh["conformance"]["environment"]["checkpoint"]
    assert kept["used"] is None and kept["saved"], kept  # the baseline ran every step and kept its host
    # said as soon as its apply phase ended (its mutants' runs start then)
    assert json.loads((Path(fresh["report"]) / KEPT_FILE).read_text()) == kept
    report = _again(Path(fresh["report"]).parent, tmp_path / "from-checkpoint")
    used = report["environment"]["checkpoint"]
    assert used["used"] and used["replayed_steps"] > 0 and not used["rejected"], used
    replayed = [a for a in report["adaptations"] if a["id"] == "checkpoint.replayed"]
    assert replayed and f"first {used['replayed_steps']} step(s)" in replayed[0]["summary"]
    transcript = json.loads((tmp_path / "from-checkpoint" / "transcript.json").read_text())
    notes = [r["note"] for r in transcript[:used["replayed_steps"]]]
    assert all(n.startswith("replayed from checkpoint") for n in notes), notes
    assert not any(r["note"].startswith("replayed") for r in transcript[used["replayed_steps"]:])
    before = {c["id"]: c["outcome"] for c in fresh["conformance"]["checks"]}
    after = {c["id"]: c["outcome"] for c in report["checks"]}
    assert before, "the fresh run judged nothing"
    differing = {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
                 if before.get(k) != after.get(k)}
    assert not differing, differing
    # the selftest's mutant runs of this config started from the baseline's checkpoints
    groups = [u for u in docker_selftest["data"]["units"] if u["id"].startswith("self-hosting.g") and u.get("report")]
    assert groups, "the selftest ran no mutant of the self-hosting config (see its selftest.md)"
    started = [u["id"] for u in groups
               if json.loads((Path(u["report"]) / "conformance.json").read_text())["environment"]
               .get("checkpoint", {}).get("used")]
    assert started, "no self-hosting mutant run started from a checkpoint"


def test_a_checkpoint_whose_host_comes_back_different_is_not_used(docker_selftest: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    fresh, _dir = selftest_unit(docker_selftest, "self-hosting.baseline")
    longest = max(fresh["conformance"]["environment"]["checkpoint"]["saved"], key=lambda s: s["steps"])
    stored = next(p for p in checkpoint.store_dir().iterdir() if p.name.startswith(longest["key"]))
    meta_path = stored / checkpoint.META
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["observation"] = [*meta["observation"], "unit a-service-the-host-no-longer-runs.service"]
    meta_path.write_text(json.dumps(meta))
    try:
        report = _again(Path(fresh["report"]).parent, tmp_path / "rejected", suites="firewall")
    finally:
        meta_path.write_text(original)
    used = report["environment"]["checkpoint"]
    assert used["used"] is None and used["replayed_steps"] == 0, used
    assert "a-service-the-host-no-longer-runs" in (used["rejected"] or ""), used
    assert not any(a["id"] == "checkpoint.replayed" for a in report["adaptations"])
    transcript = json.loads((tmp_path / "rejected" / "transcript.json").read_text())
    assert transcript and not any(r["note"].startswith("replayed") for r in transcript)
    assert report["verdict"] == "pass", [c["id"] for c in report["checks"] if c["outcome"] != "passed"]
