"""`tq-cloud new NAME`: a name that would not import as the app's package is refused in one
line, before anything is written; the project has the SAM shape (functions/ beside the app)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tq_cloud.cli import main
from tq_cloud.scaffold import create_project

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["import", "class", "json", "tq_cloud", "Billing", "9lives", "a-b"])
def test_a_name_that_cannot_be_the_apps_package_is_one_line(name: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", name, "--directory", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tq-cloud new: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing is written"


def test_every_python_file_of_a_project_compiles(tmp_path: Path) -> None:
    folder = create_project("billing", tmp_path)
    for path in folder.rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path))
    for function in ("worker", "sweeper"):
        assert (folder / "functions" / function / "handler.py").read_text() == \
            (ROOT / "functions" / function / "handler.py").read_text()


def test_the_keyword_check_is_what_stops_a_keyword(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the check, `import` scaffolds tests that do not compile."""
    import keyword

    monkeypatch.setattr(keyword, "iskeyword", lambda _: False)
    create_project("import", tmp_path)                    # no longer refused ...
    with pytest.raises(SyntaxError):                      # ... and its tests do not compile
        ast.parse((tmp_path / "import" / "tests" / "test_tasks.py").read_text())


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tq-cloud ... | head`: the pipe closes under the command; it ends with 0, no traceback
    (and the command itself, without main's handling, would have raised)."""
    import contextlib
    import os
    import sys

    from tq_cloud.cli import _run, build_parser

    def closed_pipe() -> Any:
        read, write = os.pipe()
        os.close(read)                               # the reader has gone, as head does
        return open(write, "w", buffering=1)         # line-buffered: each line goes out as printed

    first, second = closed_pipe(), closed_pipe()
    try:
        monkeypatch.setattr(sys, "stdout", first)
        with pytest.raises(BrokenPipeError):
            _run(build_parser(), ["new", "first", "--directory", str(tmp_path)])
        monkeypatch.setattr(sys, "stdout", second)
        assert main(["new", "second", "--directory", str(tmp_path)]) == 0
    finally:
        monkeypatch.undo()
        for stream in (first, second):
            with contextlib.suppress(BrokenPipeError):  # what the first still holds cannot go out
                stream.close()
