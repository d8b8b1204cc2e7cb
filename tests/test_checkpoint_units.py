"""Checkpoints without a lab: keys chain the steps' exact text, the longest stored prefix is found, replayed steps
are not run again, a checkpoint is taken only where the rules allow, and the selftest asks for them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness import checkpoint
from harness.apply import apply_plan
from harness.checkpoint_run import RunCheckpoints, parse_save_at
from harness.errors import UsageError
from harness.model import Plan, SourceRef, Step, StepKind
from harness.trace import StateTrace, Watch
from tests.test_apply import RecordingTarget


def _step(index: int, command: str) -> Step:
    return Step(index=index, kind=StepKind.SHELL, ref=SourceRef(("Step X",), index + 1, index + 1), raw=command,
                command=command)


def _plan(commands: list[str]) -> Plan:
    return Plan(runbook_path="rb.md", runbook_sha256="0" * 64, profile="test",
                steps=[_step(n, c) for n, c in enumerate(commands)])


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STDB_CACHE_DIR", str(tmp_path / "cache"))
    return checkpoint.store_dir()


def test_keys_chain_the_steps_so_a_plan_that_differs_later_shares_the_earlier_prefixes() -> None:
    inputs = {"backend": "docker", "image": "abc"}
    base = checkpoint.prefix_keys(_plan(["a", "b", "c", "d"]).steps, inputs)
    edited = checkpoint.prefix_keys(_plan(["a", "b", "C", "d"]).steps, inputs)
    assert base[:2] == edited[:2]
    assert base[2] != edited[2] and base[3] != edited[3]  # everything from the edit on differs
    assert checkpoint.prefix_keys(_plan(["a", "b", "c", "d"]).steps, {**inputs, "image": "other"})[0] != base[0]
    assert len(set(base)) == 4


def _save(key: str, steps: int, records: list[dict[str, Any]] | None = None) -> checkpoint.Checkpoint:
    return checkpoint.save(key, steps, run_id="r1", inputs={}, backend_copy=lambda d: {"image": f"img-{steps}"},
                           identity={"lab-ca.key": b"k"}, records=records or [], trace={}, observation=["unit x"])


def test_the_longest_stored_prefix_is_found_unless_too_old_or_gone(store: Path) -> None:
    keys = checkpoint.prefix_keys(_plan(["a", "b", "c"]).steps, {})
    assert checkpoint.find(keys) is None
    _save(keys[0], 1)
    _save(keys[1], 2)
    found = checkpoint.find(keys)
    assert found is not None and found.steps == 2 and found.backend == {"image": "img-2"}
    assert (found.identity / "lab-ca.key").read_bytes() == b"k"
    # the backend's copy is gone: the next shorter one
    found = checkpoint.find(keys, present=lambda meta: meta["backend"]["image"] != "img-2")
    assert found is not None and found.steps == 1
    meta_path = store / keys[1][:32] / checkpoint.META
    meta = json.loads(meta_path.read_text())
    meta["created_epoch"] = time.time() - checkpoint.MAX_AGE_SECONDS - 10
    meta_path.write_text(json.dumps(meta))
    found = checkpoint.find(keys)
    assert found is not None and found.steps == 1


def test_prune_keeps_the_newest_and_removes_the_backends_copies(store: Path) -> None:
    removed: list[dict[str, Any]] = []
    keys = checkpoint.prefix_keys(_plan(["a", "b", "c"]).steps, {})
    for n, key in enumerate(keys, start=1):
        _save(key, n)
        time.sleep(0.01)
    gone = checkpoint.prune(removed.append, keep=1)
    assert len(gone) == 2 and sorted(m["image"] for m in removed) == ["img-1", "img-2"]
    assert checkpoint.find(keys) is not None and checkpoint.find(keys[:2]) is None


def test_replayed_steps_are_not_run_again_and_keep_their_recorded_evidence(store: Path) -> None:
    plan = _plan(["sudo apt update", "sudo apt install nginx -y", "sudo systemctl restart nginx"])
    first = RecordingTarget()
    recorded = apply_plan(plan, first).transcript()
    ck = RunCheckpoints.for_run(plan, use=True, save_at=None)
    assert ck is not None

    class Backend:
        @staticmethod
        def checkpoint_present(meta: dict[str, Any]) -> bool:
            return True

    assert ck.choose(Backend, {}, progress=lambda _m: None) is None
    _save(ck.keys[1], 2, recorded[:2])
    ck.choose(Backend, {}, progress=lambda _m: None)
    assert ck.found is not None and ck.found.steps == 2
    second = RecordingTarget()
    result = apply_plan(plan, second, replayed=ck.replayed())
    assert second.commands == [("ubuntu", "sudo systemctl restart nginx")]  # only the step after the prefix
    transcript = result.transcript()
    assert [r["status"] for r in transcript] == ["ok", "ok", "ok"]
    assert transcript[0]["results"] == recorded[0]["results"]
    assert "replayed from checkpoint" in transcript[1]["note"]
    adaptation = ck.adaptation()
    assert adaptation is not None and "first 2 step(s)" in adaptation["summary"]
    assert ck.to_dict()["replayed_steps"] == 2


class FakeBackend:
    def __init__(self, target: RecordingTarget) -> None:
        self.target = target
        self.saved: list[str] = []

    def save_checkpoint(self, directory: Path, key: str) -> dict[str, Any]:
        self.saved.append(key)
        return {"image": key[:8]}

    @staticmethod
    def checkpoint_present(meta: dict[str, Any]) -> bool:
        return True

    @staticmethod
    def remove_checkpoint(made: dict[str, Any]) -> None:
        return None


class FakeLab:
    def adapts_before(self, step: Step, target: Any) -> bool:
        return "certbot" in step.command and "apt" not in step.command

    def identity_files(self) -> dict[str, bytes]:
        return {"lab-ca.key": b"k", "lab-ca.crt": b"c"}


def _taking(plan: Plan, save_at: set[int], target: RecordingTarget) -> tuple[RunCheckpoints, FakeBackend]:
    ck = RunCheckpoints.for_run(plan, use=False, save_at=save_at)
    assert ck is not None
    ck.choose(FakeBackend, {}, progress=lambda _m: None)
    backend = FakeBackend(target)
    hook = ck.boundary_hook(run_id="r", backend=backend, lab=FakeLab(), trace=StateTrace(Watch([], [], [])),
                            progress=lambda _m: None)
    apply_plan(plan, target, at_boundary=hook)
    return ck, backend


def test_a_checkpoint_ends_before_the_first_step_the_lab_adapts_for(store: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("harness.checkpoint_run.MIN_SECONDS_BETWEEN", 0.0)
    plan = _plan(["sudo apt update", "sudo apt install certbot -y", "sudo certbot --nginx", "sudo true"])
    ck, backend = _taking(plan, {1, 4}, RecordingTarget())
    assert [s["steps"] for s in ck.saved] == [1, 2]  # 4 asked for, but step 3 talks to this run's own ACME CA
    assert backend.saved == [ck.keys[0], ck.keys[1]]
    assert "adapted" in ck.refused


def test_a_checkpoint_that_would_save_a_few_seconds_is_not_taken(store: Path) -> None:
    """Every step here takes 0.01 s: committing the host would cost more than it saves."""
    plan = _plan(["sudo apt update", "sudo apt install certbot -y", "sudo certbot --nginx"])
    ck, backend = _taking(plan, {1}, RecordingTarget())
    assert backend.saved == [] and ck.saved == [] and "adapted" in ck.refused


def test_no_checkpoint_of_a_host_with_a_block_device_mounted(store: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("harness.checkpoint_run.MIN_SECONDS_BETWEEN", 0.0)
    plan = _plan(["sudo mkfs.ext4 /dev/nvme1n1", "sudo mount /dev/nvme1n1 /stdb"])
    target = RecordingTarget({"findmnt": (0, "mount /stdb /dev/nvme1n1\n", "")})
    ck, backend = _taking(plan, set(), target)
    assert backend.saved == [] and "/stdb /dev/nvme1n1" in ck.refused


def test_no_checkpoint_after_a_failed_step(store: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("harness.checkpoint_run.MIN_SECONDS_BETWEEN", 0.0)
    plan = _plan(["sudo apt update", "false-command", "sudo true"])
    target = RecordingTarget({"false-command": (1, "", "no")})
    ck, backend = _taking(plan, {2, 3}, target)
    assert backend.saved == [] and ck.saved == []


def test_save_points_are_step_counts() -> None:
    assert parse_save_at("") == set() and parse_save_at("3, 9") == {3, 9}
    with pytest.raises(UsageError):
        parse_save_at("0")
    with pytest.raises(UsageError):
        parse_save_at("x")


def test_a_checkpoint_whose_volume_copy_is_missing_is_not_found(store: Path) -> None:
    keys = checkpoint.prefix_keys(_plan(["a"]).steps, {})

    def copy(directory: Path) -> dict[str, Any]:
        (directory / "volume.img").write_bytes(b"\0" * 16)
        return {"image": "img", "volume": "volume.img"}

    made = checkpoint.save(keys[0], 1, run_id="r", inputs={}, backend_copy=copy, identity={}, records=[], trace={},
                           observation=[])
    assert checkpoint.find(keys) is not None
    (made.directory / "volume.img").unlink()
    assert checkpoint.find(keys) is None
