"""testinfra as the kit's query layer: a testinfra backend whose every command goes through a kit Target.

Why not testinfra's own docker/ssh backends: they open connections of their own (on the vm backend a new ssh
process with its own options per query), so the kit's guards (the read-only guard of existing hosts) and its
transcript never see what testinfra ran. Here testinfra only builds commands and parses output; the command
runs through `Target.run` as root (docker exec as root; ssh as ubuntu with root via sudo inside Target.run),
so `sudo`-wrapped and `command -v` probes work the same on every backend.

One Host (one kit connection, testinfra's module and system-info caches) serves a whole suite session. A check
attaches its evidence recorder for its own duration (`bridge_of(host).recording(check)`); while one is
attached, every query a testinfra module makes for the check is recorded with its command, exit status and
output, under a label naming the module call ("testinfra: service('spacetimedb').is_running"). The queries
testinfra makes to pick a module's implementation (which init system, is `ss` installed, ...) are host
identification, made once per session: they still run through the Target, and are kept in `bridge.setup`
instead of the evidence of whichever check happened to use the module first.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol

import testinfra.backend.base
import testinfra.host
import testinfra.modules

from harness.targets.base import CommandResult, Target

DEFAULT_TIMEOUT = 60.0  # seconds per query (as `check.run`): testinfra passes none
# Target.run decodes the host's output as UTF-8: testinfra re-encodes with the same codec (no locale probe)
ENCODING = "utf-8"


class Runner(Protocol):
    """What the bridge needs of a kit Target: its name and `run` (every backend's Target has both)."""

    hostname: str

    def run(self, command: str, *, user: str = "root", timeout: float = 600.0) -> CommandResult: ...


class Recorder(Protocol):
    """Anything that keeps evidence, such as the suites' `check` (harness.pytest_plugin.CheckRecorder)."""

    def record(self, result: CommandResult, label: str) -> object: ...


class KitBackend(testinfra.backend.base.BaseBackend):
    """A testinfra backend over a kit Target: testinfra's commands run through `target.run`."""

    NAME = "kit"

    def __init__(self, target: Runner, *, user: str = "root", timeout: float = DEFAULT_TIMEOUT,
                 recorder: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(getattr(target, "hostname", "") or str(getattr(target, "name", "target")), **kwargs)
        self.target = target
        self.user = user
        self.timeout = timeout
        self.recorder = recorder
        self.setup: list[tuple[str, CommandResult]] = []  # module-implementation probes (see the module doc)
        self._setting_up = 0
        self._captures: list[list[CommandResult]] = []

    # ---- what testinfra asks of a backend --------------------------------------------------------
    def run(self, command: str, *args: str, **kwargs: Any) -> testinfra.backend.base.CommandResult:
        cmd = self.get_command(command, *args)
        result = self.target.run(cmd, user=self.user, timeout=float(kwargs.get("timeout") or self.timeout))
        if self._setting_up:
            self.setup.append((query_label(), result))
        else:
            if self.recorder is not None:
                self.recorder.record(result, query_label())
            for seen in self._captures:
                seen.append(result)
        return self.result(result.exit_status, self.encode(cmd), result.stdout, result.stderr)

    def get_sudo_command(self, command: str, sudo_user: str | None) -> str:
        """`host.sudo(user)`: the bridge already runs as `self.user` (root), so becoming root changes nothing
        and root becomes another user with runuser (no sudoers rule or sudo package needed)."""
        wanted = sudo_user or "root"
        if wanted == self.user:
            return command
        if self.user == "root":
            return self.quote("runuser -u %s -- /bin/sh -c %s", wanted, command)
        return str(super().get_sudo_command(command, sudo_user))

    def get_encoding(self) -> str:
        return ENCODING

    def get_pytest_id(self) -> str:
        return f"kit+{getattr(self.target, 'backend', 'target')}://{self.get_hostname()}"

    # ---- what the kit adds -----------------------------------------------------------------------
    @contextmanager
    def recording(self, recorder: Recorder | None) -> Iterator[KitBackend]:
        """Record the queries made inside the block with `recorder` (None: record nothing); then restore."""
        previous, self.recorder = self.recorder, recorder
        try:
            yield self
        finally:
            self.recorder = previous

    @contextmanager
    def capture(self) -> Iterator[list[CommandResult]]:
        """The kit results of the queries made inside the block, in order (module setup left out): what the
        host printed for a testinfra property that only answers True/False, for a check to judge or quote."""
        seen: list[CommandResult] = []
        self._captures.append(seen)
        try:
            yield seen
        finally:
            self._captures.remove(seen)

    @contextmanager
    def setting_up(self) -> Iterator[None]:
        """Queries made inside the block go to `self.setup`, not to the attached recorder."""
        self._setting_up += 1
        try:
            yield
        finally:
            self._setting_up -= 1


class KitHost(testinfra.host.Host):
    """testinfra's Host over a KitBackend: a module's implementation is picked outside any check's evidence."""

    backend: KitBackend

    def __getattr__(self, name: str) -> Any:
        if name not in testinfra.modules.modules:  # before touching self.backend (copy/pickle probes)
            return super().__getattr__(name)
        with self.backend.setting_up():
            return super().__getattr__(name)


def host_for(target: Runner, recorder: Recorder | None = None, *, user: str = "root",
             timeout: float = DEFAULT_TIMEOUT) -> testinfra.host.Host:
    """A testinfra Host whose every query runs through `target.run` as `user` (root by default), recorded
    with `recorder` when one is given. Not cached: keep the Host for as long as its caches should live."""
    backend = KitBackend(target, user=user, timeout=timeout, recorder=recorder)
    host = KitHost(backend)
    backend.set_host(host)
    return host


def bridge_of(host: testinfra.host.Host) -> KitBackend:
    """The KitBackend under `host`; TypeError for a Host on another backend (its queries bypass the kit)."""
    backend = getattr(host, "backend", None)
    if not isinstance(backend, KitBackend):
        raise TypeError(f"{host!r} does not run its queries through the kit (backend {type(backend).__name__})")
    return backend


# ---------------------------------------------------------------- labels: which module call made a query

_TESTINFRA_DIR = os.path.dirname(os.path.abspath(testinfra.__file__)) + os.sep
_MODULES_DIR = os.path.join(_TESTINFRA_DIR, "modules") + os.sep
_MODULE_BASE = os.path.join(_MODULES_DIR, "base.py")
_HOST_FILE = os.path.abspath(testinfra.host.__file__)
_PASS_THROUGH = {os.path.abspath(functools.__file__)}  # cached_property frames between testinfra's own
_THIS_FILE = os.path.abspath(__file__)
# file stem -> the Host attribute naming the module ("mountpoint" -> "mount_point")
_MODULE_NAMES = {spec.split(":", 1)[0]: name for name, spec in testinfra.modules.modules.items()}


def query_label() -> str:
    """Name the testinfra call the current query serves: the outermost testinfra module frame on the stack
    (the call the suite made, not the helper it used), else the Host method, else "testinfra query"."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == _THIS_FILE:
        frame = frame.f_back
    module_frame = host_frame = None
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_MODULES_DIR):
            if path != _MODULE_BASE:
                module_frame = frame
        elif path == _HOST_FILE:
            host_frame = frame
        elif not path.startswith(_TESTINFRA_DIR) and path not in _PASS_THROUGH:
            break  # back in the caller's code
        frame = frame.f_back
    if module_frame is not None:
        return f"testinfra: {_describe(module_frame)}"
    if host_frame is not None:
        return f"testinfra: host.{host_frame.f_code.co_name}"
    return "testinfra query"


def _describe(frame: FrameType) -> str:
    name = _MODULE_NAMES.get(os.path.splitext(os.path.basename(frame.f_code.co_filename))[0], "module")
    func = frame.f_code.co_name
    local = frame.f_locals
    if func == "get_module_class":
        return f"{name} (which implementation)"
    if func == "__getattr__" and isinstance(local.get("key"), str):  # a process attribute read lazily
        func = local["key"]
    argument = _argument(local.get("self"))
    subject = f"{name}({argument})" if argument else name
    filters = local.get("filters")
    if func in ("filter", "get") and isinstance(filters, dict):
        return f"{subject}.{func}({', '.join(f'{k}={v!r}' for k, v in filters.items())})"
    return f"{subject}.{func}"


def _argument(obj: object) -> str:
    """The argument a module object was made with, read from its attributes without running anything
    (a module's repr may itself query the host)."""
    if isinstance(obj, dict) and "pid" in obj:
        return f"pid={obj['pid']}"
    attrs = getattr(obj, "__dict__", {})
    for key in ("name", "_name", "path"):
        value = attrs.get(key)
        if isinstance(value, str):
            return repr(value)
    if attrs.get("protocol"):
        host = attrs.get("host")
        return repr(f"{attrs['protocol']}://{host + ':' if host else ''}{attrs.get('port')}")
    return ""


def path_owner(host: Any, target: Target, check: Any, path: str) -> str | None:
    """`user:group` of `path` itself, None when nothing is there. testinfra's file.user/group follow a symlink
    (`stat -L`); the promise is about the path itself (as plain `stat` reads it), so a symlink is read raw."""
    node = host.file(path)
    if node.is_symlink:
        res = check.run(target, f"stat -c '%U:%G' {shlex.quote(path)}", label=f"owner of the symlink {path}")
        return res.stdout.strip() if res.ok else None
    if not node.exists:
        return None
    return f"{node.user}:{node.group}"
