"""Checkpoints: a target as it stood after the first steps of a plan, for later runs to start from.

Runs that share a prefix of their plan (the self-test's mutants, CI's lab runs) apply it once. A checkpoint is
keyed by everything that decides the state it holds: the lab's inputs (backend, base image, the release tree the
mirror serves, what the lab prepares on the target) and the exact text of every step of the prefix, with its
substitutions, chained step by step, so a plan that differs from step k on can still start from the checkpoint
of its first k-1 steps.

What a checkpoint holds: the backend's copy of the host (docker: the container's file system, committed, and a
copy of the data volume's backing file), the lab identity the host was prepared with (the lab CA and the
operator's ssh key, reused by the run that starts from it, so the host trusts and accepts exactly what a fresh
host would), the prefix's transcript records and state-trace fingerprints (replayed into the new run's report,
marked as replayed), and an observation of the host (active units, listening ports, block-device mounts).

Honesty rules: a checkpoint is taken only while every step so far succeeded and before the first step the lab
adapts for (that step talks to the run's own ACME CA, whose keys no later run shares); a host with a block
device mounted is not checkpointed (a container does not mount it again when it starts). A run started from a
checkpoint boots it, waits for the boot to finish and compares the observation; any difference discards the
checkpoint and the run starts fresh (said in the report). Running processes are not kept: the host's services
are started by its boot, as enabled. `run` never uses one unless asked (`--from-checkpoint`); the report lists
the replayed steps as an adaptation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import cache_part
from harness.model import Step
from harness.targets.base import CommandResult, Target

SCHEMA = 1
MAX_AGE_SECONDS = 20 * 3600  # the lab CA a checkpoint keeps is valid for two days from its making
KEEP = 8  # checkpoints kept in the cache (the newest); older ones are removed when a new one is saved
META = "checkpoint.json"
USED = "last-used"

# what the host looks like to the suites, compared before a checkpoint is used: running services and active
# sockets and timers (not oneshots that have exited: a first boot runs some that a later boot skips; sessions and
# per-user managers excluded: they belong to whoever is logged in), TCP listeners (not the container engine's own
# DNS at 127.0.0.11, on a port of its choosing), block-device mounts (not the engine's bind mounts of single files
# such as /etc/hosts, shown as DEVICE[PATH])
OBSERVE = r"""{ systemctl list-units --type=service --state=running --no-legend --plain 2>/dev/null;
  systemctl list-units --type=socket,timer --state=active --no-legend --plain 2>/dev/null; } \
 | awk '{print "unit " $1}' | grep -v -e '^unit user@' -e '^unit user-runtime-dir@' | sort
ss -Hltn 2>/dev/null | awk '$4 !~ /^127\.0\.0\.11:/ {print "listen " $4}' | sort -u
findmnt -rn -o TARGET,SOURCE 2>/dev/null | awk '$2 ~ /^\/dev\// && $2 !~ /\[/ {print "mount " $1 " " $2}' | sort"""


def store_dir() -> Path:
    return cache_part("checkpoints")


def prefix_keys(steps: Sequence[Step], inputs: dict[str, Any]) -> list[str]:
    """keys[k - 1] is the key of the checkpoint after the first k steps."""
    digest = hashlib.sha256(json.dumps({"schema": SCHEMA, **inputs}, sort_keys=True).encode()).hexdigest()
    keys = []
    for step in steps:
        digest = hashlib.sha256((digest + json.dumps(step.to_dict(), sort_keys=True)).encode()).hexdigest()
        keys.append(digest)
    return keys


def kit_digest() -> str:
    """The kit's code that decides what a prepared and applied host holds."""
    root = Path(__file__).resolve().parent
    parts = ["checkpoint.py", "apply.py", "lab/services.py", "lab/ca.py", "backends/docker.py",
             "lab/docker_target.py"]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0" + (root / part).read_bytes())
    return digest.hexdigest()


def observe(target: Target) -> list[str]:
    res = target.run(OBSERVE, timeout=60)
    return [line for line in res.stdout.splitlines() if line.strip()]


def block_mounts(observation: list[str]) -> list[str]:
    return [line.removeprefix("mount ") for line in observation if line.startswith("mount ")]


@dataclass
class Checkpoint:
    key: str
    directory: Path
    meta: dict[str, Any]

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    @property
    def backend(self) -> dict[str, Any]:
        return dict(self.meta.get("backend", {}))

    @property
    def identity(self) -> Path:
        return self.directory / "identity"

    def records(self) -> list[dict[str, Any]]:
        return list(self.meta.get("records", []))

    def trace(self) -> dict[str, Any]:
        return dict(self.meta.get("trace", {}))

    def describe(self) -> str:
        return (f"checkpoint {self.key[:16]} (the first {self.steps} step(s), made by run {self.meta.get('run_id')} "
                f"at {self.meta.get('created')})")


def find(keys: Sequence[str], *, present: Any = None) -> Checkpoint | None:
    """The checkpoint of the longest prefix that is stored, young enough, and whose backend copy is still
    there (`present(meta) -> bool`, the backend's own test)."""
    root = store_dir()
    for key in reversed(keys):
        directory = root / key[:32]
        try:
            meta = json.loads((directory / META).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("key") != key or meta.get("schema") != SCHEMA:
            continue
        if time.time() - float(meta.get("created_epoch", 0)) > MAX_AGE_SECONDS:
            continue
        kept = (meta.get("backend") or {}).get("volume")
        if kept and not (directory / kept).exists():
            continue
        if present is not None and not present(meta):
            continue
        try:
            (directory / USED).touch()  # the newest used are the last pruned
        except OSError:
            pass
        return Checkpoint(key, directory, meta)
    return None


def replayed_records(checkpoint: Checkpoint, steps: Sequence[Step]) -> list[Any]:
    """The prefix's transcript records as StepRecords of this plan's steps (same text: the key says so)."""
    from harness.apply import StepRecord
    from harness.model import Substitution

    records = []
    for step, data in zip(steps, checkpoint.records(), strict=False):
        results = [CommandResult(command=r["command"], exit_status=int(r["exit_status"]), stdout=r["stdout"],
                                 stderr=r["stderr"], duration=float(r["duration"]), user=r.get("user", "root"),
                                 host=r.get("host", ""), timed_out=bool(r.get("timed_out")))
                   for r in data.get("results", [])]
        resolved = [Substitution(s["placeholder"], s["value"], s.get("line", 0), bool(s.get("dynamic")),
                                 s.get("source", "")) for s in data.get("resolved", [])]
        note = f"replayed from {checkpoint.describe()}" + (f"; {data['note']}" if data.get("note") else "")
        records.append(StepRecord(step, "ok", results, resolved, float(data.get("duration", 0.0)), note))
    return records


def save(key: str, steps: int, *, run_id: str, inputs: dict[str, Any], backend_copy: Any,
         identity: dict[str, bytes], records: list[dict[str, Any]], trace: dict[str, Any],
         observation: list[str]) -> Checkpoint:
    """Write a checkpoint atomically; `backend_copy(directory) -> dict` makes the backend's copy of the host into
    the directory and says what it made (kept in the metadata)."""
    root = store_dir()
    final = root / key[:32]
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    try:
        for name, data in identity.items():
            path = work / "identity" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o600)
        backend = backend_copy(work)
        meta = {"schema": SCHEMA, "key": key, "steps": steps, "run_id": run_id,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_epoch": time.time(),
                "inputs": inputs, "backend": backend, "records": records, "trace": trace,
                "observation": observation}
        (work / META).write_text(json.dumps(meta, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Checkpoint(key, final, meta)


def prune(remove_backend_copy: Any, keep: int = KEEP) -> list[str]:
    """Remove all but the `keep` most recently made or used checkpoints (and what the backend keeps for them)."""
    root = store_dir()
    found = []
    for directory in root.iterdir():
        try:
            meta = json.loads((directory / META).read_text())
        except (OSError, ValueError):
            if directory.name.startswith(".") and time.time() - directory.stat().st_mtime > 3600:
                shutil.rmtree(directory, ignore_errors=True)  # a save that died half way
            continue
        try:
            used = (directory / USED).stat().st_mtime
        except OSError:
            used = 0.0
        found.append((max(float(meta.get("created_epoch", 0)), used), directory, meta))
    found.sort(key=lambda item: item[0], reverse=True)
    removed = []
    for _created, directory, meta in found[keep:]:
        remove_backend_copy(meta.get("backend", {}))
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory.name)
    return removed
