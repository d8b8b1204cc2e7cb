"""Issue 27, one gate: every place in the kit that starts ssh or scp (or any other way onto another machine) is
known, and says which gate it passes. A new one fails this test until it is routed through a gate and listed."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"
REMOTE_PROGRAMS = {"ssh", "scp", "sftp", "rsync", "ssh-keyscan", "sshpass"}

# (module, function) -> the gate in front of it
KNOWN = {
    ("harness/backends/ssh.py", "SshChannel.ensure_master"): "connection set-up only (ssh -N: no command)",
    ("harness/backends/ssh.py", "SshChannel.execute"): "called only by SshTarget._execute, behind the catalogue",
    ("harness/backends/ssh.py", "SshChannel.exit_master"): "closes the kit's own master connection (ssh -O exit)",
    ("harness/vantage.py", "SshVantage.ssh_argv"): "the vantage point: every command recorded in its transcript, "
                                                    "writes only in its own scratch folder",
    ("harness/vantage.py", "SshVantage.close"): "closes the vantage's own master connection (ssh -O exit)",
    ("harness/vm/ssh.py", "SshEndpoint.argv"): "a vm the kit built itself (the vm lab), never an existing host",
    ("harness/vm/ssh.py", "SshEndpoint.master_alive"): "asks the kit's own master connection to a lab vm (-O check)",
    ("harness/vm/ssh.py", "SshEndpoint.start_master"): "connection set-up to a lab vm only (ssh -N: no command)",
    ("harness/vm/ssh.py", "SshEndpoint.stop_master"): "closes the kit's own master connection (ssh -O exit)",
    ("harness/lab_hosts.py", "_give_access"): "reads the host key of a lab host the kit built (`lab up`)",
}


def _starts(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of every list literal whose first item names a remote program, and of every
    string constant that starts with one followed by a space (a command line for a shell)."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, where: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = [*where, child.name]
            if isinstance(child, ast.List) and child.elts and isinstance(child.elts[0], ast.Constant) and \
                    child.elts[0].value in REMOTE_PROGRAMS:
                found.append((".".join(where), child.lineno))
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and \
                    child.value.split(" ", 1)[0] in REMOTE_PROGRAMS and " " in child.value and \
                    not child.value.endswith((")", ".")) and len(child.value.split()) > 2 and \
                    child.value.split()[1].startswith("-"):
                found.append((".".join(where), child.lineno))
            visit(child, inner)
    visit(tree, [])
    return found


def test_every_way_onto_another_machine_passes_a_known_gate() -> None:
    seen: dict[tuple[str, str], int] = {}
    for path in sorted(HARNESS.rglob("*.py")):
        module = str(path.relative_to(HARNESS.parent))
        for where, line in _starts(ast.parse(path.read_text(), str(path))):
            seen[(module, where)] = line
    unknown = {f"{m}:{line} ({w or 'module level'})" for (m, w), line in seen.items() if (m, w) not in KNOWN}
    assert not unknown, f"ssh/scp started outside a known gate: {sorted(unknown)}"
    stale = set(KNOWN) - set(seen)
    assert not stale, f"listed but no longer starting ssh (remove them from KNOWN): {sorted(stale)}"


def test_the_channel_is_used_only_behind_the_targets_gate() -> None:
    """SshChannel.execute sends whatever it is given: only SshTarget._execute may call it, and that is reached
    from send_argv (the catalogue) or from _send, which refuses without --allow-mutation."""
    callers = []
    for path in sorted(HARNESS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "execute" \
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "channel":
                callers.append(f"{path.relative_to(HARNESS.parent)}:{node.lineno}")
    assert len(callers) == 1 and callers[0].startswith("harness/backends/ssh.py:"), callers
    source = (HARNESS / "backends" / "ssh.py").read_text()
    send = source[source.index("    def _send(self"):source.index("    def send_argv(")]
    assert "if not self.channel.allow_mutation:\n            raise self._refuse(" in send
