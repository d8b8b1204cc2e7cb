"""Host processes and their listening TCP sockets, read from /proc (Linux): which process owns a port, and
the process tree below a pid. Used to make sure a helper server answering on a port is the one this run
started (not another run's that took the port first), and by the kit's tests to find what a run left."""

from __future__ import annotations

import os
from pathlib import Path


def _proc_stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> str:
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def parent(pid: int) -> int:
    fields = _proc_stat(pid)
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every process below `pid` now (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(parent(int(entry.name)), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if child in found:
            continue
        found[child] = start_time(child)
        todo.extend(children.get(child, []))
    return found


def listening_sockets() -> dict[int, tuple[str, int]]:
    """{socket inode: (local address, port)} of every listening TCP socket of this network namespace."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A = LISTEN
                continue
            address, _, port = fields[1].rpartition(":")
            found[int(fields[9])] = (address, int(port, 16))
    return found


def sockets_of(pid: int) -> set[int]:
    """Socket inodes held open by `pid` (empty when it is gone or not ours to read)."""
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_ports(pid: int) -> set[int]:
    """TCP ports `pid` listens on."""
    listening = listening_sockets()
    return {listening[inode][1] for inode in sockets_of(pid) if inode in listening}


def port_owned_by(port: int, pids: set[int]) -> bool | None:
    """Whether the listener on `port` belongs to one of `pids`; None when /proc cannot tell."""
    listening = listening_sockets()
    inodes = {inode for inode, (_addr, p) in listening.items() if p == port}
    if not inodes:
        return False
    seen_any = False
    for pid in pids:
        held = sockets_of(pid)
        seen_any = seen_any or bool(held)
        if held & inodes:
            return True
    return False if seen_any else None
