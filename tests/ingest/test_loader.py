"""The loader on small inputs of our own: bad input, re-ingest, growth, replacement,
attacker text. Each runs on SQLite and PostgreSQL."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from cowrieprocessor.db import schema
from cowrieprocessor.db.models import (
    Command,
    DeadLetterEvent,
    IngestedFile,
    LoginAttempt,
    RawEvent,
    SessionSummary,
)
from cowrieprocessor.db.textrule import decode_json, decode_text
from cowrieprocessor.db.types import sqlite_datetime_text
from cowrieprocessor.ingest.loader import Loader
from tests.helpers import count
from tests.ingest.factory import SENSOR, event, lines, session_events, write


def load(engine: Engine, *paths: Path, sensor: str = "fallback", batch: int = 3) -> dict:
    return (
        Loader(engine, default_sensor=sensor, batch_size=batch)
        .ingest([str(p) for p in paths])
        .as_dict()
    )


def dead_letters(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(DeadLetterEvent.source_line, DeadLetterEvent.reason).order_by(
                DeadLetterEvent.source_line
            )
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def session(engine: Engine, session_id: str) -> SessionSummary:
    with Session(engine) as conn:
        return conn.execute(
            select(SessionSummary).where(SessionSummary.session_id == session_id)
        ).scalar_one()


def test_small_session_rows(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "cowrie.json", lines(session_events("s1", ip="::ffff:8.8.4.4")))
    summary = load(engine, path)
    assert (summary["events_read"], summary["events_loaded"], summary["sessions"]) == (5, 5, 1)
    row = session(engine, "s1")
    assert (row.sensor, row.src_ip, row.src_ip_valid, row.protocol) == (
        SENSOR,
        "8.8.4.4",
        True,
        "ssh",
    )
    assert (row.event_count, row.login_attempts, row.login_successes, row.command_count) == (
        5,
        2,
        1,
        1,
    )
    assert (row.success_username, row.success_password) == ("root", "toor")
    assert (row.duration_seconds, row.has_connect, row.has_close) == (4.0, True, True)
    assert row.first_event_at is not None and row.first_event_at.isoformat() == (
        "2026-01-02T03:04:05.123456+00:00"
    )
    assert count(engine, LoginAttempt) == 2
    assert count(engine, Command) == 1


def test_reingest_and_renamed_compressed_copy_add_nothing(engine: Engine, tmp_path: Path) -> None:
    text = lines(session_events("s1") + session_events("s2", 10))
    first = write(tmp_path / "a" / "cowrie.json", text)
    load(engine, first)
    again = load(engine, first)
    assert (again["events_loaded"], again["files_unchanged"]) == (0, 1)
    copy_gz = write(tmp_path / "b" / "cowrie.json.1.gz.1.gz", gzip.compress(text.encode()))
    copy_bz = write(tmp_path / "b" / "renamed.log", bz2.compress(text.replace(", ", ",").encode()))
    summary = load(engine, copy_gz, copy_bz)
    assert (summary["events_read"], summary["events_loaded"]) == (20, 0)
    assert summary["duplicates_skipped"] == 20
    assert count(engine, RawEvent) == 10
    assert session(engine, "s1").event_count == 5
    assert session(engine, "s1").login_attempts == 2


def test_file_that_grew_is_read_on_from_its_checkpoint(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "cowrie.json", lines(session_events("s1")[:3]))
    load(engine, path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(lines(session_events("s1")[3:]))
    summary = load(engine, path)
    assert summary["per_file"][0]["action"] == "resumed"
    assert (summary["events_read"], summary["events_loaded"]) == (2, 2)
    assert session(engine, "s1").event_count == 5
    assert session(engine, "s1").has_close is True


def test_truncated_or_replaced_file_is_read_again(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "cowrie.json", lines(session_events("s1")))
    load(engine, path)
    write(path, lines(session_events("s9", 100)[:2]))
    summary = load(engine, path)
    assert summary["per_file"][0]["action"] == "reread"
    assert (summary["events_read"], summary["events_loaded"]) == (2, 2)
    assert count(engine, RawEvent) == 7


def test_live_file_cut_off_last_line_is_loaded_once_complete(
    engine: Engine, tmp_path: Path
) -> None:
    events = session_events("s1")
    full_last = json.dumps(events[4])
    path = write(tmp_path / "cowrie.json", lines(events[:4]) + full_last[:30])
    summary = load(engine, path)
    assert (summary["events_loaded"], summary["dead_letters"]) == (4, 1)
    assert dead_letters(engine) == [(5, "truncated_line")]
    with path.open("a", encoding="utf-8") as fh:
        fh.write(full_last[30:] + "\n")
    summary = load(engine, path)
    assert (summary["events_read"], summary["events_loaded"], summary["dead_letters"]) == (1, 1, 0)
    with Session(engine) as orm:
        letter = orm.execute(select(DeadLetterEvent)).scalar_one()
    assert letter.resolved_at is not None
    assert session(engine, "s1").has_close is True


def test_bad_lines_go_to_dead_letters_and_the_run_goes_on(engine: Engine, tmp_path: Path) -> None:
    good = session_events("s1")
    pretty = json.dumps(event("s2", 9, "cowrie.session.connect", src_ip="8.8.8.8"), indent=2)
    text = (
        lines(good[:2])
        + "this is not json\n"  # line 3
        + "[1, 2, 3]\n"  # line 4
        + '"just a string"\n'  # line 5
        + "null\n"  # line 6
        + "\n"  # line 7: blank, not a dead letter
        + pretty
        + "\n"  # lines 8..14
        + lines(good[2:])  # lines 15..17
    )
    path = write(tmp_path / "mixed.json", text)
    summary = load(engine, path)
    pretty_lines = pretty.count("\n") + 1
    assert summary["events_loaded"] == 5
    assert summary["blank_lines"] == 1
    assert summary["dead_letters"] == 4 + pretty_lines
    letters = dead_letters(engine)
    assert letters[:4] == [
        (3, "invalid_json"),
        (4, "not_an_object"),
        (5, "not_an_object"),
        (6, "not_an_object"),
    ]
    assert [line for line, _ in letters[4:]] == list(range(8, 8 + pretty_lines))
    with engine.connect() as conn:
        raw = conn.scalars(select(DeadLetterEvent.raw).order_by(DeadLetterEvent.source_line))
        assert next(iter(raw)) == "this is not json"
        detail = conn.scalar(
            select(DeadLetterEvent.detail).where(DeadLetterEvent.source_line == 8)
        )
    assert detail is not None and "pretty-printed" in detail and "mixed.json:8" in detail


def test_truncated_and_empty_archives(engine: Engine, tmp_path: Path) -> None:
    many = [e for i in range(40) for e in session_events(f"t{i:03d}", i * 10)]
    blob = gzip.compress(lines(many).encode())
    cut = write(tmp_path / "cut.json.gz", blob[: len(blob) // 2])
    empty = write(tmp_path / "empty.json.gz", b"")
    summary = load(engine, cut, empty, batch=50)
    assert 0 < summary["events_loaded"] < 200
    reasons = sorted(reason for _, reason in dead_letters(engine))
    assert "truncated_archive" in reasons
    assert "empty_archive" in reasons
    with engine.connect() as conn:
        finished = dict(conn.execute(select(IngestedFile.path, IngestedFile.finished)).all())
    assert finished == {str(cut.resolve()): True, str(empty.resolve()): True}
    # Unchanged damaged files are not read again: the same bytes give the same problems.
    again = load(engine, cut, empty, batch=50)
    assert [f["action"] for f in again["per_file"]] == ["unchanged", "unchanged"]
    assert again["dead_letters"] == 0


def test_events_without_sensor_take_the_default(engine: Engine, tmp_path: Path) -> None:
    events = session_events("s1")
    for item in events:
        del item["sensor"]
    path = write(tmp_path / "old.json", lines(events))
    load(engine, path, sensor="honeypot-7")
    assert session(engine, "s1").sensor == "honeypot-7"


def test_same_session_id_on_two_sensors_stays_two_sessions(engine: Engine, tmp_path: Path) -> None:
    a = session_events("same")
    b = [item | {"sensor": "other"} for item in session_events("same", 50)]
    load(engine, write(tmp_path / "x.json", lines(a + b)))
    assert count(engine, SessionSummary) == 2


def test_session_split_over_two_files_any_order(engine: Engine, tmp_path: Path) -> None:
    events = session_events("span")
    first = write(tmp_path / "cowrie.json.2026-01-01", lines(events[:2]))
    second = write(tmp_path / "cowrie.json.2026-01-02", lines(events[2:]))
    results = []
    for order in ((first, second), (second, first)):
        schema.downgrade(engine, "base")  # start each order from an empty database
        schema.upgrade(engine)
        for path in order:
            load(engine, path)
        row = session(engine, "span")
        results.append(
            (
                row.src_ip, row.first_event_at, row.last_event_at, row.event_count,
                row.login_attempts, row.success_username, row.success_password,
                row.duration_seconds, row.has_connect, row.has_close,
            )
        )  # fmt: skip
    assert results[0] == results[1]
    assert results[0][3:] == (5, 2, "root", "toor", 4.0, True, True)


ATTACKER_TEXT = [
    "ping 127.0.0.1 -c1 && sh\x00",
    "lone \ud83d surrogate",
    "\x1b[31mred\x1b[0m and \r carriage",
    "echo -e '\\x47\\x72\\x6f\\x70' > //.nippon",
    "管理员パスワード",
    "u" * 1500,
    "Admin\t\t",
    "private \ue000 use",
]


@pytest.mark.parametrize("text", ATTACKER_TEXT, ids=range(len(ATTACKER_TEXT)))
def test_attacker_text_is_stored_faithfully(engine: Engine, tmp_path: Path, text: str) -> None:
    events = [
        event("a1", 0, "cowrie.session.connect", src_ip="8.8.4.4"),
        event("a1", 1, "cowrie.login.failed", username=text, password=text),
        event("a1", 2, "cowrie.command.input", input=text),
        event("a1", 3, "cowrie.client.version", version=text, **{text: "key is text too"}),
    ]
    path = write(tmp_path / "evil.json", "".join(json.dumps(e) + "\n" for e in events))
    summary = load(engine, path)
    assert summary["events_loaded"] == 4
    with Session(engine) as conn:
        login = conn.execute(select(LoginAttempt)).scalar_one()
        command = conn.execute(select(Command)).scalar_one()
        payloads = [decode_json(p) for p in conn.scalars(select(RawEvent.payload))]
    assert decode_text(login.username or "") == text
    assert decode_text(login.password or "") == text
    assert decode_text(command.command) == text
    assert (
        login.password_sha256 == hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    )
    assert any(p.get(text) == "key is text too" and p.get("version") == text for p in payloads)
    assert decode_text(session(engine, "a1").client_version or "") == text


def test_file_rewritten_with_the_same_start_is_read_again(engine: Engine, tmp_path: Path) -> None:
    many = [e for i in range(60) for e in session_events(f"r{i:03d}", i * 10)]
    path = write(tmp_path / "cowrie.json", lines(many[:150]))  # well over 4 KiB
    load(engine, path, batch=50)
    # Same first 100 events (same first 4 KiB), then different ones, and longer.
    write(path, lines(many[:100] + many[200:300]))
    summary = load(engine, path, batch=50)
    assert summary["per_file"][0]["action"] == "reread"
    assert summary["events_loaded"] == 100
    assert count(engine, RawEvent) == 250


def test_events_with_bad_fields_are_kept_and_counted(engine: Engine, tmp_path: Path) -> None:
    events = session_events("p1")
    events[1]["timestamp"] = "garbage"
    del events[2]["timestamp"]
    events[0]["src_ip"] = "not-an-ip"
    summary = load(engine, write(tmp_path / "odd.json", lines(events)))
    assert summary["events_loaded"] == 5
    assert summary["event_problems"] == {
        "bad_timestamp": 1,
        "invalid_src_ip": 1,
        "missing_timestamp": 1,
    }
    row = session(engine, "p1")
    assert (row.src_ip, row.src_ip_valid) == ("not-an-ip", False)
    assert count(engine, RawEvent, RawEvent.event_time.is_(None)) == 2


def test_events_without_a_time_are_recognised_when_loaded_again(
    engine: Engine, tmp_path: Path
) -> None:
    # The unique key leads with the event time; events without one are held unique by a
    # partial index on the hash alone. A copy that also holds a new event makes the
    # PostgreSQL loader take its conflict path (staging table, ON CONFLICT DO NOTHING).
    events = session_events("u1")
    events[1]["timestamp"] = "garbage"
    del events[2]["timestamp"]
    load(engine, write(tmp_path / "a.json", lines(events)))
    extra = event("u1", 30, "cowrie.command.input", input="uname -a")
    summary = load(engine, write(tmp_path / "b.json", lines([*events, extra])))
    assert (summary["events_read"], summary["events_loaded"]) == (6, 1)
    assert summary["duplicates_skipped"] == 5
    assert count(engine, RawEvent) == 6
    assert count(engine, RawEvent, RawEvent.event_time.is_(None)) == 2
    assert count(engine, LoginAttempt) == 2
    assert count(engine, Command) == 2
    assert session(engine, "u1").event_count == 6


def test_gzip_inside_gzip_is_opened(engine: Engine, tmp_path: Path) -> None:
    text = lines(session_events("g1") + session_events("g2", 10)).encode()
    twice = write(tmp_path / "logs" / "cowrie.json.1.gz.1.gz", gzip.compress(gzip.compress(text)))
    summary = load(engine, twice.parent)
    assert (summary["files"], summary["events_loaded"], summary["dead_letters"]) == (1, 10, 0)
    assert session(engine, "g2").event_count == 5


def test_years_before_1000_read_back_and_sort_in_time_order(
    engine: Engine, tmp_path: Path
) -> None:
    # SQLite keeps times as text that must match SQLAlchemy's own form (zero-padded
    # four-digit year) to read back and to sort: the bulk writer once wrote "999-...".
    # The copy with one event more sends PostgreSQL down its conflict path and SQLite
    # through its hash look-up, both keyed on the stored time.
    stamps = ["2026-01-02T03:04:05.123456Z", "0999-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]
    events = [
        event("y1", 0, "cowrie.command.input", input=f"echo {i}") | {"timestamp": stamp}
        for i, stamp in enumerate(stamps)
    ]
    first = write(tmp_path / "a" / "cowrie.json", lines(events))
    assert load(engine, first)["events_loaded"] == 3
    extra = event("y1", 0, "cowrie.command.input", input="late") | {
        "timestamp": "0500-06-07T08:09:10.000001Z"
    }
    copy = write(tmp_path / "b" / "cowrie.json", lines([*events, extra]))
    again = load(engine, first, copy)
    assert (again["files_unchanged"], again["events_loaded"]) == (1, 1)
    assert again["duplicates_skipped"] == 3
    with Session(engine) as conn:
        times = conn.scalars(select(RawEvent.event_time).order_by(RawEvent.event_time)).all()
    assert times == [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(500, 6, 7, 8, 9, 10, 1, tzinfo=UTC),
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    ]
    assert session(engine, "y1").event_count == 4


_OFFSETS = st.builds(
    timezone, st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))
)


@given(st.datetimes(timezones=_OFFSETS))
@example(datetime(999, 1, 1, tzinfo=UTC))
@example(datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(minutes=30))))
def test_sqlite_text_is_what_sqlalchemy_writes_for_any_year(value: datetime) -> None:
    # The bulk loader and the cache bind this text themselves; SQLAlchemy's own SQLite
    # DateTime processors must write exactly it and read it back to the same instant.
    try:
        naive_utc = value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        assume(False)  # the offset pushes the instant out of datetime's range
    dialect = sqlite.dialect()
    write_text = sqlite.DATETIME().bind_processor(dialect)
    read_text = sqlite.DATETIME().result_processor(dialect, None)
    assert write_text is not None and read_text is not None
    text = sqlite_datetime_text(value)
    assert text == write_text(naive_utc)
    assert read_text(text) == naive_utc
