"""The lean record path: it accepts exactly what the full checks accept, with equal entries.

:func:`~cowrieprocessor.enrichment.cache.record.entry_from_record` takes a lean path for
records in the shape the code writes and the full checks for anything else. These tests
hold the two side by side on generated records and on records damaged one field at a
time, and check that the database cache still names the reason when it meets a damaged
row, and that ``get_many`` and ``get_cached`` give the same entries on both databases.
"""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from cowrieprocessor.enrichment.cache import CacheEntry, ManualClock, entry_to_record
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.record import (
    _checked_entry,
    entry_from_record,
    lean_entry,
)
from cowrieprocessor.enrichment.cache.rows import dump_payload, key_hash, load_payload
from cowrieprocessor.enrichment.outcome import Outcome, Status

from .conftest import T0

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=10,
)
MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
SERVICES = st.sampled_from(["dshield", "virustotal", "spur", "hibp", "s3_x"])
ENTRIES = st.builds(
    lambda service, key, data, message, found, http, stored, latency: CacheEntry(
        service,
        key,
        Outcome(
            service,
            key,
            Status.SUCCESS if found else Status.NOT_FOUND,
            data=data,
            http_status=http,
            message=message,
            checked_at=stored,
            latency_ms=latency,
        ),
        stored,
        stored + timedelta(days=2),
    ),
    SERVICES,
    ANY_TEXT,
    st.none() | st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=5),
    st.none() | ANY_TEXT,
    st.booleans(),
    st.none() | st.integers(min_value=100, max_value=599),
    MOMENTS,
    st.none() | st.integers(min_value=0, max_value=10**6),
)

#: Values a damaged or foreign record might hold where another belongs.
ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2**70,
    "",
    "x",
    "Z",
    "DShield",
    "dshield",
    "error",
    "skipped",
    "success",
    "not_found",
    "timeout",
    "2026-12-03T17:00:00",
    "2026-12-03T17:00:00+02:00",
    "2026-12-03T17:00:00Z",
    "2026-13-03T17:00:00Z",
    [],
    ["success"],
    {},
    {"a": 1},
]
RECORD_FIELDS = ["format", "service", "key", "stored_at", "expires_at", "latency_ms", "outcome"]
ENVELOPE_FIELDS = [
    "v",
    "service",
    "key",
    "status",
    "reason",
    "http_status",
    "message",
    "checked_at",
    "data",
]
_GONE = object()


def assert_same_entry(left: CacheEntry, right: CacheEntry) -> None:
    """Equal field by field, with the same types and the same time zones."""
    assert left == right
    for name in ("service", "key", "stored_at", "expires_at"):
        assert type(getattr(left, name)) is type(getattr(right, name)), name
    for time_name in ("stored_at", "expires_at"):
        assert getattr(left, time_name).utcoffset() == getattr(right, time_name).utcoffset()
    for name in (
        "service",
        "key",
        "status",
        "reason",
        "data",
        "http_status",
        "message",
        "checked_at",
        "latency_ms",
    ):
        a, b = getattr(left.outcome, name), getattr(right.outcome, name)
        assert (a, type(a)) == (b, type(b)), name
    assert left.outcome.checked_at.tzinfo == right.outcome.checked_at.tzinfo


@settings(max_examples=200, deadline=None)
@given(entry=ENTRIES)
def test_the_lean_path_takes_every_written_record_and_agrees(entry: CacheEntry) -> None:
    record = entry_to_record(entry)

    lean = lean_entry(copy.deepcopy(record))

    assert lean is not None
    assert_same_entry(lean, _checked_entry(copy.deepcopy(record)))
    assert_same_entry(lean, entry)


@settings(max_examples=600, deadline=None)
@given(
    entry=ENTRIES,
    in_envelope=st.booleans(),
    record_field=st.sampled_from(RECORD_FIELDS),
    envelope_field=st.sampled_from(ENVELOPE_FIELDS),
    value=st.sampled_from([*ODD_VALUES, _GONE]),
)
def test_a_damaged_record_gets_the_same_verdict_and_reason(
    entry: CacheEntry, in_envelope: bool, record_field: str, envelope_field: str, value: Any
) -> None:
    record = entry_to_record(entry)
    target = record["outcome"] if in_envelope else record
    name = envelope_field if in_envelope else record_field
    if value is _GONE:
        target.pop(name, None)
    else:
        target[name] = copy.deepcopy(value)

    reason = None
    try:
        expected = _checked_entry(copy.deepcopy(record))
    except ValueError as exc:
        reason = str(exc)
    if reason is not None:
        # Rejected by the full checks: the lean path must not accept it, and the public
        # function gives the same reason as before.
        assert lean_entry(copy.deepcopy(record)) is None
        with pytest.raises(ValueError) as raised:
            entry_from_record(copy.deepcopy(record))
        assert str(raised.value) == reason
        return
    lean = lean_entry(copy.deepcopy(record))
    if lean is not None:
        assert_same_entry(lean, expected)
    assert_same_entry(entry_from_record(copy.deepcopy(record)), expected)


def test_records_that_are_not_objects_keep_their_reason() -> None:
    for record in ([], "x", 5, None):
        with pytest.raises(ValueError, match="must be a JSON object"):
            entry_from_record(record)


# -- in the database ----------------------------------------------------------------------


def _write_payload(engine: Engine, service: str, key: str, payload: str) -> None:
    value = "CAST(:p AS jsonb)" if engine.dialect.name == "postgresql" else ":p"
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE enrichment_cache SET payload = {value} WHERE cache_key_hash = :h"),
            {"p": payload, "h": key_hash(key)},
        )


DAMAGE = [
    ('"latency_ms":80', '"latency_ms":"80"', "latency_ms must be an integer or null"),
    ('"status":"success"', '"status":"error"', "a error outcome needs a reason"),
    ('"format":1', '"format":2', "unknown cache record format 2"),
    ('"stored_at":"', '"stored_at":"x', "Invalid isoformat string"),
]


@pytest.mark.parametrize(("good", "bad", "reason"), DAMAGE)
def test_a_damaged_row_is_a_miss_with_its_reason(
    engine: Engine, good: str, bad: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=ManualClock(T0))
    outcome = Outcome("dshield", "192.0.2.7", Status.SUCCESS, data={"a": 1}, latency_ms=80)
    entry = cache.store_cached(outcome)
    payload = dump_payload(entry, jsonb=False)
    assert good in payload
    _write_payload(engine, "dshield", "192.0.2.7", payload.replace(good, bad))

    with caplog.at_level(logging.WARNING, logger="cowrieprocessor.enrichment.cache.database"):
        assert cache.get_cached("dshield", "192.0.2.7") is None
        assert cache.get_many("dshield", ["192.0.2.7"]) == {}
    cache.close()

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    for message in warnings:
        assert "unreadable dshield entry" in message
        assert reason in message


def _varied_outcomes() -> list[Outcome]:
    at = T0 - timedelta(hours=1)
    return [
        Outcome("dshield", "192.0.2.1", Status.SUCCESS, data={"z": 1, "a": [1, {"y": 2, "b": 3}]}),
        Outcome("dshield", "k\x00\ud800é", Status.NOT_FOUND, message="no\x00such", checked_at=at),
        Outcome("dshield", "big", Status.SUCCESS, data={"n": 2**70, "f": 1e300, "m": -0.5}),
        Outcome("dshield", "x" * 3000, Status.SUCCESS, data=None, http_status=204, latency_ms=9),
        Outcome("dshield", "", Status.SUCCESS, data={"\ue000": "\ue000\x00", "": None}),
    ]


def test_get_many_gives_what_get_cached_gives(engine: Engine) -> None:
    cache = EnrichmentDatabaseCache(engine, clock=ManualClock(T0))
    outcomes = _varied_outcomes()
    stored = {o.key: cache.store_cached(o) for o in outcomes}
    keys = [o.key for o in outcomes]

    many = cache.get_many("dshield", [*keys, "absent"])
    one = {key: cache.get_cached("dshield", key) for key in keys}
    cache.close()

    assert sorted(many) == sorted(keys)
    for key in keys:
        single = one[key]
        assert single is not None
        assert_same_entry(many[key], single)
        assert_same_entry(many[key], stored[key])


@pytest.mark.parametrize("hints", [[[0, [1, 1]]], [[0, [0, 5]]], [["x", [1, 0]]], [[0]], [5]])
def test_a_malformed_key_order_is_a_bad_payload(hints: Any) -> None:
    entry = CacheEntry(
        "dshield",
        "192.0.2.3",
        Outcome("dshield", "192.0.2.3", Status.SUCCESS, data={"b": 1, "a": 2}, checked_at=T0),
        T0,
        T0 + timedelta(days=1),
    )
    record = entry_to_record(entry)
    record["key_order"] = hints

    with pytest.raises(ValueError, match="malformed key_order"):
        load_payload(orjson.dumps(record))


def test_key_order_puts_nested_objects_back_in_place() -> None:
    data = {"z": {"y": 1, "b": [{"d": 1, "c": 2}]}, "a": [[{"q": 1, "p": 2}]]}
    entry = CacheEntry(
        "dshield",
        "k",
        Outcome("dshield", "k", Status.SUCCESS, data=data, checked_at=T0),
        T0,
        T0 + timedelta(days=1),
    )
    payload = dump_payload(entry, jsonb=True)
    # What JSONB gives back: keys by length, then bytes; for one-letter keys, sorted.
    as_jsonb = json.dumps(json.loads(payload), sort_keys=True)

    loaded = load_payload(as_jsonb)

    assert loaded == entry
    assert json.dumps(loaded.outcome.data) == json.dumps(data)
