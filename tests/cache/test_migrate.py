"""Migration of a disk cache into enrichment_cache, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, select, update

from cowrieprocessor.enrichment import migrate
from cowrieprocessor.enrichment.cache.database import TABLE, EnrichmentDatabaseCache
from cowrieprocessor.enrichment.cache.rows import key_hash
from cowrieprocessor.enrichment.migrate import (
    MigrationSummary,
    migrate_disk_cache,
    read_status,
    rollback_migration,
    status_path,
    validate_migration,
)
from cowrieprocessor.enrichment.migrate_io import BatchWriter
from cowrieprocessor.enrichment.outcome import Outcome, Status

from .diskfixture import DiskFixture, make_disk_cache


def _rows(engine: Engine, migration_id: str | None = None) -> int:
    query = select(func.count()).select_from(TABLE)
    if migration_id is not None:
        query = query.where(TABLE.c.migration_id == migration_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def fixture(tmp_path: Path) -> DiskFixture:
    return make_disk_cache(tmp_path / "disk")


def test_dry_run_reads_everything_and_writes_nothing(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    status_dir = tmp_path / "status"

    summary = migrate_disk_cache(fixture.root, engine, status_dir=status_dir, dry_run=True)

    assert _rows(engine) == 0
    assert not status_dir.exists()
    assert summary.files_seen == fixture.files
    assert summary.migrated == len(fixture.entries)
    assert summary.already_present == 0
    assert summary.expired == fixture.expired == 3
    # Skipped and named exactly as a real run does: nothing of an unknown service.
    unknown = summary.to_dict()["problems"]["unknown_service"]
    assert unknown == {"count": 3, "paths": [str(p) for p in fixture.unknown_paths]}
    assert summary.to_dict()["problems"]["empty_object"]["count"] == 1


def test_files_outside_the_layout_are_named_and_not_migrated(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    shard = next(p for p in sorted((fixture.root / "dshield").iterdir()) if p.is_dir())
    entry = next(shard.glob("*.json"))
    stray = [
        fixture.root / "top.json",  # at the top of the cache
        fixture.root / "dshield" / entry.name,  # a valid entry, but not in a shard
        shard / ".tmp-123",  # neither an entry nor one of our temporary files
        shard / "notes.txt",
    ]
    stray[0].write_text("{}")
    stray[1].write_bytes(entry.read_bytes())
    stray[2].write_bytes(b"")
    stray[3].write_text("hello")

    for dry_run in (True, False):
        summary = migrate_disk_cache(
            fixture.root, engine, status_dir=tmp_path / "status", dry_run=dry_run
        )
        result = summary.to_dict()
        assert result["files_seen"] == fixture.files + 4
        assert result["migrated"] == len(fixture.entries)
        assert result["outside_layout"] == 4
        assert result["problems"]["outside_layout"] == {
            "count": 4,
            "paths": sorted(str(p) for p in stray),
        }
        assert result["corrupt"] == 7  # not damage: misplaced
    assert _rows(engine) == len(fixture.entries)


def test_file_names_that_are_not_utf8_are_named_in_the_status_file(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    # A name the file system holds as bytes that are not UTF-8: Python gives it a lone
    # surrogate, which JSON cannot carry; the report names it with the byte escaped.
    shard = next(p for p in sorted((fixture.root / "dshield").iterdir()) if p.is_dir())
    odd = os.path.join(os.fsencode(shard), b"bad\xff.json")
    with open(odd, "wb") as handle:
        handle.write(b"not json")
    status_dir = tmp_path / "status"

    summary = migrate_disk_cache(fixture.root, engine, status_dir=status_dir)

    named = f"{shard}/bad\\xff.json"
    assert named in summary.to_dict()["problems"]["not_json"]["paths"]
    status = read_status(status_dir)
    assert status is not None
    assert named in status["summary"]["problems"]["not_json"]["paths"]
    assert _rows(engine) == len(fixture.entries)


def test_a_source_folder_whose_name_is_not_utf8_migrates_and_resumes(
    engine: Engine, tmp_path: Path
) -> None:
    root = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"disk\xff")))
    fixture = make_disk_cache(root)
    status_dir = tmp_path / "status"

    summary = migrate_disk_cache(root, engine, status_dir=status_dir)

    shown = f"{tmp_path}/disk\\xff"
    assert summary.to_dict()["source"] == shown
    status = read_status(status_dir)
    assert status is not None and status["source"] == shown
    assert _rows(engine) == len(fixture.entries)
    # The status file's form of the folder is recognised: the same migration again.
    again = migrate_disk_cache(root, engine, status_dir=status_dir)
    assert again.migration_id == summary.migration_id
    assert again.to_dict()["already_present"] == len(fixture.entries)


def test_migration_counts_names_and_copies_exactly(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    status_dir = tmp_path / "status"

    summary = migrate_disk_cache(fixture.root, engine, status_dir=status_dir, batch_size=7)
    result = summary.to_dict()

    assert result["files_seen"] == fixture.files
    assert result["migrated"] == len(fixture.entries) == 38
    assert result["already_present"] == 0
    assert result["expired"] == 3
    assert result["temp_files"] == 1
    assert result["corrupt"] == 7
    assert result["unknown_service"] == fixture.unknown_files == 3
    assert result["nul_escapes"] == fixture.nul_escapes
    for kind, paths in fixture.problems.items():
        assert result["problems"][kind] == {"count": 1, "paths": [str(p) for p in paths]}, kind
    # The unknown service's folder is named once for its two files; the stray record too.
    assert result["problems"]["unknown_service"] == {
        "count": 3,
        "paths": [
            str(fixture.root / "unknownsvc"),
            str(fixture.root / "dshield/19/192.0.2.210.json"),
        ],
    }
    with engine.connect() as conn:
        services = set(conn.execute(select(TABLE.c.service).distinct()).scalars())
        empty = conn.execute(
            select(func.count()).where(TABLE.c.cache_key_hash == key_hash("192.0.2.9"))
        ).scalar_one()
    assert services == {"dshield", "virustotal", "spur", "urlhaus", "hibp"}
    assert empty == 0  # the {} file: no success with an empty payload
    for kind, paths in fixture.notes.items():
        assert sorted(result["notes"][kind]["paths"]) == sorted(str(p) for p in paths), kind
    assert _rows(engine) == _rows(engine, summary.migration_id) == 38
    status = read_status(status_dir)
    assert status is not None
    assert status["state"] == "done"
    assert status["migration_id"] == summary.migration_id

    # Every entry reads back through the database cache exactly, times kept.
    cache = EnrichmentDatabaseCache(engine)
    for (service, key), entry in fixture.entries.items():
        got = cache.get_cached(service, key)
        assert got == entry, (service, key)
    with engine.connect() as conn:
        row = conn.execute(
            select(TABLE.c.cache_key, TABLE.c.api_response_code, TABLE.c.api_latency_ms).where(
                TABLE.c.service == "hibp"
            )
        ).one()
    assert tuple(row) == ("5BAA6", 404, 12)

    # A second run finds everything present and inserts nothing.
    again = migrate_disk_cache(fixture.root, engine, status_dir=status_dir)
    assert (again.migrated, again.already_present) == (0, 38)
    assert again.migration_id == summary.migration_id


def test_validate_finds_nothing_then_the_tampered_row(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    summary = migrate_disk_cache(fixture.root, engine, status_dir=tmp_path / "status")
    mid = summary.migration_id

    clean = validate_migration(fixture.root, engine, migration_id=mid)
    assert (clean.compared, clean.matching, clean.differences) == (38, 38, 0)
    sampled = validate_migration(fixture.root, engine, migration_id=mid, sample=10)
    assert sampled.compared == 10
    assert sampled.matching + sampled.unlocated == 10  # the misplaced record is unlocated
    assert (sampled.differences, sampled.rows_of_migration) == (0, 38)

    with engine.begin() as conn:
        # Someone edits a migrated row by hand: the record no longer matches its file.
        conn.execute(
            update(TABLE)
            .where(TABLE.c.cache_key_hash == key_hash("198.51.0.3"))
            .values(payload={"format": 1})
        )
    tampered = validate_migration(fixture.root, engine, migration_id=mid)
    path = fixture.root / "dshield" / "19" / "198.51.0.3.json"
    assert tampered.differs == [str(path)]
    assert tampered.missing == []
    assert tampered.matching == 37


def test_rollback_removes_only_the_migrated_rows(
    engine: Engine, fixture: DiskFixture, tmp_path: Path
) -> None:
    summary = migrate_disk_cache(fixture.root, engine, status_dir=tmp_path / "status")
    cache = EnrichmentDatabaseCache(engine)
    # A worker overwrites one migrated key and stores a new one.
    cache.store_cached(Outcome("dshield", "198.51.0.0", Status.SUCCESS, data={"fresh": 1}))
    cache.store_cached(Outcome("dshield", "192.0.2.250", Status.NOT_FOUND))

    assert rollback_migration(engine, summary.migration_id, batch_size=5) == 37

    assert _rows(engine) == 2
    kept = cache.get_cached("dshield", "198.51.0.0")
    assert kept is not None
    assert kept.outcome.data == {"fresh": 1}
    assert cache.get_cached("dshield", "192.0.2.250") is not None
    assert rollback_migration(engine, summary.migration_id) == 0


#: What a resumed run must report as a run without the interruption would (the counts of
#: the files read before the interruption included).
WHOLE_RUN = (
    "files_seen",
    "expired",
    "corrupt",
    "temp_files",
    "unknown_service",
    "outside_layout",
    "nul_escapes",
    "problems",
    "notes",
)


class _Killed(Exception):
    """Raised from the progress callback to end a migration midway."""


@pytest.mark.parametrize("end", ["killed", "write_failed"])
def test_a_resumed_migration_reports_the_files_read_before(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    fx = make_disk_cache(tmp_path / "disk", fresh=300)
    whole = migrate_disk_cache(fx.root, engine, status_dir=tmp_path / "dry", dry_run=True)
    status_dir = tmp_path / "status"
    monkeypatch.setattr(migrate, "STATUS_INTERVAL", 0.0)  # the status after every batch
    written: list[bytes] = []
    write = BatchWriter.write

    def record(summary: MigrationSummary) -> None:
        written.append(status_path(status_dir).read_bytes())
        if end == "killed" and len(written) == 4:
            raise _Killed

    def fail_the_fourth_batch(writer: BatchWriter, rows: list[tuple[object, ...]]) -> int:
        if len(written) == 3:
            raise _Killed  # the database fails with a batch's chunks read, not committed
        return write(writer, rows)

    if end == "write_failed":
        monkeypatch.setattr(BatchWriter, "write", fail_the_fourth_batch)
    with pytest.raises(_Killed):
        migrate_disk_cache(fx.root, engine, status_dir=status_dir, batch_size=1, progress=record)
    monkeypatch.undo()
    if end == "killed":
        # As after a SIGKILL: the status file is two batches behind the committed rows.
        status_path(status_dir).write_bytes(written[1])

    resumed = migrate_disk_cache(fx.root, engine, status_dir=status_dir).to_dict()

    assert resumed["resumed"] is True
    assert resumed["skipped_done_shards"] >= 2
    expected = whole.to_dict()
    for name in WHOLE_RUN:
        assert resumed[name] == expected[name], name
    assert resumed["corrupt"] == 7 and resumed["temp_files"] == 1
    assert resumed["migrated"] + resumed["already_present"] == len(fx.entries)
    # Only a kill leaves rows committed after the last status: they are found present.
    assert (resumed["already_present"] > 0) is (end == "killed")
    assert 0 < resumed["files_from_earlier_runs"] < fx.files
    assert _rows(engine) == _rows(engine, resumed["migration_id"]) == len(fx.entries)
    status = read_status(status_dir)
    assert status is not None and status["state"] == "done"
    assert status["summary"]["files_seen"] == fx.files


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "from cowrieprocessor.cli.enrich import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_killed_migration_resumes_and_finishes(db_url: str, tmp_path: Path) -> None:
    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import create_engine

    # Enough entries that the killed run is still busy when the status file first shows
    # progress (written every STATUS_INTERVAL): with 1,200 a quiet machine had migrated
    # them all by then, and the kill came after the last row.
    fx = make_disk_cache(tmp_path / "disk", fresh=6000)
    expected = len(fx.entries)
    status_dir = tmp_path / "status"
    env = {**os.environ, "COWRIEPROC_STATUS_DIR": str(status_dir), "COWRIEPROC_DB_URL": db_url}
    engine = create_engine(db_url)
    schema.upgrade(engine)
    args = ("migrate-cache", "--from-disk", str(fx.root), "--to-database", "--json")

    # Batches of one entry: slow enough to be killed halfway, at a random batch.
    proc = _cli(*args, "--batch-size", "1", env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = read_status(status_dir)
        if status and status.get("summary", {}).get("migrated", 0) >= 150:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _rows(engine)
    status = read_status(status_dir)
    assert status is not None
    assert status["state"] == "running"
    assert 150 <= killed_at < expected

    resumed = _cli(*args, "--batch-size", "500", env=env)
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()
    summary = orjson.loads(out)
    assert summary["resumed"] is True
    assert summary["migration_id"] == status["migration_id"]
    assert summary["skipped_done_shards"] >= 1
    assert summary["migrated"] + summary["already_present"] + killed_at >= expected
    assert _rows(engine) == _rows(engine, summary["migration_id"]) == expected
    report = validate_migration(fx.root, engine, migration_id=summary["migration_id"])
    assert (report.matching, report.differences) == (expected, 0)
    # The shards finished before the kill count in the summary, their problems named.
    whole = migrate_disk_cache(fx.root, engine, status_dir=tmp_path / "dry", dry_run=True)
    for name in WHOLE_RUN:
        assert summary[name] == whole.to_dict()[name], name
    assert summary["files_from_earlier_runs"] > 0
    engine.dispose()
