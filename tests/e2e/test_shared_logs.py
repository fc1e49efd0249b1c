"""Load every shared real Cowrie log and check the numbers SOURCES.md gives for each file,
on SQLite and on PostgreSQL, and that both databases end up with identical rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import (
    Command,
    DeadLetterEvent,
    File,
    IngestedFile,
    LoginAttempt,
    RawEvent,
    SessionSummary,
)
from cowrieprocessor.ingest.loader import IngestSummary, Loader
from tests.conftest import SHARED_LOGS, create_pg_database, drop_pg_database
from tests.helpers import count, table_rows
from tests.shared_logs import EVENT_MIX, EXPECTED, TOTAL_EVENTS, TOTAL_SESSIONS


def _load_all(url: str) -> tuple[Engine, IngestSummary]:
    engine = create_engine(url)
    schema.upgrade(engine)
    summary = Loader(engine, default_sensor="unknown", batch_size=2000).ingest([str(SHARED_LOGS)])
    return engine, summary


@pytest.fixture(scope="module")
def loaded_sqlite(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Engine, IngestSummary]]:
    path = tmp_path_factory.mktemp("shared") / "shared.sqlite"
    engine, summary = _load_all(f"sqlite:///{path}")
    yield engine, summary
    engine.dispose()


@pytest.fixture(scope="module")
def loaded_pg() -> Iterator[tuple[Engine, IngestSummary]]:
    url = create_pg_database()
    engine, summary = _load_all(url)
    yield engine, summary
    engine.dispose()
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def loaded(request: pytest.FixtureRequest) -> tuple[Engine, IngestSummary]:
    name = "loaded_sqlite" if request.param == "sqlite" else "loaded_pg"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _source(name: str) -> str:
    return str((SHARED_LOGS / name).resolve())


def test_summary_counts(loaded: tuple[Engine, IngestSummary]) -> None:
    _, summary = loaded
    data = summary.as_dict()
    assert data["files"] == 10
    assert data["events_read"] == TOTAL_EVENTS == 30691
    assert data["events_loaded"] == TOTAL_EVENTS
    assert data["duplicates_skipped"] == 0
    assert data["dead_letters"] == 1  # the cut-off last line of the live scriptzteam file
    assert data["sessions"] == TOTAL_SESSIONS == 4307


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_per_file_counts(loaded: tuple[Engine, IngestSummary], name: str) -> None:
    engine, _ = loaded
    events, sessions, ips = EXPECTED[name]
    source = _source(name)
    with engine.connect() as conn:
        by_file = RawEvent.source_file == source
        assert conn.scalar(select(func.count()).where(by_file)) == events
        distinct_sessions = select(RawEvent.sensor, RawEvent.session_id).where(by_file).distinct()
        assert conn.scalar(select(func.count()).select_from(distinct_sessions.subquery())) == (
            sessions
        )
        assert conn.scalar(select(func.count(func.distinct(RawEvent.src_ip))).where(by_file)) == (
            ips
        )
        mix = Counter(
            {
                eventid.removeprefix("cowrie."): n
                for eventid, n in conn.execute(
                    select(RawEvent.eventid, func.count())
                    .where(by_file)
                    .group_by(RawEvent.eventid)
                )
            }
        )
    assert mix == Counter(EVENT_MIX[name])


def test_tables_hold_the_expected_rows(loaded: tuple[Engine, IngestSummary]) -> None:
    engine, _ = loaded
    assert count(engine, RawEvent) == 30691
    assert count(engine, SessionSummary) == 4307
    assert count(engine, IngestedFile) == 10
    # login.success + login.failed over all files
    assert count(engine, LoginAttempt) == 3645
    assert count(engine, LoginAttempt, LoginAttempt.success.is_(True)) == 1213
    # command.input + command.failed + command.success
    assert count(engine, Command, Command.kind == "input") == 454
    assert count(engine, Command, Command.kind == "failed") == 85
    assert count(engine, Command, Command.kind == "success") == 324
    # 3 + 3 + 3 downloads, 1 failed download, 2 uploads
    assert count(engine, File, File.direction == "download") == 10
    assert count(engine, File, File.direction == "download", File.transfer_ok.is_(False)) == 1
    assert count(engine, File, File.direction == "upload") == 2
    letters = _all(engine, DeadLetterEvent)
    assert [(d.reason, d.source_line) for d in letters] == [("truncated_line", 6074)]
    assert letters[0].source_file.endswith("scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json")
    # SOURCES.md says the cut falls in "src_p"; the file itself ends in '"isError": 0, '.
    assert letters[0].raw.startswith('{"eventid": "cowrie.direct-tcpip.request"')
    assert letters[0].raw.endswith('"isError": 0, ')


def test_session_spanning_two_files_is_one_row(loaded: tuple[Engine, IngestSummary]) -> None:
    engine, _ = loaded
    rows = _all(engine, SessionSummary, SessionSummary.session_id == "975def2ff4af")
    assert len(rows) == 1
    row = rows[0]
    assert (row.sensor, row.has_connect, row.has_close) == ("920497a79896", True, True)
    assert row.duration_seconds == pytest.approx(300.29, abs=0.01)
    assert row.first_event_at is not None and row.first_event_at.date().isoformat() == "2018-06-15"
    assert row.last_event_at is not None and row.last_event_at.date().isoformat() == "2018-06-16"


def test_sqlite_and_postgresql_hold_identical_rows(
    loaded_sqlite: tuple[Engine, IngestSummary], loaded_pg: tuple[Engine, IngestSummary]
) -> None:
    lite, pg = loaded_sqlite[0], loaded_pg[0]
    skip = ("ingested_at", "updated_at", "created_at", "first_ingested_at", "last_ingested_at")
    for model in (RawEvent, SessionSummary, Command, File, LoginAttempt, DeadLetterEvent):
        assert table_rows(lite, model, skip) == table_rows(pg, model, skip), model.__tablename__


def _all(engine: Engine, model: type, *where: object) -> list:  # type: ignore[type-arg]
    with Session(engine) as orm:
        return list(orm.scalars(select(model).where(*where)))  # type: ignore[arg-type]
