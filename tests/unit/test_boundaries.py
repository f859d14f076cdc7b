"""Production code, local emulation and test harness stay apart, and each package's public names
are declared once: checked on the source, with a mutation each to show the check can fail."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.unit.test_structure import PACKAGE, _module

NOT_PRODUCTION = ("tq_cloud.local", "tq_cloud.simulation", "tq_cloud.testing", "tq_cloud.examples",
                  "tq_cloud.scaffold", "tq_cloud.cli", "tq_cloud.console", "tq_cloud.demo", "tq_cloud.__main__")
"""What a deployed function never runs: the local runtime, the simulator, the testing tools, the
example app, the scaffold, the command line and the web console."""
FORBIDDEN_EVERYWHERE = ("functions", "tests", "benchmarks")


def _inside(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def boundary_violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        production = not _inside(module, NOT_PRODUCTION)
        for target in sorted(_imports(path)):
            if _inside(target, FORBIDDEN_EVERYWHERE):
                found.append(f"{module} imports {target}")
            elif production and _inside(target, NOT_PRODUCTION):
                found.append(f"{module} (production) imports {target}")
        source = path.read_text()
        if production and "emulate" in source:
            found.append(f"{module} (production) has an emulation switch")
    return found


def test_production_code_imports_no_emulation_example_or_test_harness() -> None:
    assert boundary_violations() == []


def test_the_boundary_check_finds_each_kind_of_violation(tmp_path: Path) -> None:
    package = tmp_path / "tq_cloud"
    (package / "backends").mkdir(parents=True)
    (package / "local").mkdir()
    (package / "backends" / "timer.py").write_text("from tq_cloud.local.scheduler import EmulatedScheduler\n"
                                                   "emulate_firing = True\n")
    (package / "local" / "runtime.py").write_text("import tests.chaos\nfrom tq_cloud.backends import timer\n")
    assert boundary_violations(package) == [
        "tq_cloud.backends.timer (production) imports tq_cloud.local.scheduler",
        "tq_cloud.backends.timer (production) imports tq_cloud.local.scheduler.EmulatedScheduler",
        "tq_cloud.backends.timer (production) has an emulation switch",
        "tq_cloud.local.runtime imports tests.chaos",
    ]


def _declared(init: Path) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """`__all__`, the lazy map (name: module) and the TYPE_CHECKING imports (name: module)."""
    tree = ast.parse(init.read_text())
    names: set[str] = set()
    lazy: dict[str, str] = {}
    typed: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target == "__all__":
                names = set(ast.literal_eval(node.value))
            elif target == "_EXPORTS":
                lazy = ast.literal_eval(node.value)
        elif isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imported in node.body:
                assert isinstance(imported, ast.ImportFrom) and imported.module
                typed |= {alias.name: imported.module for alias in imported.names}
    return names, lazy, typed


def export_mismatches(init: Path) -> list[str]:
    names, lazy, typed = _declared(init)
    out = [f"{n}: in __all__, not in the lazy map" for n in sorted(names - set(lazy))]
    out += [f"{n}: in the lazy map, not in __all__" for n in sorted(set(lazy) - names)]
    out += [f"{n}: lazy from {lazy[n]}, typed from {typed.get(n)}" for n in sorted(lazy) if typed.get(n) != lazy[n]]
    out += [f"{n}: typed, not exported" for n in sorted(set(typed) - set(lazy))]
    return out


LAZY_PACKAGES = sorted(p for p in PACKAGE.rglob("__init__.py") if "lazy_exports" in p.read_text())


@pytest.mark.parametrize("init", LAZY_PACKAGES, ids=lambda p: str(p.parent.relative_to(PACKAGE.parent)))
def test_public_names_are_declared_once_and_resolve(init: Path) -> None:
    assert export_mismatches(init) == []
    package = importlib.import_module(_module(init, PACKAGE))
    for name in package.__all__:
        assert getattr(package, name) is getattr(importlib.import_module(_declared(init)[1][name]), name)


def test_the_export_check_finds_a_name_declared_twice_differently(tmp_path: Path) -> None:
    init = tmp_path / "__init__.py"
    init.write_text((PACKAGE / "__init__.py").read_text().replace('    "Task": "tq_cloud.domain.task",\n', "")
                    .replace('"ManualClock": "tq_cloud.clock"', '"ManualClock": "tq_cloud.domain.task"'))
    assert export_mismatches(init) == ["Task: in __all__, not in the lazy map",
                                       "ManualClock: lazy from tq_cloud.domain.task, typed from tq_cloud.clock",
                                       "Task: typed, not exported"]


def test_lazy_packages_are_found() -> None:
    assert {p.parent.name for p in LAZY_PACKAGES} == {"tq_cloud", "aws"}
