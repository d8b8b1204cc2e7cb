"""Running the official SDK client (harness/agents/sdk_client.mjs) from a vantage as a check's evidence.

The generated bindings an application would compile in are described from the module the kit knows (the probe
module, the operator's module): one table and the reducer that inserts into it. The agent prints one JSON line
per step; a failed step carries the SDK's own error text, which becomes the check's message.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from harness.errors import KitError

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class SdkUnavailable(Exception):
    """The kit's own SDK client cannot run where it should (a missing dependency of the kit: an error)."""


def bindings_for(module: dict[str, Any], table: str) -> dict[str, Any] | None:
    """What generated bindings say about `table` of `module` (a stand-in module definition) and the first reducer
    with a string argument that inserts into it; None when the module has no such table."""
    found = next((t for t in module.get("tables", []) if t.get("name") == table), None)
    if found is None:
        return None
    columns = [[c["name"], c["type"], "pk"] if c.get("primary_key") else [c["name"], c["type"]]
               for c in found["columns"]]
    bindings: dict[str, Any] = {"table": table, "columns": columns}
    for reducer in module.get("reducers", []):
        inserts = any(op.get("insert") == table for op in reducer.get("ops", []))
        args = [[a["name"], a["type"]] for a in reducer.get("args", [])]
        if inserts and any(t == "string" for _, t in args):
            bindings.update(reducer=reducer["name"], args=args)
            break
    return bindings


def sdk_timeout() -> int:
    """Seconds the SDK client gives a whole session (connect, subscribe, reconnect, reducer) before it says which
    step got no answer: $STDB_SDK_TIMEOUT, else 15. A working server took 0.5-3.3 s for the longest session
    (node's start included) in CI's selftest on a loaded 2-core machine; a server that never answers a
    subscription cost three clients 30 s each before."""
    raw = os.environ.get("STDB_SDK_TIMEOUT", "").strip()
    if not raw:
        return 15
    if not raw.isdigit() or int(raw) == 0:
        raise KitError(f"STDB_SDK_TIMEOUT={raw!r} is not a number of seconds", hint="set it to e.g. 30, or unset it")
    return int(raw)


def sdk_command(prefix: list[str], *, url: str, database: str, bindings: dict[str, Any] | None,
                call_reducer: bool, connect: str = "", ca_file: str = "", timeout: int | None = None) -> str:
    """The shell command for the vantage: the agent with its arguments, trusting `ca_file` (or the vantage's
    system bundle: Node.js keeps its own CA list otherwise)."""
    argv = [*prefix, "--uri", url, "--database", database, "--timeout", str(timeout or sdk_timeout())]
    if bindings is not None:
        argv += ["--bindings", json.dumps(bindings, separators=(",", ":"))]
    if call_reducer:
        argv.append("--call-reducer")
    if connect:
        argv += ["--connect", connect]
    return shlex.join(["env", f"NODE_EXTRA_CA_CERTS={ca_file or SYSTEM_BUNDLE}", *argv])


def sdk_events(stdout: str) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            events.setdefault(str(event.get("event")), event)
    return events


def failure(events: dict[str, dict[str, Any]], exit_status: int | None, stderr: str) -> str:
    """One line naming the step the SDK stopped at and its own words."""
    if "error" in events:
        return f"the SDK failed at `{events['error'].get('step')}`: {events['error'].get('message')}"
    if "timeout" in events:
        return (f"the SDK got no answer at `{events['timeout'].get('step')}` within "
                f"{events['timeout'].get('seconds')} s")
    return f"the SDK client ended with exit {exit_status}: {stderr.strip()[-200:] or 'no output'}"
