"""Integers beyond 64 bits in JSON: orjson reads them as floats, so the loader and the
cache take such text through the standard library, which keeps them exact.

Finding them is on hot paths (every loaded line, every cache row), so the test is a
cheap byte scan first; only text that passes it is looked at more closely.
"""

from __future__ import annotations

from typing import Any

# Digits become "0", everything else "x": a run of 19 zeros is a number orjson may not
# hold exactly (2**63 has 19 digits). bytes.translate and a substring test are much
# faster than a regular expression.
_DIGIT_CLASSES = bytes(ord("0") if 48 <= b <= 57 else ord("x") for b in range(256))
_LONG_DIGITS = b"0" * 19


def has_long_number(raw: bytes) -> bool:
    """Whether ``raw`` holds a run of 19 digits: maybe an integer orjson cannot hold."""
    return _LONG_DIGITS in raw.translate(_DIGIT_CLASSES)


def holds_float(value: Any) -> bool:
    """Whether a parsed JSON value holds a float anywhere (orjson's reading of a long
    integer is one)."""
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        return any(holds_float(v) for v in value.values())
    if kind is list:
        return any(holds_float(v) for v in value)
    return False
