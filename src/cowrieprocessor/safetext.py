"""Printing attacker-controlled text without letting it act on the terminal.

Commands, usernames and client versions may carry ANSI escape sequences, NUL, carriage
returns and lone surrogates. :func:`printable` returns a one-line string in which every
such character is shown as a visible escape (``\\x1b``, ``\\x00``, ``\\ud800``, ``\\n``),
so a terminal, a log file or a Markdown report shows the text but never obeys it.
"""

from __future__ import annotations

import unicodedata

from cowrieprocessor.db.textrule import decode_text

# Categories shown as escapes: controls, format characters (bidi overrides), surrogates,
# private use (our own storage escape), unassigned, and line/paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(value: str | None, *, limit: int | None = None, stored: bool = True) -> str:
    """Return ``value`` safe to print on one line.

    ``stored`` means the text comes from the database and is decoded from the storage
    rule first, so a stored NUL prints as ``\\x00``. ``limit`` cuts long text and says so.
    """
    if value is None:
        return ""
    text = decode_text(value) if stored else value
    if limit is not None and len(text) > limit:
        text = text[:limit]
        suffix = f"... [{len(value) - limit} more characters]"
    else:
        suffix = ""
    if text.isascii() and text.isprintable():
        return text.replace("\\", "\\\\") + suffix if "\\" in text else text + suffix
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES:
            code = ord(char)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out) + suffix
