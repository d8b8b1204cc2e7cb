"""The code's structure, as the design requires it: no import cycle between harness packages, and no
comparison with a backend's name outside the backend modules and the registry (everything else asks for a
capability)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"
SCHEMES = {"docker", "vm", "ssh"}
# where such names are the module's own registry: the backends, and the vantage points (whose kinds are not
# backends: a vantage `ssh://` is the machine checks look from)
OWN_NAMES = {"backends", "vantage"}


def _unit(path: Path) -> str:
    """A package directly under harness/ (harness/lab/...) or a top-level module (harness/run.py)."""
    rel = path.relative_to(HARNESS)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):  # lazy imports inside functions count too: a cycle is a cycle
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    units = {_unit(p) for p in HARNESS.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in HARNESS.rglob("*.py"):
        source = _unit(path)
        for name in _imports(ast.parse(path.read_text())):
            parts = name.split(".")
            if parts[0] == "harness" and len(parts) > 1 and parts[1] in units and parts[1] != source:
                edges[source].add(parts[1])
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle_between_harness_packages() -> None:
    edges = _graph()
    assert edges, "no imports found: the scan is broken"
    assert "lab" in edges.get("backends", set()), "the scan misses a known edge (backends -> lab)"
    cycles = _cycles(edges)
    assert not cycles, "import cycles between harness packages: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _name_comparisons(tree: ast.AST) -> list[int]:
    """Lines comparing something with a backend name (`x == "vm"`, `x in ("docker", "vm")`, match cases)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) else [operand]
                if any(isinstance(v, ast.Constant) and v.value in SCHEMES for v in values):
                    lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value in SCHEMES:
            lines.append(node.lineno)
    return lines


def test_no_backend_name_comparison_outside_the_backends() -> None:
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        if _unit(path) in OWN_NAMES:
            continue
        where = path.relative_to(HARNESS.parent)
        offenders += [f"{where}:{line}" for line in _name_comparisons(ast.parse(path.read_text()))]
    assert not offenders, "compare a capability, not a backend name: " + ", ".join(offenders)


def test_the_name_scan_sees_a_comparison() -> None:
    assert _name_comparisons(ast.parse('if lab.backend == "vm":\n    pass\n')) == [1]
    assert _name_comparisons(ast.parse('ok = kind in ("docker", "vm")\n')) == [1]
    assert _name_comparisons(ast.parse('ok = lab.has(Capability.REBOOT)\n')) == []

