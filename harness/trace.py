"""The state trace: a small fingerprint of the target taken before the first applied step and after each one.

A fingerprint is a flat map of facts, each a key and a value, read in one round trip as root:
- `mount:<target>`   what is mounted there (source and file system type; pseudo file systems left out)
- `path:<path>`      the top of each directory the plan mounts, creates or roots a server in: inode, owner, type
- `unit:<name>`      every unit the plan names: active state, main pid, enabled state
- `listen:<address>` every listening TCP socket, with the process name
- `nginx`            `nginx -t`: ok or failed (when nginx is installed)
- `user:<name>`, `group:<name>`
- `file:<path>`      every file the plan writes or edits: a short sha256, or absent
Facts come from the host (the kit's own knowledge of the runbook only chooses which paths and units to look at),
so what changed after a step is evidence of what that step did. The trace is kept as the first fingerprint and
each step's changes (added, removed, changed facts), and its total cost is reported.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from harness.model import Plan, StepKind
from harness.targets.base import Target

PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "tmpfs", "devtmpfs", "securityfs", "debugfs",
             "tracefs", "fusectl", "configfs", "pstore", "bpf", "hugetlbfs", "autofs", "binfmt_misc", "nsfs",
             "efivarfs", "ramfs", "rpc_pipefs", "nfsd"}
MAX_ENTRIES = 60  # per directory listed
SHELL_TIMEOUT = 60.0  # seconds one fingerprint may take in the long-lived shell
_UNIT_VERB = re.compile(r"\bsystemctl\s+(?:--now\s+)?(?:enable|start|restart|reload|stop|disable|status)\s+"
                        r"(?:--now\s+)?([A-Za-z0-9@_.:-]+)")
_DIR_ARG = re.compile(r"(?:--root-dir[= ]|\bmkdir\s+(?:-p\s+)?|\bmount\s+\S+\s+)(/[A-Za-z0-9_./-]+)")


@dataclass
class Watch:
    """What the fingerprint looks at, chosen from the plan once per run."""

    units: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def watch_of(plan: Plan) -> Watch:
    units: list[str] = []
    dirs: list[str] = []
    files: list[str] = []
    for step in plan.steps:
        text = step.command or ""
        for name in _UNIT_VERB.findall(text):
            unit = name if "." in name else f"{name}.service"
            if unit not in units:
                units.append(unit)
        for path in _DIR_ARG.findall(text):
            path = path.rstrip("/") or "/"
            if path not in dirs and not path.startswith(("/dev/", "/proc", "/sys", "/tmp")):
                dirs.append(path)
        if step.kind in (StepKind.FILE_WRITE, StepKind.LINE_EDIT) and step.path:
            if step.path not in files:
                files.append(step.path)
            if step.path.startswith("/etc/systemd/system/") and step.path.endswith((".service", ".timer")):
                unit = step.path.rsplit("/", 1)[1]
                if unit not in units:
                    units.append(unit)
            if step.path == "/etc/fstab" and step.content.split()[1:2]:
                point = step.content.split()[1]
                if point.startswith("/") and point not in dirs:
                    dirs.append(point)
    return Watch(units=units, dirs=dirs, files=files)


def script(watch: Watch) -> str:
    """One shell script printing every section; few processes (each costs a fork on a busy host): raw files and
    raw tool output, parsed here, not in pipelines on the host."""
    q = shlex.quote
    parts = ["echo @@mounts; findmnt -rn -o TARGET,SOURCE,FSTYPE 2>/dev/null"]
    for d in watch.dirs:
        parts.append(f"echo @@dir {q(d)}; [ -d {q(d)} ] && stat -c '%n|%i|%U:%G|%F' {q(d)} {q(d)}/* "
                     f"{q(d)}/.[!.]* 2>/dev/null")
    parts.append("echo @@units")
    if watch.units:
        # one call for every unit: blocks of Id/ActiveState/MainPID/UnitFileState separated by blank lines
        parts.append("systemctl show -p Id -p ActiveState -p MainPID -p UnitFileState "
                     + " ".join(q(u) for u in watch.units) + " 2>/dev/null")
    parts.append("echo @@listen; ss -Htlnp 2>/dev/null")
    # `nginx -t` again only when nginx's configuration (or the binary) changed since the last fingerprint of this
    # shell: a persistent shell keeps the last answer (a new shell simply asks again)
    parts.append("echo @@nginx; if command -v nginx >/dev/null 2>&1; then "
                 "k=\"$(command -v nginx) $(find /etc/nginx -newer /etc/hostname -printf '%p %T@ %s;' 2>/dev/null)\"; "
                 "if [ \"$k\" != \"${STDBC_NGINX_K:-}\" ]; then STDBC_NGINX_K=$k; "
                 "nginx -t >/dev/null 2>&1 && STDBC_NGINX_T=ok || STDBC_NGINX_T=failed; fi; echo $STDBC_NGINX_T; fi")
    parts.append("echo @@users; cat /etc/passwd; echo @@groups; cat /etc/group")
    parts.append("echo @@files")
    if watch.files:
        files = " ".join(q(f) for f in watch.files)
        parts.append(f"sha256sum {files} 2>&1")
    return "; ".join(parts)


def _flush_unit(props: dict[str, str], facts: dict[str, str]) -> None:
    """A complete block of `systemctl show` (its four properties, in any order) as the unit's fact."""
    if len(props) == 4 and props.get("Id"):
        facts[f"unit:{props['Id']}"] = (f"{props.get('ActiveState') or 'unknown'} pid={props.get('MainPID') or '0'} "
                                        f"{props.get('UnitFileState') or 'not-found'}")
        props.clear()


def parse(output: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    unit_props: dict[str, str] = {}
    section = ""
    for line in output.splitlines():
        line = line.rstrip()
        if line.startswith("@@"):
            section = line[2:]
            continue
        if not line:
            if section == "units":
                unit_props.clear()
            continue
        if section == "mounts":
            fields = line.split()
            if len(fields) >= 3 and fields[2] not in PSEUDO_FS:
                facts[f"mount:{fields[0]}"] = f"{fields[1]} {fields[2]}"
        elif section.startswith("dir "):
            name, _, rest = line.partition("|")
            inode, owner, kind = (rest.split("|") + ["", "", ""])[:3]
            facts[f"path:{name}"] = f"{kind} inode={inode} owner={owner}"
        elif section == "units":
            key, _, value = line.partition("=")
            unit_props[key] = value
            if len(unit_props) == 4:
                _flush_unit(unit_props, facts)
        elif section == "listen":  # ss -Htlnp: State Recv-Q Send-Q Local Peer [Process]
            fields = line.split()
            if len(fields) >= 4:
                found = re.search(r'\(\("([^"]+)"', line)
                facts[f"listen:{fields[3]}"] = found.group(1) if found else "?"
        elif section == "nginx":
            facts["nginx"] = line
        elif section == "users":
            fields = line.split(":")
            if len(fields) > 2:
                facts[f"user:{fields[0]}"] = f"uid={fields[2]}"
        elif section == "groups":
            facts[f"group:{line.split(':')[0]}"] = "present"
        elif section == "files":
            digest, _, path = line.partition("  ")
            if path and re.fullmatch(r"[0-9a-f]{64}", digest):
                facts[f"file:{path}"] = digest[:16]
            else:  # sha256sum: FILE: No such file or directory
                name = line.removeprefix("sha256sum: ").split(": ", 1)[0]
                facts[f"file:{name}"] = "absent"
    return facts


def diff(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
    return {"added": {k: after[k] for k in sorted(set(after) - set(before))},
            "removed": {k: before[k] for k in sorted(set(before) - set(after))},
            "changed": {k: [before[k], after[k]] for k in sorted(set(before) & set(after)) if before[k] != after[k]}}


class Shell:
    """One long-lived root shell on the target (`target.popen_argv`): every fingerprint is one script written to it,
    without a new `docker exec`/ssh each time. Bounded: a script that does not finish within SHELL_TIMEOUT breaks
    the shell, and the trace goes back to one command per fingerprint."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0)
        self.count = 0
        self.broken = False

    def run(self, text: str) -> str | None:
        """The script's output, or None when the shell broke or did not answer in time. Reads the pipe itself
        (os.read after select), never through a buffered reader that could hold the marker select cannot see."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.count += 1
        marker = f"@@stdbc-end-{self.count}\n".encode()
        try:
            self.proc.stdin.write(f"{{ {text}\n}} 2>/dev/null; echo {marker.decode().strip()}\n".encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.broken = True
            return None
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + SHELL_TIMEOUT
        while not data.endswith(marker) and b"\n" + marker not in data:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.broken = True
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                self.broken = True
                return None
            data += chunk
        return data[: data.rindex(marker)].decode(errors="replace")

    def close(self) -> None:
        if self.broken:  # a script still running in it: no point waiting for it
            self.proc.kill()
            self.proc.wait(timeout=10)
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class StateTrace:
    """Fingerprints of the target before the first step and after each applied step, and what they cost."""

    watch: Watch
    initial: dict[str, str] = field(default_factory=dict)
    after: dict[int, dict[str, str]] = field(default_factory=dict)  # step index -> fingerprint after it
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    shell: Shell | None = field(default=None, repr=False)
    shell_failed: bool = False

    def take(self, target: Target) -> dict[str, str]:
        started = time.monotonic()
        text = script(self.watch)
        shell = self._shell(target)
        output = shell.run(text) if shell is not None else None
        if output is None:  # no long-lived shell on this target (or it broke): one command
            res = target.run(text, user="root", timeout=60)
            output = res.stdout
            if not res.ok and not res.stdout.strip():
                self.errors.append(f"fingerprint failed (exit {res.exit_status}): {res.stderr.strip()[-200:]}")
        self.seconds += time.monotonic() - started
        return parse(output)

    def _shell(self, target: Target) -> Shell | None:
        if self.shell is None and not self.shell_failed:
            argv_of = getattr(target, "popen_argv", None)
            if argv_of is not None:
                try:
                    self.shell = Shell(argv_of(["bash"], user="root"))
                except OSError as exc:
                    self.shell_failed = True
                    self.errors.append(f"no long-lived shell for the trace: {exc}")
        if self.shell is not None and self.shell.broken:
            self.shell.close()
            self.shell, self.shell_failed = None, True
        return self.shell

    def close(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None

    def start(self, target: Target) -> None:
        self.initial = self.take(target)

    def record(self, index: int, target: Target) -> None:
        self.after[index] = self.take(target)

    def states(self) -> list[tuple[int | None, dict[str, str]]]:
        """(step index or None for before the first step, fingerprint), in order."""
        return [(None, self.initial)] + sorted(self.after.items())

    def to_dict(self) -> dict[str, Any]:
        steps = []
        previous = self.initial
        for index, facts in sorted(self.after.items()):
            steps.append({"step": index, **diff(previous, facts)})
            previous = facts
        return {"watch": {"units": self.watch.units, "dirs": self.watch.dirs, "files": self.watch.files},
                "initial": self.initial, "steps": steps, "seconds": round(self.seconds, 2),
                "fingerprints": len(self.after) + 1, "errors": self.errors}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateTrace:
        watch = Watch(**data.get("watch", {}))
        trace = cls(watch=watch, initial=dict(data.get("initial", {})), seconds=float(data.get("seconds", 0)),
                    errors=list(data.get("errors", [])))
        current = dict(trace.initial)
        for step in data.get("steps", []):
            current = {k: v for k, v in current.items() if k not in step.get("removed", {})}
            current.update(step.get("added", {}))
            current.update({k: v[1] for k, v in step.get("changed", {}).items()})
            trace.after[int(step["step"])] = dict(current)
        return trace
