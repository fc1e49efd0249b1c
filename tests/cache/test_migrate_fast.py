"""The migration's fast path reads files exactly as the thorough one, and the direct COPY
on PostgreSQL falls back to the staging table without changing a present row."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from cowrieprocessor.enrichment.cache import EnrichmentCacheManager, TTLPolicy
from cowrieprocessor.enrichment.cache.database import TABLE, EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.disk import TEMP_SUFFIX, DiskItem
from cowrieprocessor.enrichment.cache.rows import dump_payload, key_hash, load_payload
from cowrieprocessor.enrichment.migrate import migrate_disk_cache
from cowrieprocessor.enrichment.migrate_files import judge
from cowrieprocessor.enrichment.migrate_io import (
    ChunkResult,
    list_chunks,
    read_chunk,
    row_values,
)
from cowrieprocessor.enrichment.outcome import Outcome, Status

from .diskfixture import DiskFixture, make_disk_cache

NOW = datetime.now(UTC)


def _add_awkward_records(fx: DiskFixture) -> None:
    """Files the fast path must hand to the thorough one, or read the same way."""
    disk = EnrichmentCacheManager(fx.root)
    stored = NOW - timedelta(hours=2)
    # Integers beyond 64 bits beside a float: orjson would read them as floats.
    disk.store_cached(
        Outcome("spur", "198.18.0.1", Status.SUCCESS, data={"big": 2**80, "f": 0.5}),
        stored_at=stored,
    )
    # A big integer and no float, under a long hex key (a run of digits in the name).
    disk.store_cached(
        Outcome("virustotal", "0" * 64, Status.SUCCESS, data={"big": -(2**70), "n": [1]}),
        stored_at=stored,
    )
    # Pretty-printed, keys in another order, and a record with a field of its own.
    spaced = disk.store_cached(
        Outcome("spur", "198.18.0.2", Status.SUCCESS, data={"z": 1, "a": {"y": 2, "b": 3}}),
        stored_at=stored,
    )
    path = disk.path_for("spur", spaced.key)
    record = json.loads(path.read_bytes())
    path.write_text(json.dumps(dict(reversed(list(record.items()))), indent=2))
    extra = disk.store_cached(
        Outcome("spur", "198.18.0.3", Status.SUCCESS, data={"x": "y"}), stored_at=stored
    )
    path = disk.path_for("spur", extra.key)
    record = json.loads(path.read_bytes())
    record["note"] = "written by a newer version"
    path.write_text(json.dumps(record))
    # A latency that is not a number: the record checks refuse it, the file is bad.
    bad = disk.store_cached(Outcome("spur", "198.18.0.4", Status.SUCCESS, data={}))
    path = disk.path_for("spur", bad.key)
    path.write_text(path.read_text().replace('"latency_ms":null', '"latency_ms":"slow"'))


def _thorough(chunk_dir: Path, service: str, names: tuple[str, ...], jsonb: bool) -> list[Any]:
    """What the migration read before the fast path: judge every file, dump every entry."""
    out: list[Any] = []
    for name in names:
        path = chunk_dir / name
        info = path.stat(follow_symlinks=False)
        item = DiskItem(
            path, service, name.endswith(TEMP_SUFFIX), info.st_size, info.st_mtime,
            info.st_ino, None, "not read yet",
        )  # fmt: skip
        verdict = judge(item, TTLPolicy())
        if verdict.entry is None:
            out.append((name, verdict.problem))
        elif verdict.entry.is_expired(NOW):
            out.append((name, "expired"))
        else:
            payload = dump_payload(verdict.entry, jsonb=jsonb)
            out.append((name, row_values(verdict.entry, payload, jsonb, "mid")))
    return out


@pytest.mark.parametrize("jsonb", [False, True], ids=["sqlite", "postgresql"])
def test_fast_reading_gives_the_thorough_rows(tmp_path: Path, jsonb: bool) -> None:
    fx = make_disk_cache(tmp_path / "disk", fresh=12, now=NOW)
    _add_awkward_records(fx)
    seen_files = 0
    for chunk in list_chunks(fx.root, {}):
        result: ChunkResult = read_chunk(chunk, TTLPolicy(), NOW, jsonb, "mid")
        expected = _thorough(chunk.directory, chunk.service, chunk.names, jsonb)
        seen_files += result.files
        rows = [row for _, row in expected if isinstance(row, tuple)]
        assert len(result.rows) == len(rows), chunk.shard
        for got, want in zip(result.rows, rows, strict=True):
            # Every column alike; the payload may differ in spacing or field order only.
            assert got[:3] == want[:3] and got[4:] == want[4:]
            assert load_payload(got[3]) == load_payload(want[3])
            if got[1] != "198.18.0.2":  # the one file not written as the disk cache does
                assert got[3] == want[3]
        problems = sorted(kind for kind, _, _, is_problem in result.named if is_problem)
        assert problems == sorted(str(row) for _, row in expected if isinstance(row, str)
                                  and row != "expired")  # fmt: skip
    # The unknown service's folder is not among the chunks (the migration names it apart).
    assert seen_files == fx.files - fx.unknown_folder_files + 5


def test_big_integers_and_odd_records_migrate_exactly(engine: Engine, tmp_path: Path) -> None:
    fx = make_disk_cache(tmp_path / "disk", fresh=6, now=NOW)
    _add_awkward_records(fx)

    summary = migrate_disk_cache(fx.root, engine, status_dir=tmp_path / "status")

    cache = EnrichmentDatabaseCache(engine)
    big = cache.get_cached("spur", "198.18.0.1")
    assert big is not None and big.outcome.data == {"big": 2**80, "f": 0.5}
    hexed = cache.get_cached("virustotal", "0" * 64)
    assert hexed is not None and hexed.outcome.data == {"big": -(2**70), "n": [1]}
    spaced = cache.get_cached("spur", "198.18.0.2")
    assert spaced is not None
    assert list(spaced.outcome.data or {}) == ["z", "a"]
    assert list((spaced.outcome.data or {})["a"]) == ["y", "b"]
    assert cache.get_cached("spur", "198.18.0.3") is not None
    assert cache.get_cached("spur", "198.18.0.4") is None
    assert summary.counts["bad_record"] == 2  # the fixture's own, and the slow latency
    cache.close()


def test_rows_already_present_stay_and_are_counted(engine: Engine, tmp_path: Path) -> None:
    fx = make_disk_cache(tmp_path / "disk", fresh=40, now=NOW)
    cache = EnrichmentDatabaseCache(engine)
    # A worker stored two keys before the migration: batches holding them conflict.
    present = [("dshield", "198.51.0.3"), ("spur", "198.51.0.35")]
    for service, key in present:
        cache.store_cached(Outcome(service, key, Status.SUCCESS, data={"worker": True}))

    summary = migrate_disk_cache(fx.root, engine, status_dir=tmp_path / "status", batch_size=5)

    assert (summary.migrated, summary.already_present) == (len(fx.entries) - 2, 2)
    for service, key in present:
        with engine.connect() as conn:
            mid = conn.execute(
                select(TABLE.c.migration_id).where(
                    TABLE.c.service == service, TABLE.c.cache_key_hash == key_hash(key)
                )
            ).scalar_one()
        assert mid is None
        got = cache.get_cached(service, key)
        assert got is not None and got.outcome.data == {"worker": True}
    for (service, key), entry in fx.entries.items():
        if (service, key) not in present:
            assert cache.get_cached(service, key) == entry, (service, key)
    cache.close()


def test_a_vanished_file_is_not_counted(tmp_path: Path) -> None:
    fx = make_disk_cache(tmp_path / "disk", fresh=3, now=NOW)
    chunk = next(c for c in list_chunks(fx.root, {}) if c.service == "dshield")
    os.unlink(chunk.directory / chunk.names[0])

    result = read_chunk(chunk, TTLPolicy(), NOW, False, "mid")

    assert result.files == len(chunk.names) - 1


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("192.0.2.9.json", b"{}", "empty_object"),
        ("192.0.2.9.json", b'{"key": "192.0.2.9"}', "empty_object"),
        ("192.0.2.9.json", b'{"key": "192.0.2.9", "data": {}}', "empty_object"),
        ("192.0.2.9.json", b'{"ip": {}}', None),  # a body with a field: migrated
    ],
)
def test_an_old_layout_file_without_data_is_not_a_success(
    tmp_path: Path, name: str, content: bytes, kind: str | None
) -> None:
    path = tmp_path / "dshield" / "19" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    info = path.stat()
    item = DiskItem(path, "dshield", False, info.st_size, info.st_mtime, info.st_ino, None, "")

    verdict = judge(item, TTLPolicy())

    assert verdict.problem == kind
    if kind is None:
        assert verdict.entry is not None and verdict.entry.outcome.data == {"ip": {}}
    else:
        assert verdict.entry is None
