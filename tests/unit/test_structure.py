"""The package's shape: no import cycles between tq_cloud's modules (imports under
TYPE_CHECKING and inside functions count too: a cycle there is a cycle of knowledge)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tq_cloud"


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    modules = {_module(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue  # package re-exports are lazy (tq_cloud/lazy.py), not dependencies of the code
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name and not t.endswith("__init__")
                            and modules[t].name != "__init__.py"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_tq_cloud_has_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "tq_cloud"
    pkg.mkdir()
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tq_cloud.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from tq_cloud.a import A\n")
    assert find_cycle(import_graph(pkg)) == ["tq_cloud.a", "tq_cloud.b", "tq_cloud.a"]


@pytest.mark.parametrize(("when", "expected"), [
    (datetime(2026, 1, 1, 0, 0, 5, 1, tzinfo=UTC), "at(2026-01-01T00:00:06)"),
    (datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), "at(2026-01-01T00:00:05)"),
])
def test_eventbridge_at_times_round_up_never_early(when: datetime, expected: str) -> None:
    from tq_cloud.backends.aws.scheduler import _at

    assert _at(when) == expected
