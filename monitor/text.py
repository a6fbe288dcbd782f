"""Text from input files, made safe for where it goes.

Run names, metric names, messages and paths come from files anyone may have written.
`printable` escapes what a terminal would act on (ESC sequences that clear the screen or set
the window title, CR that overwrites a line, newlines that forge output lines, BEL); every
name, message or path that reaches a terminal goes through it. `utf8_text` replaces lone
surrogates (JSON's `"\\ud800"` decodes to one) that cannot be encoded, so a name can always
be written out as UTF-8 (a chart, a web page, a log).
"""

from __future__ import annotations

import re
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` with every control or otherwise non-printable character written as an escape
    (\\x1b, \\n, \\u202e, …): safe to print to a terminal, and still readable."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def utf8_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD, so it encodes as UTF-8."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def utf8_strings(value: Any) -> Any:
    """A decoded JSON document with `utf8_text` applied to every key and string in it."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {utf8_strings(k): utf8_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [utf8_strings(v) for v in value]
    return value
