"""What one run judges: the target backend and, for a host the kit builds, the lab services around it.

    Testbed(run_id, backend, services)   services = LabServices for docker:// and vm://, None for ssh://

Both parts are context managers entered on one exit stack (`open_testbed`), so the target and the lab's
services are removed on success, failure, Ctrl-C and SIGTERM, in reverse order of creation. The suites'
pytest processes re-attach with `Testbed.from_state` (queries only; capability operations stay with the
process that brought the backend up).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from harness.backends import backend_from_state
from harness.backends.base import Capability, TargetBackend
from harness.errors import LabError
from harness.lab import runs
from harness.lab.services import LabServices
from harness.targets.base import Target

Progress = Callable[[str], None]


class Testbed:
    def __init__(self, run_id: str, backend: TargetBackend, services: LabServices | None = None) -> None:
        self.run_id = run_id
        self.backend = backend
        self.services = services

    # ---- state -----------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "target": self.backend.state(),
                "services": self.services.state() if self.services is not None else None}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Testbed:
        services = LabServices.from_state(state["services"]) if state.get("services") else None
        return cls(state["run_id"], backend_from_state(state["target"]), services)

    # ---- what suites and scenarios use --------------------------------------------------------------------
    @property
    def target(self) -> Target:
        return self.backend.target

    @property
    def lab(self) -> LabServices:
        """The lab's services; a LabError for a host the kit did not build (ask `has_lab` first)."""
        if self.services is None:
            raise LabError(f"the {self.backend.scheme} backend has no lab services (client, ACME CA, operator)")
        return self.services

    @property
    def has_lab(self) -> bool:
        return self.services is not None

    def adaptations(self) -> list[dict[str, str]]:
        found = list(self.services.adaptations) if self.services is not None else []
        found += list(getattr(self.backend, "adaptations", []))
        return [a.to_dict() for a in found]

    def readiness(self) -> dict[str, Any]:
        found = dict(self.services.s.readiness) if self.services is not None else {}
        found.update(getattr(self.backend, "readiness", {}))
        return found

    def follow_plan(self, plan: Any) -> None:
        self.backend.follow_plan(plan)

    def before_step(self, step: Any, target: Target) -> str | None:
        """Declared actions right before an applied step: the backend's (e.g. a console volume attach), then
        the lab's (certbot answered through cli.ini)."""
        done = [d for d in (self.backend.before_step(step),
                            self.services.before_step(step, target) if self.services is not None else None) if d]
        return "; ".join(done) or None

    # ---- up / down -------------------------------------------------------------------------------------------
    def up(self, progress: Progress) -> None:
        """Lab services and the target, started side by side; then both prepared (lab CA, operator machine)."""
        backend, services = self.backend, self.services
        if services is None:
            backend.up(None, progress)
            return
        services.open(progress)
        services.track([lambda: services.start_hosts(progress), lambda: backend.up(services, progress)])
        services.wait_services(progress, target_sshd=backend.has(Capability.LAB_NETWORK))
        calls = [lambda: services.prepare_target(backend.target, progress)]
        if services.options.operator:
            calls.append(lambda: services.prepare_operator(backend.target, progress))
        services.track(calls)
        fault = os.environ.get("STDBC_LAB_FAULT", "")  # the kit's own tests: a lab broken on purpose
        if fault:
            services.inject_fault(fault, progress)

    def down(self) -> None:
        """Remove the target, then the lab's services. Idempotent; never raises for already-gone resources."""
        try:
            self.backend.down()
        finally:
            if self.services is not None:
                self.services.down()
            runs.unregister(self.run_id)
