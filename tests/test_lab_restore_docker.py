"""Lab test (docker): the restore drill on the docker backend (the baseline run of the selftest's
`restore-drill` config, judged here). The snapshot there is filesystem-frozen
(fsfreeze + copy of the loop device's backing file), not crash-consistent: the snapshot check is
not-applicable with that label (on every backend the snapshot is the kit's, an adaptation) and every data
check judges the frozen copy, restored onto a recovery
container prepared by the runbook (its /dev/nvme1n1 re-pointed at the restored volume while stopped).
The checks of the writes in flight (gap-free, acknowledged, no phantom) are not-applicable when green (a red one
stays red): the verdict is `incomplete` (exit 4), never `pass`: docker cannot prove the crash-consistency
claim."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import selftest_unit
from tests.lab_helpers import leftovers

pytestmark = pytest.mark.lab


def test_docker_restore_drill_is_judged_and_labelled(docker_selftest: dict[str, Any]) -> None:
    unit, out = selftest_unit(docker_selftest, "restore-drill.baseline")
    report = unit["conformance"]
    outcomes = {c["id"]: c for c in report["checks"]}
    snapshot = outcomes.pop("backup_restore.snapshot-while-writing", None)
    assert snapshot is not None, (report.get("lab_error"), sorted(outcomes))
    assert snapshot["outcome"] == "not-applicable" and "filesystem-consistent" in snapshot["message"], \
        (snapshot["outcome"], snapshot["message"])
    # this runbook's verification is a command that runs as written: the runbook's own query is what is judged
    verify = outcomes["backup_restore.verify-query"]
    assert any("run as written" in e["label"] for e in verify["evidence"]), [e["label"] for e in verify["evidence"]]
    # what the writes in flight became is shown only by a crash-consistent snapshot: not-applicable here
    in_flight = {i: outcomes.pop(i) for i in ("backup_restore.seq-gap-free", "backup_restore.acked-writes-present",
                                              "backup_restore.no-phantom-writes")}
    assert all(c["outcome"] == "not-applicable" and "cleaner than a crash" in c["message"]
               for c in in_flight.values()), {i: (c["outcome"], c["message"][:200]) for i, c in in_flight.items()}
    assert len(outcomes) == 10 and all(c["outcome"] == "passed" for c in outcomes.values()), \
        {i: (c["outcome"], c["message"][:200]) for i, c in outcomes.items()}
    assert report["verdict"] == "incomplete" and unit["exit"] == 4, (report["verdict"], unit["exit"])
    drill = report["environment"]["scenario_backup_restore"]["restore"]
    assert drill["verdict"] == "pass" and "fsfreeze" in drill["consistency"]
    assert "fsfreeze" in (out / "conformance.md").read_text()
    assert not leftovers(report["run_id"])
