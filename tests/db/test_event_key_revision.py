"""Revision 0005 (the time-leading event key) on a database that holds events already."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import Engine, inspect

from cowrieprocessor.db import schema
from cowrieprocessor.db.models import Command, LoginAttempt, RawEvent
from cowrieprocessor.ingest.loader import Loader
from tests.helpers import count

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _unique_keys(engine: Engine, table: str) -> set[tuple[str, ...]]:
    found = inspect(engine)
    keys = {tuple(c["column_names"]) for c in found.get_unique_constraints(table)}
    keys |= {tuple(i["column_names"]) for i in found.get_indexes(table) if i["unique"]}
    return keys


def test_down_to_0004_and_up_again_keeps_every_row_and_the_dedup(
    engine: Engine, tmp_path: Path
) -> None:
    loader = Loader(engine, default_sensor="sample", batch_size=500)
    first = loader.ingest([str(SAMPLES)]).as_dict()
    rows = (count(engine, RawEvent), count(engine, Command), count(engine, LoginAttempt))
    assert rows[0] == first["events_loaded"] > 0
    assert _unique_keys(engine, "raw_events") == {
        ("event_time", "event_hash"),
        ("event_hash",),  # the partial index: events without a time
    }
    assert _unique_keys(engine, "commands") == set()

    schema.downgrade(engine, "0004")
    engine.dispose()
    assert _unique_keys(engine, "raw_events") == {("event_hash",)}
    assert _unique_keys(engine, "commands") == {("event_hash",)}
    assert (count(engine, RawEvent), count(engine, Command), count(engine, LoginAttempt)) == rows

    schema.upgrade(engine)
    engine.dispose()
    again = Loader(engine, default_sensor="sample", batch_size=500)
    # Copies under new names: recognised by content, nothing added.
    copies = [shutil.copy(p, tmp_path / f"renamed-{p.name}") for p in sorted(SAMPLES.iterdir())]
    second = again.ingest([str(p) for p in copies]).as_dict()
    assert (second["events_read"], second["events_loaded"]) == (first["events_read"], 0)
    assert (count(engine, RawEvent), count(engine, Command), count(engine, LoginAttempt)) == rows
