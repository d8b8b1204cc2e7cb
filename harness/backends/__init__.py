"""The backend registry: a target URL's scheme names the backend class, imported when first used.

    docker://            a systemd container in the kit's docker lab (built fresh, the runbook applied)
    vm://                a qemu VM in the kit's lab (built fresh, the runbook applied)
    ssh://user@host[:port]  a host that already exists: nothing is built or applied, only judged

Adding a backend: one module under harness/backends/ with a `TargetBackend` subclass, and one line here.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from harness.backends.base import Capability, NotCapable, TargetBackend
from harness.errors import UsageError

REGISTRY: dict[str, str] = {
    "docker": "harness.backends.docker:DockerBackend",
    "vm": "harness.backends.vm:VmBackend",
    "ssh": "harness.backends.ssh:SshBackend",
}

_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@/:\s]*)"
                  r"(?::(?P<port>\d{1,5}))?/?$")


@dataclass(frozen=True)
class TargetUrl:
    scheme: str
    user: str = ""
    host: str = ""
    port: int | None = None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{self.host}{port}"


def parse_target(url: str) -> TargetUrl:
    """`docker://`, `vm://`, `ssh://user@host[:port]`; a bare backend name means its lab URL."""
    text = url.strip()
    if text in REGISTRY:
        text = f"{text}://"
    match = _URL.match(text)
    if not match or match["scheme"] not in REGISTRY:
        known = ", ".join(f"{s}://" for s in REGISTRY)
        raise UsageError(f"malformed target {url!r}", hint=f"use one of {known} (ssh://user@host[:port])")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"malformed target {url!r}: port {port} is out of range", hint="ssh://user@host[:port]")
    host = (match["host"] or "").strip("[]")
    if match["scheme"] == "ssh" and not host:
        raise UsageError(f"malformed target {url!r}: no host", hint="ssh://user@host[:port]")
    return TargetUrl(match["scheme"], match["user"] or "", host, port)


def backend_class(scheme: str) -> type[TargetBackend]:
    try:
        module_name, _, class_name = REGISTRY[scheme].partition(":")
    except KeyError:
        raise UsageError(f"unknown backend {scheme!r}", hint=f"known: {', '.join(REGISTRY)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, TargetBackend)):
        raise TypeError(f"{REGISTRY[scheme]} is not a TargetBackend")
    return cls


def backend_from_state(state: dict[str, Any]) -> TargetBackend:
    """Re-attach to a backend recorded by `TargetBackend.state()` (it names its scheme)."""
    return backend_class(state["scheme"]).from_state(state)


def capabilities_of(scheme: str) -> frozenset[Capability]:
    return backend_class(scheme).capabilities


__all__ = ["REGISTRY", "Capability", "NotCapable", "TargetBackend", "TargetUrl", "backend_class",
           "backend_from_state", "capabilities_of", "parse_target"]
