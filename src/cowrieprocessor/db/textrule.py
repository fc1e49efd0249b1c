"""The one reversible rule for text that a database cannot store.

PostgreSQL rejects U+0000 in ``text`` and ``jsonb``; neither PostgreSQL nor Python's
``sqlite3`` can encode a lone UTF-16 surrogate (U+D800..U+DFFF) as UTF-8. Attackers put
both into usernames, passwords, commands and TLS garbage logged as client versions, so
every string written to either database goes through :func:`encode_text` first and every
string read back may go through :func:`decode_text` to get the original.

The rule uses U+E000 (first code point of the Private Use Area) as an escape mark:

==============================  ==========================
original                        stored
==============================  ==========================
U+0000                          U+E000 ``0``
lone surrogate U+Dxxx           U+E000 ``s`` + 4 hex digits (upper case)
U+E000 itself                   U+E000 ``e``
==============================  ==========================

Everything else is stored unchanged, so ordinary text (including literal ``\\x00``
escape *text*, CJK, tabs and other control characters) reads the same in SQL. The rule
is applied identically on SQLite and PostgreSQL, so both databases hold the same rows.
JSON object keys are encoded like any other string.
"""

from __future__ import annotations

import re
from typing import Any

ESCAPE = "\ue000"
_ESCAPE_BYTES = ESCAPE.encode("utf-8")

# A code point that needs the rule: NUL, any surrogate, or the escape mark itself.
_NEEDS_RULE = re.compile("[\x00\ud800-\udfff\ue000]")
_ENCODED = re.compile(ESCAPE + "(?:(0)|(e)|s([0-9A-F]{4}))")


def _encode_match(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\x00":
        return ESCAPE + "0"
    if char == ESCAPE:
        return ESCAPE + "e"
    return f"{ESCAPE}s{ord(char):04X}"


def _decode_match(match: re.Match[str]) -> str:
    if match.group(1):
        return "\x00"
    if match.group(2):
        return ESCAPE
    return chr(int(match.group(3), 16))


def encode_text(value: str) -> str:
    """Return ``value`` in its storable form (see the module docstring)."""
    if _NEEDS_RULE.search(value) is None:
        return value
    return _NEEDS_RULE.sub(_encode_match, value)


def decode_text(value: str) -> str:
    """Invert :func:`encode_text`. A stray escape mark not followed by a code is kept."""
    if ESCAPE not in value:
        return value
    return _ENCODED.sub(_decode_match, value)


def encode_json(value: Any) -> Any:
    """Apply :func:`encode_text` to every string and object key inside a JSON value."""
    if isinstance(value, str):
        return encode_text(value)
    if isinstance(value, dict):
        return {encode_text(k): encode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encode_json(v) for v in value]
    return value


def decode_json(value: Any) -> Any:
    """Invert :func:`encode_json`."""
    if isinstance(value, str):
        return decode_text(value)
    if isinstance(value, dict):
        return {decode_text(k): decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_json(v) for v in value]
    return value


def line_may_need_rule(line: bytes) -> bool:
    """Cheap pre-check on a raw JSON line: False means no decoded string can need the rule.

    In JSON text, NUL and surrogates can only appear as ``\\u`` escapes (a raw NUL byte is
    not valid JSON, and the file is UTF-8), and U+E000 either as its UTF-8 bytes or as an
    escape. The check may say True for text that turns out not to need the rule (for
    example an escaped backslash followed by ``u0000``); the caller then walks the value.
    """
    # Single byte values are found fast; most lines hold no backslash, NUL or 0xEE at all.
    if 92 not in line and 0 not in line and 0xEE not in line:
        return False
    if b"\\u" not in line and b"\x00" not in line:
        return _ESCAPE_BYTES in line
    lowered = line.lower()
    return (
        b"\\u0000" in lowered
        or b"\\ud" in lowered
        or b"\\ue000" in lowered
        or b"\x00" in line
        or _ESCAPE_BYTES in line
    )
