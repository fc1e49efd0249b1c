"""Revision 0007: SQLite times written with an unpadded year are repaired in place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import Command, RawEvent, SessionSummary
from cowrieprocessor.ingest.loader import Loader
from tests.ingest.factory import event, lines, write

STAMPS = ["0999-01-01T00:00:00.5Z", "0042-03-04T05:06:07Z", "2026-01-02T03:04:05Z"]


def _load(engine: Engine, path: Path) -> dict[str, int]:
    summary: dict[str, int] = Loader(engine, default_sensor="s").ingest([str(path)]).as_dict()
    return summary


def test_unpadded_years_are_padded_and_read_back(
    sqlite_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = create_engine(sqlite_url)
    request.addfinalizer(engine.dispose)
    schema.upgrade(engine)
    events = [
        event("old", 0, "cowrie.command.input", input=f"echo {i}") | {"timestamp": stamp}
        for i, stamp in enumerate(STAMPS)
    ]
    path = write(tmp_path / "cowrie.json", lines(events))
    assert _load(engine, path)["events_loaded"] == 3

    # Put the database back in the state the old writer left: revision 0006, and the
    # years below 1000 without their leading zeros in every time column it wrote.
    schema.downgrade(engine, "0006")
    damaged = {
        "raw_events": ["event_time"],
        "commands": ["event_time"],
        "session_summaries": ["first_event_at", "last_event_at"],
    }
    with engine.begin() as conn:
        for table, columns in damaged.items():
            for column in columns:
                conn.execute(
                    text(
                        f"UPDATE {table} SET {column} = ltrim({column}, '0') "
                        f"WHERE {column} LIKE '0%'"
                    )
                )
        stored = conn.execute(text("SELECT event_time FROM raw_events ORDER BY id")).scalars()
        assert list(stored) == [
            "999-01-01 00:00:00.500000",
            "42-03-04 05:06:07.000000",
            "2026-01-02 03:04:05.000000",
        ]
    with Session(engine) as session, pytest.raises(ValueError, match="isoformat"):
        session.scalars(select(RawEvent.event_time)).all()

    schema.upgrade(engine)

    expected = [
        datetime(42, 3, 4, 5, 6, 7, tzinfo=UTC),
        datetime(999, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    ]
    with Session(engine) as session:
        ordered = select(RawEvent.event_time).order_by(RawEvent.event_time)
        assert session.scalars(ordered).all() == expected
        commands = select(Command.event_time).order_by(Command.event_time)
        assert session.scalars(commands).all() == expected
        summary = session.scalars(select(SessionSummary)).one()
        assert (summary.first_event_at, summary.last_event_at) == (expected[0], expected[-1])
    # The repaired keys are the ones the loader looks up: loading again adds nothing.
    copy = write(tmp_path / "copy" / "cowrie.json", lines(events))
    assert _load(engine, copy)["events_loaded"] == 0
