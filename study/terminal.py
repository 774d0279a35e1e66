"""Text headed for a terminal: control characters in data shown, never obeyed.

A field of the results database (a host name, a study name written by another tool, an
error message) may hold a newline, which would break a table row in two, or an escape
sequence, which a terminal would act on. `printable` writes each such character as a
visible escape (`\\n`, `\\t`, `\\x1b`); everything else, any script, passes unchanged.
"""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_TABLE = {
    code: _ESCAPES.get(chr(code), f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in _CONTROL
}


def printable(text: str) -> str:
    """`text` with its control characters (C0, DEL, C1, line/paragraph separators) escaped."""
    return text.translate(_TABLE)
