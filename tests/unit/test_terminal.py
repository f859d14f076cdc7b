"""Task data on an operator's terminal cannot move the cursor, rewrite lines or forge rows."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from tq_cloud.cli import main
from tq_cloud.local import terminal
from tq_cloud.local.outcomes import OutcomeLog

FORGED = "t1\r  executed   pay            t2\x1b[1A\x1b[2K\u202e"


def _printable(text: str) -> bool:
    return all(ch in "\n\t" or (ch.isprintable() and ch not in "\u202e") for ch in text)


async def test_outcome_lines_escape_task_data() -> None:
    out = io.StringIO()
    log = OutcomeLog(out)
    event = SimpleNamespace(task_type="x\x1b]0;title\x07", task_id=FORGED, attempt=1, reason="r\rforged",
                            timing=SimpleNamespace(processing_duration_ms=1.0))
    await log.on_task_cancelled(event)  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.count("\n") == 1 and _printable(text), "task data reached the terminal raw"
    assert "\\x1b" in text and "\\r" in text and "\\u202e" in text


def test_the_outcome_check_fails_without_escaping(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setattr("tq_cloud.local.outcomes.escape_controls", lambda text: text)
    with pytest.raises(AssertionError, match="raw"):
        asyncio.run(test_outcome_lines_escape_task_data())


def test_the_cli_escapes_everything_it_prints(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    def prints_task_data(args: object) -> int:
        print(f"failed {FORGED}")
        print(f"error {FORGED}", file=sys.stderr)
        return 0

    monkeypatch.setattr("tq_cloud.cli._demo", prints_task_data)
    assert main(["demo"]) == 0
    captured = capsys.readouterr()
    assert _printable(captured.out + captured.err) and captured.out.count("\n") == 1
    assert not isinstance(sys.stdout, terminal.SafeTerminal), "the streams are given back"


def test_safe_terminal_keeps_line_ends_only() -> None:
    out = io.StringIO()
    terminal.SafeTerminal(out).write("a\x1b[2J\r\nb\x00\n")
    assert out.getvalue() == "a\\x1b[2J\\r\nb\\x00\n"
