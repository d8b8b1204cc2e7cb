"""What a target backend is: the host the runbook is applied to (or that already exists), what it can do,
and the one error a missing capability raises.

A backend owns its host and everything the kit does to it below the shell: only a backend's own module
talks to docker, qemu, QMP, losetup or ssh. Scenarios, the run flow and the suites ask for a
`Capability`, never for a backend's name; a check whose capability is missing is not-applicable naming
that capability (`Capability.describe`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import LabError
from harness.targets.base import Target

if TYPE_CHECKING:
    from harness.backends import TargetUrl
    from harness.lab.services import LabServices

Progress = Callable[[str], None]


class Capability(StrEnum):
    """What a backend can do to its host."""

    COMMANDS = "commands"  # run commands as any user (sudo where needed)
    FILES = "files"  # read and write files
    BUILDS_HOST = "builds-host"  # the kit brought the host up fresh and applies the runbook to it
    MUTATION = "mutation"  # the kit may change the host (always on lab hosts; --allow-mutation on others)
    REBOOT = "reboot"  # a real kernel reboot: a new boot id, fstab and units as at boot
    RESTART = "restart"  # restart the host's init (a container restart: the host kernel's boot id stays)
    VOLUME_DETACH = "volume-detach"  # power the host off, detach / re-attach the data volume, cold boot
    VOLUME_HOTPLUG = "volume-hotplug"  # attach a new empty data volume to the running host
    VOLUME_SNAPSHOT = "volume-snapshot"  # point-in-time copy of the data volume while the host runs
    RECOVERY_HOST = "recovery-host"  # a second fresh host, from the same image, with a given volume attached
    LAB_NETWORK = "lab-network"  # on the lab network: the remote client, Pebble and the operator reach it
    CHECKPOINT = "checkpoint"  # keep the host after a prefix of the plan and start a later host from it

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Capability.COMMANDS: "running commands on the host",
    Capability.FILES: "reading and writing files on the host",
    Capability.BUILDS_HOST: "a host the kit builds and applies the runbook to",
    Capability.MUTATION: "changing the host (needs --allow-mutation on a host the kit did not build)",
    Capability.REBOOT: "a real reboot of the host (a new boot id)",
    Capability.RESTART: "restarting the host",
    Capability.VOLUME_DETACH: "detaching and re-attaching the data volume across a cold boot",
    Capability.VOLUME_HOTPLUG: "attaching a new data volume to the running host",
    Capability.VOLUME_SNAPSHOT: "a point-in-time snapshot of the data volume",
    Capability.RECOVERY_HOST: "a second, fresh host with a restored volume attached",
    Capability.LAB_NETWORK: "membership of the lab network (lab client, ACME CA, operator machine)",
    Capability.CHECKPOINT: "a checkpoint of the host after the first steps, for later runs to start from",
}


class NotCapable(LabError):
    """Something asked a backend for a capability it does not have."""

    def __init__(self, backend: str, capability: Capability) -> None:
        self.capability = capability
        super().__init__(f"the {backend} backend has no capability {capability.value!r} "
                         f"({capability.describe()})")


@dataclass(frozen=True)
class HostAccess:
    """How the kit reaches and may treat a host it did not build (ignored by lab backends)."""

    identity_file: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    allow_mutation: bool = False


@dataclass
class SnapshotInfo:
    """How a volume snapshot was taken (for the report)."""

    path: Path
    method: str
    consistency: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot": str(self.path), "method": self.method, "consistency": self.consistency, **self.extra}


class TargetBackend(ABC):
    """One target host and what the kit can do to it. Lab backends are brought up by `up()` inside a lab
    (`LabServices`); a backend for an existing host connects in `up()` and builds nothing. The state
    (`state()` / `from_state()`) lets the suites' pytest processes re-attach for queries; only the process
    that brought a backend up performs its capability operations (reboots, volumes, snapshots)."""

    scheme: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    # why a capability is missing, in this backend's own words (else the capability's description is used)
    limitations: ClassVar[dict[Capability, str]] = {}

    # ---- what it can do ---------------------------------------------------------------------------------
    def has(self, capability: Capability) -> bool:
        return capability in self.effective_capabilities()

    def effective_capabilities(self) -> frozenset[Capability]:
        """The capabilities of this instance (a backend may drop some, e.g. mutation without permission)."""
        return self.capabilities

    def require(self, capability: Capability) -> None:
        if not self.has(capability):
            raise NotCapable(self.scheme, capability)

    def missing(self, *needed: Capability) -> str:
        """'' when every capability is there, else the reason a check needing them is not applicable."""
        lacking = [c for c in needed if not self.has(c)]
        if not lacking:
            return ""
        if Capability.MUTATION in lacking:
            return "changes the host: needs --allow-mutation"
        return "; ".join(self.limitations.get(c) or f"the {self.scheme} backend cannot provide {c.describe()}"
                         f" (capability {c.value})" for c in lacking)

    # ---- before anything is created ------------------------------------------------------------------------
    @classmethod
    def preflight(cls) -> None:
        """What this backend needs from the machine the kit runs on, checked before the run prints or creates
        anything (one LabError line naming the fix). A backend that needs nothing checks nothing."""
        return None

    @classmethod
    def prepare(cls, progress: Progress) -> dict[str, Any]:
        """Expensive, cached artefacts the backend needs (e.g. a VM image); returns facts for the report."""
        return {}

    @classmethod
    @abstractmethod
    def for_run(cls, run_id: str, url: TargetUrl, access: HostAccess, workdir: Path) -> TargetBackend:
        """The backend for one run's target URL (`workdir`: the run's own folder, for connection state)."""

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> TargetBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    @abstractmethod
    def up(self, lab: LabServices | None, progress: Progress) -> None: ...

    @abstractmethod
    def down(self) -> None: ...

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> TargetBackend: ...

    @property
    @abstractmethod
    def target(self) -> Target: ...

    def address(self) -> str:
        """The target's address as the remote vantage point reaches it."""
        return self.target.address()

    def facts(self) -> dict[str, Any]:
        """Backend facts for the report's environment section."""
        return {}

    def keep(self) -> None:
        """`lab up`: the host outlives the process that brought it up (until `lab down`)."""
        return None

    def follow_plan(self, plan: Any) -> None:  # noqa: B027 - optional hook
        """Look at the plan before the apply phase (e.g. where a console step attaches a volume)."""

    def before_step(self, step: Any) -> str | None:
        """An action the backend performs right before `step` (declared in the transcript), or None."""
        return None

    # ---- checkpoints (Capability.CHECKPOINT, harness.checkpoint) -------------------------------------------
    # set before up(): (the checkpoint's directory, what save_checkpoint made) to start the host from
    restore_from: tuple[Path, dict[str, Any]] | None = None

    def save_checkpoint(self, directory: Path, key: str) -> dict[str, Any]:
        """Keep the host as it is now (its copy goes into `directory` or the backend's own store); returns
        what was made, which `checkpoint_present`, `remove_checkpoint` and a later `restore_from` get."""
        raise NotCapable(self.scheme, Capability.CHECKPOINT)

    @staticmethod
    def checkpoint_present(meta: dict[str, Any]) -> bool:
        return False

    @staticmethod
    def remove_checkpoint(made: dict[str, Any]) -> None:
        """Remove what `save_checkpoint` kept outside the checkpoint's directory (default: nothing)."""
        return None

    # ---- capability operations (the default says which capability is missing) ----------------------------
    def reboot(self, timeout: float = 600.0) -> None:
        self.require(Capability.REBOOT)

    def power_off(self, *, hard: bool = False) -> None:
        """Power the host off (`hard`: pull the plug on a host that cannot be reached)."""
        self.require(Capability.VOLUME_DETACH)

    def boot(self, *, with_volume: bool = True, timeout: float | None = None) -> None:
        """Cold boot after `power_off`, with or without the data volume attached."""
        self.require(Capability.VOLUME_DETACH)

    def serial_tail(self, lines: int = 25) -> str:
        """The console's last lines (what a boot that never reached ssh printed)."""
        return ""

    def running(self) -> bool:
        return True

    def has_volume(self) -> bool:
        """Whether the host has a data volume the kit can detach (VOLUME_DETACH backends)."""
        return False

    def recover(self) -> None:  # noqa: B027 - optional: a backend with nothing to recover does nothing
        """Best effort: bring the host back to running with its volume after a failed scenario."""

    def snapshot_volume(self, dest: Path, *, freeze: str = "/stdb",
                        during: Callable[[], None] | None = None) -> SnapshotInfo:
        """A point-in-time copy of the data volume while the host runs. `during` is called while the copy is
        being made where the backend can let writes go on (else right after it)."""
        self.require(Capability.VOLUME_SNAPSHOT)
        raise AssertionError("unreachable")

    def recovery_host(self, progress: Progress) -> RecoveryHost:
        self.require(Capability.RECOVERY_HOST)
        raise AssertionError("unreachable")


class RecoveryHost(ABC):
    """A second, fresh host for a restore drill: the runbook prepares it, then a restored volume replaces
    its data volume."""

    @property
    @abstractmethod
    def target(self) -> Target: ...

    def boot_seconds(self) -> float | None:
        return None

    @abstractmethod
    def before_step(self, step: Any) -> str | None:
        """Backend actions right before a step of the runbook's preparation of this host."""

    @abstractmethod
    def volume_image(self, snapshot: Path, dest: Path) -> dict[str, Any]:
        """Turn a snapshot into a volume image this host can attach (the console's "create volume from
        snapshot"): returns what was done."""

    @abstractmethod
    def restored_volume_path(self) -> Path:
        """Where the volume made from the snapshot is kept (in this host's format)."""

    @abstractmethod
    def replace_volume(self, volume: Path) -> dict[str, Any]:
        """Stop the host, put `volume` in place of its data volume, start it: returns what was done."""

    @abstractmethod
    def release(self) -> None: ...
