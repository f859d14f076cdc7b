"""Text from task data on an operator's terminal: ids, types, errors and payloads are written by
whoever adds tasks, and a control character among them (an escape sequence, a carriage return,
a bidirectional override) could move the cursor, rewrite earlier lines or forge an outcome row.
Every such character is shown as an escape instead (`\\x1b`, `\\r`, `\\u202e`)."""

from __future__ import annotations

import re
from typing import Any, TextIO

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every control and bidi-override character escaped (tabs kept; newlines too
    with `keep_newlines`, for a whole table written at once).

    Example:
        print(f"failed {escape_controls(task.key)}")
    """
    def escaped(match: re.Match[str]) -> str:
        char = match.group()
        return repr(char)[1:-1] if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    escaped_text = _CONTROL.sub(escaped, text)
    return escaped_text if keep_newlines else escaped_text.replace("\n", "\\n")


class SafeTerminal:
    """A text stream that escapes control characters in everything written to it except the
    newlines that end lines: wrap sys.stdout and sys.stderr once, and every line printed is safe.

    Example:
        sys.stdout = SafeTerminal(sys.stdout)
    """

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(escape_controls(text, keep_newlines=True))
        return len(text)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)
