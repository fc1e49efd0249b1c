from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowrieprocessor.db.textrule import (
    ESCAPE,
    decode_json,
    decode_text,
    encode_json,
    encode_text,
    line_may_need_rule,
)


@pytest.mark.parametrize(
    ("original", "stored"),
    [
        ("system\x00", "system" + ESCAPE + "0"),
        ("\ud83d", ESCAPE + "sD83D"),
        (ESCAPE, ESCAPE + "e"),
        ("plain \\x00 text", "plain \\x00 text"),
        ("Admin\t\t", "Admin\t\t"),
        ("andžejs", "andžejs"),
    ],
)
def test_encode_known_values(original: str, stored: str) -> None:
    assert encode_text(original) == stored
    assert decode_text(stored) == original


# Every code point, surrogates and NUL included, with the rule's own marks mixed in.
_ANY_CHAR = st.characters(exclude_categories=()) | st.sampled_from(
    ["\x00", "\ud800", ESCAPE, "0", "s"]
)


@given(st.text(alphabet=_ANY_CHAR))
def test_roundtrip_any_text(value: str) -> None:
    stored = encode_text(value)
    assert "\x00" not in stored
    stored.encode("utf-8")  # no lone surrogates remain
    assert decode_text(stored) == value


def test_json_keys_and_nested_values_are_encoded() -> None:
    value = {"k\x00": ["a\x00", {"\ud800": 1}], "n": None}
    stored = encode_json(value)
    assert stored == {"k" + ESCAPE + "0": ["a" + ESCAPE + "0", {ESCAPE + "sD800": 1}], "n": None}
    assert decode_json(stored) == value


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"a":"plain"}', False),
        (b'{"a":"\\u00e9"}', False),
        (b'{"a":"x\\u0000"}', True),
        (b'{"a":"\\uD83D"}', True),
        ('{"a":"\ue000"}'.encode(), True),
    ],
)
def test_line_precheck(line: bytes, expected: bool) -> None:
    assert line_may_need_rule(line) is expected
