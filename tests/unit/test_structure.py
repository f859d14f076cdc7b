"""The package's shape: no import cycles between tq_cloud's modules, and every import points
down the layers (imports under TYPE_CHECKING and inside functions count too: a cycle or an
upward import there is still knowledge the lower module should not have).

    ground    tq_cloud.domain, errors, clock, ids, lazy   the vocabulary: tasks, statuses, outcomes, errors
    ports     tq_cloud.ports                             what the engine needs of a backend
    core      tq_cloud.core                              the pipeline: route, run, commit
    features  flows, projections, lifecycle, schedules,  plug commit steps, built-in executors,
              flow_control, asynctasks, tracing          admission and spans into the pipeline
    top       assembly, backends, aws_lambda, local, ... put a handler together, adapt it to AWS

A feature may use another (a flow's join feeds a projection), never the assembly or an adapter."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tq_cloud"


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GROUND = {"domain", "errors", "clock", "ids", "lazy"}
FEATURES = {"flows", "projections", "lifecycle", "schedules", "flow_control", "asynctasks", "tracing"}
RANK = {"ground": 0, "ports": 1, "core": 2, "features": 3, "top": 4}


def layer_of(module: str) -> str:
    """The layer of a `tq_cloud.…` module name."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    if head in GROUND:
        return "ground"
    if head == "ports":
        return "ports"
    if head == "core":
        return "core"
    if head in FEATURES:
        return "features"
    return "top"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every `tq_cloud` module a file imports, at any depth of its syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("tq_cloud")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("tq_cloud"):
                found.append((node.lineno, node.module))
    return found


def upward_imports(package: Path = PACKAGE) -> list[str]:
    """Each import from a module to a layer above its own, as `file:line: a -> b`."""
    wrong: list[str] = []
    for path in sorted(package.rglob("*.py")):
        source = _module(path, package)
        here = RANK[layer_of(source)]
        for line, target in imports_of(path):
            if RANK[layer_of(target)] > here:
                wrong.append(f"{path.relative_to(package.parent)}:{line}: {source} -> {target}")
    return wrong


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


def test_every_import_points_down_or_sideways() -> None:
    assert upward_imports() == []


def test_the_ports_speak_only_the_vocabulary() -> None:
    for path in sorted((PACKAGE / "ports").rglob("*.py")):
        assert {layer_of(target) for _, target in imports_of(path)} <= {"ground", "ports"}, path


@pytest.mark.parametrize(("where", "line"), [
    ("ports/storage.py", "from tq_cloud.core.runner import TaskRunner"),
    ("core/routing.py", "from tq_cloud.flows.starter import FlowStarter"),
    ("domain/task.py", "from tq_cloud.ports.storage import TaskStorage"),
    ("flows/starter.py", "from tq_cloud.assembly.handler import TaskHandler"),
])
def test_the_check_fails_on_an_upward_import(tmp_path: Path, where: str, line: str) -> None:
    """The checker can fail: a copy of the package with one import reversed is caught,
    including one hidden under `TYPE_CHECKING`."""
    copy = tmp_path / "tq_cloud"
    target = copy / where
    target.parent.mkdir(parents=True)
    target.write_text(f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    {line}\n")
    wrong = upward_imports(copy)
    assert len(wrong) == 1 and where in wrong[0]
