"""One run's use of checkpoints (harness.checkpoint): which one it starts from, which it takes, what it says.

    ck = RunCheckpoints.for_run(plan, use=..., save_at=...)   # None when the run neither uses nor takes one
    ck.choose(backend_cls, inputs)       # before the target starts: the longest stored prefix, if any
    ck.verify(target)                    # after it started: the boot finished and the host looks as kept
    apply_plan(..., replayed=ck.replayed(), at_boundary=ck.boundary_hook(...))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import checkpoint
from harness.model import Plan, Step
from harness.targets.base import Target

Progress = Callable[[str], None]
KEPT_FILE = "checkpoints.json"  # in the report dir, once a run asked to keep checkpoints has ended its apply phase
MIN_SECONDS_BETWEEN = 5.0  # a checkpoint is not worth its commit when it saves less than this over an earlier one


def release_digest(tree: Path | None) -> str:
    """The mirror's release tree by content ("" for the real install URL)."""
    if tree is None:
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(tree)).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass
class RunCheckpoints:
    steps: list[Step]
    watch: dict[str, Any]  # what the state trace fingerprints (its replayed fingerprints must be of the same)
    use: bool
    save_at: set[int] | None  # prefix lengths to keep (with the longest valid one); None: take none
    inputs: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    found: checkpoint.Checkpoint | None = None
    rejected: str = ""
    saved: list[dict[str, Any]] = field(default_factory=list)
    refused: str = ""
    _backend: Any = None
    _last_saved_seconds: float = 0.0

    @classmethod
    def for_run(cls, plan: Plan, *, use: bool, save_at: set[int] | None) -> RunCheckpoints | None:
        if not use and save_at is None:
            return None
        from harness.trace import watch_of

        return cls(plan.runnable("apply"), asdict(watch_of(plan)), use, save_at)

    def choose(self, backend_cls: Any, inputs: dict[str, Any], progress: Progress) -> checkpoint.Checkpoint | None:
        self.inputs = {**inputs, "watch": self.watch, "kit": checkpoint.kit_digest()}
        self.keys = checkpoint.prefix_keys(self.steps, self.inputs)
        self._backend = backend_cls
        if not self.use:
            return None
        self.found = checkpoint.find(self.keys, present=backend_cls.checkpoint_present)
        if self.found is None:
            progress("checkpoint: none stored for any prefix of this plan and lab: every step runs")
        else:
            progress(f"checkpoint: starting from {self.found.describe()}")
        return self.found

    def verify(self, target: Target) -> str:
        """'' when the host started from the checkpoint looks as it did when kept, else what differs."""
        assert self.found is not None
        target.run("systemctl is-system-running --wait", timeout=120)
        now = checkpoint.observe(target)
        kept = list(self.found.meta.get("observation", []))
        if now == kept:
            return ""
        missing = sorted(set(kept) - set(now))
        extra = sorted(set(now) - set(kept))
        return (f"the host started from the checkpoint differs from the kept one: missing {missing[:6]}, "
                f"extra {extra[:6]}")

    def reject(self, why: str) -> None:
        self.rejected = why
        self.found = None

    def replayed(self) -> list[Any]:
        if self.found is None:
            return []
        return checkpoint.replayed_records(self.found, self.steps)

    def trace(self) -> dict[str, Any] | None:
        return self.found.trace() if self.found is not None else None

    # ---- taking checkpoints ------------------------------------------------------------------------------------
    def boundary_hook(self, *, run_id: str, backend: Any, lab: Any, trace: Any,
                      progress: Progress) -> Callable[[int, list[Any], Step | None], None] | None:
        if self.save_at is None or self.refused:
            return None

        def at(done: int, records: list[Any], upcoming: Step | None) -> None:
            if self.refused or done == 0:
                return
            adapted = upcoming is not None and lab.adapts_before(upcoming, backend.target)
            last = upcoming is None or adapted
            if not last and done not in (self.save_at or set()):
                return
            if any("adaptation before this step" in (r.note or "") for r in records):
                self.refused = "a step so far needed a lab adaptation (it depends on this run's own lab)"
                return
            seconds = sum(r.duration for r in records if not (r.note or "").startswith("replayed"))
            if seconds - self._last_saved_seconds >= MIN_SECONDS_BETWEEN:
                self._save(done, records, run_id=run_id, backend=backend, lab=lab, trace=trace, progress=progress)
                self._last_saved_seconds = seconds
            if adapted and upcoming is not None:
                self.refused = (f"plan step {upcoming.index} is adapted for by the lab (it depends on this run's own "
                                f"lab): no checkpoint after it")

        return at

    def _save(self, done: int, records: list[Any], *, run_id: str, backend: Any, lab: Any, trace: Any,
              progress: Progress) -> None:
        key = self.keys[done - 1]
        stored = checkpoint.find([key], present=type(backend).checkpoint_present)
        if stored is not None:
            self.saved.append({"steps": done, "key": key[:16], "already_stored": True})
            return
        target = backend.target
        observation = checkpoint.observe(target)
        mounted = checkpoint.block_mounts(observation)
        if mounted:
            self.refused = (f"after {done} step(s) a block device is mounted ({', '.join(mounted)}): a container "
                            f"started from a checkpoint would not mount it again")
            progress(f"checkpoint: none taken: {self.refused}")
            return
        prefix = [r.to_dict() for r in records[:done]]
        made = checkpoint.save(key, done, run_id=run_id, inputs=self.inputs,
                               backend_copy=lambda directory: backend.save_checkpoint(directory, key),
                               identity=lab.identity_files(), records=prefix, trace=trace.to_dict(),
                               observation=observation)
        removed = checkpoint.prune(type(backend).remove_checkpoint)
        self.saved.append({"steps": done, "key": key[:16], "already_stored": False})
        progress(f"checkpoint: kept the host after {done} step(s) ({made.key[:16]})"
                 + (f"; removed {len(removed)} old one(s)" if removed else ""))

    # ---- what the report says ------------------------------------------------------------------------------
    def adaptation(self) -> dict[str, str] | None:
        if self.found is None:
            return None
        first, last = self.steps[0], self.steps[self.found.steps - 1]
        return {"id": "checkpoint.replayed",
                "summary": (f"the first {self.found.steps} step(s) of the apply phase (plan steps {first.index}-"
                            f"{last.index}) were not run again: the target started from a checkpoint of them"),
                "detail": (f"{self.found.describe()}; keyed by the base image, the release tree, the lab's "
                           f"preparation and the exact text of those steps; the host's file system and data volume "
                           f"as they were, its services started by its boot; the lab CA and operator key reused; "
                           f"the host's units, listening ports and mounts compared before use; their transcript "
                           f"records are the recording run's")}

    def to_dict(self) -> dict[str, Any]:
        return {"used": self.found.key[:16] if self.found is not None else None,
                "replayed_steps": self.found.steps if self.found is not None else 0,
                "rejected": self.rejected or None, "saved": self.saved, "none_after": self.refused or None}


def parse_save_at(text: str) -> set[int]:
    """`--save-checkpoint` value: "" (the longest valid prefix only) or comma-separated prefix lengths."""
    found = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            from harness.errors import UsageError

            raise UsageError(f"--save-checkpoint {text!r}: expected step counts like 3,9 (each at least 1)")
        found.add(int(part))
    return found
