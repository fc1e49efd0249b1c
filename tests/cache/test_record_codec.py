"""The record (an entry as JSON) round-trips any text, for every backend that writes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowrieprocessor.enrichment.cache import (
    CacheEntry,
    decode_record,
    encode_record,
    entry_from_record,
    entry_to_record,
)
from cowrieprocessor.enrichment.outcome import Outcome, Status

# Every code point, lone surrogates and NUL included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=5),
    max_leaves=12,
)
MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(
    key=ANY_TEXT,
    data=st.none() | st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=6),
    message=st.none() | ANY_TEXT,
    found=st.booleans(),
    stored_at=MOMENTS,
    latency=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_any_entry_roundtrips_through_its_record(
    key: str,
    data: dict[str, Any] | None,
    message: str | None,
    found: bool,
    stored_at: datetime,
    latency: int | None,
) -> None:
    status = Status.SUCCESS if found else Status.NOT_FOUND
    outcome = Outcome(
        "virustotal",
        key,
        status,
        data=data,
        message=message,
        checked_at=stored_at,
        latency_ms=latency,
    )
    entry = CacheEntry("virustotal", key, outcome, stored_at, stored_at + timedelta(days=3))

    raw = encode_record(entry_to_record(entry))

    assert entry_from_record(decode_record(raw)) == entry
    assert json.loads(raw) == entry_to_record(entry)


def test_records_with_lone_surrogates_are_ascii_json() -> None:
    raw = encode_record({"k": "\ud800", "\udc00": 1})

    assert raw == b'{"k":"\\ud800","\\udc00":1}'
    assert decode_record(raw) == {"k": "\ud800", "\udc00": 1}


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", b'{"a": "\\ud800"', b"nul\x00"])
def test_decode_record_raises_value_error_on_damage(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_record(raw)


def test_encode_record_refuses_values_that_are_not_json() -> None:
    with pytest.raises(TypeError):
        encode_record({"when": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        encode_record({"set": {1, 2}})
