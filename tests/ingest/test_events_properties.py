"""Property-based tests for the event parser (hypothesis)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cowrieprocessor.db.textrule import ESCAPE, decode_json
from cowrieprocessor.ingest.events import EventError, ParsedEvent, parse_line

# Any code point, with the awkward ones (NUL, lone surrogates, the rule's own escape
# mark, control characters, non-BMP) drawn often.
_AWKWARD = st.sampled_from(["\x00", "\ud800", "\udfff", ESCAPE, "\t", "\n", "\\", '"', "𝄞"])
_TEXT = st.text(alphabet=st.characters(exclude_categories=()) | _AWKWARD, max_size=12)

# JSON scalars as orjson reads them: 64-bit integers, finite floats.
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=8,
)
_OBJECTS = st.dictionaries(_TEXT, _JSON, max_size=5)

# Event-shaped objects, so the field extraction runs on hostile values too.
# fmt: off
_EVENT_KEYS = st.sampled_from(
    [
        "eventid", "timestamp", "session", "sensor", "src_ip", "protocol", "system",
        "username", "password", "input", "version", "hassh", "duration", "duration_ms",
        "shasum", "url", "outfile", "destfile", "filename", "dst_ip",
    ]
)
# fmt: on
# fmt: off
_EVENTIDS = st.sampled_from(
    [
        "cowrie.session.closed", "cowrie.login.failed", "cowrie.login.success",
        "cowrie.command.input", "cowrie.session.file_download",
        "cowrie.session.file_download.failed", "cowrie.session.file_upload",
        "cowrie.client.version", "KIPP0012", "cowrie.unknown",
    ]
)
# fmt: on
_EVENT_OBJECTS = st.builds(
    lambda eventid, fields: {"eventid": eventid, **fields},
    _EVENTIDS,
    st.dictionaries(_EVENT_KEYS, _TEXT | _SCALARS | _JSON, max_size=8),
)


def _reversed_keys(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


def _has_surrogate(value: Any) -> bool:
    text = json.dumps(value, ensure_ascii=False)
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _serialisations(value: dict[str, Any]) -> list[bytes]:
    """Several byte-different writings of the same JSON object."""
    forms = [
        json.dumps(value, separators=(",", ":")).encode(),
        json.dumps(_reversed_keys(value), separators=(", ", ": ")).encode(),
        json.dumps(value, sort_keys=True, indent=2).replace("\n", " ").encode(),
        b"  " + json.dumps(value).encode() + b"\r\n",
    ]
    if not _has_surrogate(value):
        # Raw UTF-8 instead of \u escapes; impossible for lone surrogates.
        forms.append(json.dumps(_reversed_keys(value), ensure_ascii=False).encode())
    return forms


@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff")
@example(b'{"a": "\\ud800"')
@example(b'{"timestamp": "9999-12-31T23:59:59-01:00"}')
@example(b'{"eventid": "cowrie.session.closed", "duration_ms": 1e308}')
def test_arbitrary_bytes_raise_only_event_error(data: bytes) -> None:
    try:
        outcome: object = parse_line(data)
    except EventError as exc:
        outcome = exc.reason
    assert isinstance(outcome, ParsedEvent) or outcome in {
        "invalid_json",
        "not_an_object",
        "invalid_utf8",
        "empty_line",
    }


@given(_EVENT_OBJECTS, st.binary(max_size=8), st.integers(min_value=0, max_value=400))
def test_damaged_event_lines_raise_only_event_error(
    value: dict[str, Any], noise: bytes, position: int
) -> None:
    line = json.dumps(value).encode()
    damaged = line[:position] + noise + line[position:]
    try:
        event = parse_line(damaged)
    except EventError:
        return
    assert isinstance(event, ParsedEvent)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(_OBJECTS | _EVENT_OBJECTS)
def test_payload_round_trips_and_hash_is_stable(value: dict[str, Any]) -> None:
    events = [parse_line(line) for line in _serialisations(value)]

    assert decode_json(events[0].payload) == value
    assert len({event.event_hash for event in events}) == 1
    assert all(event == events[0] for event in events)


@given(_EVENT_OBJECTS)
def test_extracted_text_is_storable(value: dict[str, Any]) -> None:
    event = parse_line(json.dumps(value).encode())

    for name in (
        "eventid",
        "sensor",
        "session_id",
        "src_ip",
        "username",
        "password",
        "command",
        "file_url",
        "file_name",
        "client_version",
        "hassh",
    ):
        text = getattr(event, name)
        if text is not None:
            assert isinstance(text, str)
            assert "\x00" not in text
            assert not any("\ud800" <= ch <= "\udfff" for ch in text)
    if event.src_ip_valid is False:
        assert "invalid_src_ip" in event.problems


@pytest.fixture
def foreign_host_time_zone() -> Iterator[None]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kathmandu"
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


_INSTANTS = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
_OFFSET_MINUTES = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)


@pytest.mark.usefixtures("foreign_host_time_zone")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    instant=_INSTANTS,
    offset_minutes=_OFFSET_MINUTES,
    digits=st.integers(min_value=0, max_value=9),
    separator=st.sampled_from(["T", " "]),
    colon=st.booleans(),
    zulu=st.booleans(),
)
def test_timestamps_with_any_offset_map_to_the_same_instant(
    instant: datetime,
    offset_minutes: int,
    digits: int,
    separator: str,
    colon: bool,
    zulu: bool,
) -> None:
    # Written with ``digits`` fraction digits: beyond 6 they are extra precision that is
    # cut off, below 6 the instant itself loses the digits not written.
    fraction = f"{instant.microsecond:06d}{'987'[: max(0, digits - 6)]}"[:digits]
    expected = instant.replace(microsecond=int(fraction[:6].ljust(6, "0")) if digits else 0)
    offset = timedelta(minutes=offset_minutes)
    local = expected.astimezone(timezone(offset))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    if zulu and offset_minutes == 0:
        zone = "Z"
    else:
        zone = f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    text += ("." + fraction if digits else "") + zone

    event = parse_line(
        json.dumps({"eventid": "cowrie.session.connect", "timestamp": text}).encode()
    )

    assert event.event_time == expected
    assert event.event_time is not None
    assert event.event_time.tzinfo is UTC
    assert "bad_timestamp" not in event.problems


@pytest.mark.usefixtures("foreign_host_time_zone")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_INSTANTS.map(lambda dt: dt.replace(tzinfo=None)))
def test_naive_timestamps_are_utc(naive: datetime) -> None:
    line = json.dumps({"timestamp": naive.isoformat(), "session": "s"}).encode()

    assert parse_line(line).event_time == naive.replace(tzinfo=UTC)
