"""How a load runs: the read-ahead thread on PostgreSQL, a failure while writing, and the
garbage collector settings it changes and must give back."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from cowrieprocessor.db.models import IngestedFile, RawEvent, SessionSummary
from cowrieprocessor.ingest.loader import Loader
from tests.helpers import count
from tests.ingest.factory import lines, session_events, write

SESSIONS = 12  # five events each: 60 lines
BATCH = 7


class WriterStopped(Exception):
    pass


def _log(tmp_path: Path) -> Path:
    events = [e for n in range(SESSIONS) for e in session_events(f"s{n:02d}", start=n * 10)]
    return write(tmp_path / "cowrie.json", lines(events))


def _read_ahead_alive() -> bool:
    return any(t.name == "cowrie-read-ahead" for t in threading.enumerate())


def test_reading_runs_ahead_in_a_thread_on_postgresql_only(engine: Engine, tmp_path: Path) -> None:
    seen: list[tuple[bool, tuple[int, int, int]]] = []

    def progress(done: int, total: int, path: str) -> None:
        seen.append((_read_ahead_alive(), gc.get_threshold()))

    before = gc.get_threshold()
    summary = Loader(engine, default_sensor="x", batch_size=BATCH, progress=progress).ingest(
        [str(_log(tmp_path))]
    )
    assert summary.total("events_loaded") == SESSIONS * 5
    assert len(seen) == SESSIONS * 5 // BATCH + 1  # every full batch, then the rest
    postgres = engine.dialect.name == "postgresql"
    # The thread is alive while batches are written (it ends after the last one).
    assert seen[0][0] is postgres
    assert all(threshold == (50_000, before[1], before[2]) for _, threshold in seen)
    assert gc.get_threshold() == before
    assert not _read_ahead_alive()


def test_a_failure_while_writing_keeps_the_committed_batches(
    engine: Engine, tmp_path: Path
) -> None:
    path = _log(tmp_path)
    written: list[int] = []

    def progress(done: int, total: int, name: str) -> None:
        written.append(done)
        if len(written) == 2:
            raise WriterStopped("stop after two batches")

    before = gc.get_threshold()
    loader = Loader(engine, default_sensor="x", batch_size=BATCH, progress=progress)
    with pytest.raises(WriterStopped):
        loader.ingest([str(path)])
    assert gc.get_threshold() == before
    assert not _read_ahead_alive()
    # Exactly the two batches whose transactions committed are stored, with their
    # checkpoint; nothing the thread parsed ahead of them was written.
    assert count(engine, RawEvent) == 2 * BATCH
    with engine.connect() as conn:
        checkpoint = conn.execute(
            select(IngestedFile.checkpoint_line, IngestedFile.finished)
        ).one()
    assert tuple(checkpoint) == (2 * BATCH, False)

    rerun = Loader(engine, default_sensor="x", batch_size=BATCH).ingest([str(path)])
    assert rerun.total("events_loaded") == SESSIONS * 5 - 2 * BATCH
    assert count(engine, RawEvent) == SESSIONS * 5
    assert count(engine, SessionSummary) == SESSIONS
    with engine.connect() as conn:
        counts = conn.execute(select(SessionSummary.event_count)).scalars().all()
    assert sorted(counts) == [5] * SESSIONS
