"""The documentation's code runs: every ```python block of the README and of docs/, a page's
blocks in order in one namespace (a page builds its example up), with top-level `await` as in
a notebook. A page that talks to AWS gets fresh resources on moto's server through the TQ_*
variables a deployed app reads. And every public name has a docstring with an example."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import tq_cloud

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


async def run_blocks(page: Path, blocks: list[str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for number, code in enumerate(blocks, 1):
        compiled = compile(code, f"{page.name} (block {number})", "exec",
                           flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, namespace)  # the documentation's own code
        if inspect.iscoroutine(result):
            await result
    return namespace


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
async def test_the_code_of_a_page_runs(page: Path, request: pytest.FixtureRequest,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page)
    if any("aws_stack" in code for code in blocks):
        from tests.aws_support import aws_resources, fresh_settings, tq_variables

        settings = fresh_settings(request.getfixturevalue("moto_endpoint"))
        async with aws_resources(settings):
            for name, value in tq_variables(settings).items():
                monkeypatch.setenv(name, value)
            await run_blocks(page, blocks)
        return
    await run_blocks(page, blocks)


async def test_a_failing_sample_fails_the_check(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n```python\nassert x == 2, 'the sample is wrong'\n```\n")
    with pytest.raises(AssertionError, match="the sample is wrong"):
        await run_blocks(page, python_blocks(page))


PUBLIC = ("tq_cloud", "tq_cloud.aws_lambda", "tq_cloud.testing", "tq_cloud.backends.aws", "tq_cloud.backends.memory")
"""The packages whose `__all__` is the public API."""


def undocumented(module: Any, names: list[str]) -> list[str]:
    """Public names whose docstring lacks an example."""
    return [f"{module.__name__}.{name}" for name in names
            if "Example" not in (inspect.getdoc(getattr(module, name)) or "")]


@pytest.mark.parametrize("package", PUBLIC)
def test_every_public_name_has_a_docstring_with_an_example(package: str) -> None:
    module = importlib.import_module(package)
    assert undocumented(module, sorted(module.__all__)) == []


def test_the_docstring_check_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bare:
        """No example here."""

    monkeypatch.setattr(tq_cloud, "Bare", Bare, raising=False)
    assert undocumented(tq_cloud, ["Bare"]) == ["tq_cloud.Bare"]
