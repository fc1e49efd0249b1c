"""Integers beyond 64 bits in an event are stored exactly, alike on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cowrieprocessor.db.models import RawEvent, SessionSummary
from cowrieprocessor.ingest.events import parse_line
from cowrieprocessor.ingest.loader import Loader
from tests.helpers import count
from tests.ingest.factory import event, lines, session_events, write

BIG = 10**30


def _load(engine: Engine, path: Path) -> dict:
    return Loader(engine, default_sensor="fallback", batch_size=3).ingest([str(path)]).as_dict()


def test_a_big_integer_is_stored_exactly_and_once(engine: Engine, tmp_path: Path) -> None:
    closed = event("s1", 4, "cowrie.session.closed", duration_ms=BIG)
    # A float beside big integers, one of them negative and nested: all read exactly.
    other = event("s1", 5, "cowrie.client.size", width=0.5, extra={"n": [-(2**70)]})
    events = [*session_events("s1")[:4], closed, other]
    path = write(tmp_path / "a" / "cowrie.json", lines(events))

    first = _load(engine, path)
    copy = write(tmp_path / "b" / "renamed.log", path.read_bytes().replace(b", ", b","))
    again = _load(engine, copy)

    assert (first["events_loaded"], again["events_loaded"]) == (6, 0)
    assert again["duplicates_skipped"] == 6
    assert count(engine, RawEvent) == 6
    with Session(engine) as db:
        stored = db.execute(
            select(RawEvent.payload, RawEvent.event_hash).where(
                RawEvent.eventid == "cowrie.session.closed"
            )
        ).one()
        nested = db.execute(
            select(RawEvent.payload).where(RawEvent.eventid == "cowrie.client.size")
        ).scalar_one()
        row = db.execute(select(SessionSummary).where(SessionSummary.session_id == "s1"))
        summary = row.scalar_one()
    value = stored.payload["duration_ms"]
    assert type(value) is int and value == BIG
    assert nested["extra"] == {"n": [-(2**70)]} and type(nested["extra"]["n"][0]) is int
    assert nested["width"] == 0.5
    # The hash is that of the canonical text with every digit, as the line wrote it.
    canonical = (
        '{"duration_ms":1000000000000000000000000000000,"eventid":"cowrie.session.closed",'
        '"sensor":"test-sensor","session":"s1","timestamp":"2026-01-02T03:04:09.123456Z"}'
    )
    assert stored.event_hash == hashlib.sha256(canonical.encode()).hexdigest()
    # The derived column is the (huge) duration in seconds; nothing crashed on it.
    assert summary.duration_seconds == 1e27
    # The database's own text of the value has every digit on both databases.
    query = "SELECT payload FROM raw_events WHERE eventid = 'cowrie.session.closed'"
    digits = '"duration_ms":1000000000000000000000000000000'
    if engine.dialect.name == "postgresql":
        query = query.replace("payload", "payload::text", 1)
        digits = digits.replace(":", ": ")
    with engine.connect() as conn:
        raw = conn.execute(text(query)).scalar_one()
    assert digits in raw


def test_both_decoders_keep_big_integers_exact() -> None:
    line = b'{"n": 18446744073709551615, "m": 18446744073709551616, "f": 1.5}'
    surrogate = line[:-1] + b', "s": "\\ud800"}'  # only the standard library reads this

    plain, fallback = parse_line(line), parse_line(surrogate)

    assert plain.payload == {"n": 2**64 - 1, "m": 2**64, "f": 1.5}
    assert type(plain.payload["m"]) is int
    assert {k: v for k, v in fallback.payload.items() if k != "s"} == plain.payload
    # A line with a long digit run but no float is orjson's reading unchanged.
    assert parse_line(b'{"h": "1234567890123456789012", "n": 1}').payload == {
        "h": "1234567890123456789012",
        "n": 1,
    }
    # An address field holding a big integer is kept as its text, not a crash.
    odd = parse_line(b'{"eventid": "cowrie.session.connect", "src_ip": 100000000000000000000}')
    assert (odd.src_ip, odd.src_ip_valid) == ("100000000000000000000", False)
