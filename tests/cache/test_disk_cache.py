"""What only the disk backend has: its file layout, damaged files, and many processes."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cowrieprocessor.enrichment.cache import (
    CacheEntry,
    EnrichmentCacheManager,
    ManualClock,
    decode_record,
    encode_record,
    entry_from_record,
    entry_to_record,
)
from cowrieprocessor.enrichment.cache.disk import entry_location, is_plain_key
from cowrieprocessor.enrichment.outcome import Outcome, Status

DAY = timedelta(days=1)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def disk(cache_dir: Path, clock: ManualClock) -> EnrichmentCacheManager:
    return EnrichmentCacheManager(cache_dir, clock=clock)


def success(service: str, key: str, data: dict[str, Any] | None = None) -> Outcome:
    checked = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
    return Outcome(service, key, Status.SUCCESS, data=data or {"k": key}, checked_at=checked)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- layout --------------------------------------------------------------------------------


def test_exact_file_of_one_entry(
    disk: EnrichmentCacheManager, cache_dir: Path, t0: datetime
) -> None:
    outcome = Outcome(
        "dshield",
        "1.2.3.4",
        Status.SUCCESS,
        data={"asname": "EXAMPLE", "count": 7},
        http_status=200,
        checked_at=datetime(2026, 12, 3, 11, 59, 30, 500, tzinfo=UTC),
        latency_ms=85,
    )

    disk.store_cached(outcome)

    path = cache_dir / "dshield" / "1." / "1.2.3.4.json"
    assert all_files(cache_dir) == [path]
    assert path.read_bytes() == (
        b'{"format":1,"service":"dshield","key":"1.2.3.4",'
        b'"stored_at":"2026-12-03T12:00:00Z","expires_at":"2026-12-10T12:00:00Z",'
        b'"latency_ms":85,"outcome":{"v":1,"service":"dshield","key":"1.2.3.4",'
        b'"status":"success","reason":null,"http_status":200,"message":null,'
        b'"checked_at":"2026-12-03T11:59:30.000500Z","data":{"asname":"EXAMPLE","count":7}}}'
    )
    assert path.stat().st_mtime == t0.timestamp()


@pytest.mark.parametrize(
    ("service", "key", "relative"),
    [
        ("virustotal", "ab" + "0" * 62, "virustotal/ab/ab" + "0" * 62 + ".json"),
        ("hibp", "5BAA6", "hibp/5B/5BAA6.json"),
        ("spur", "2001:db8::1", "spur/20/2001:db8::1.json"),
        ("dshield", "8.8.8.8", "dshield/8./8.8.8.8.json"),
        ("urlhaus", "x", "urlhaus/x/x.json"),
    ],
)
def test_plain_keys_keep_the_operators_layout(
    disk: EnrichmentCacheManager, cache_dir: Path, service: str, key: str, relative: str
) -> None:
    disk.store_cached(success(service, key))

    assert all_files(cache_dir) == [cache_dir / relative]
    assert disk.path_for(service, key) == cache_dir / relative


UNSAFE_KEYS = [
    "",
    ".",
    "..",
    "../escape",
    "../../../../../../tmp/escape",
    "/etc/passwd",
    "a/../../b",
    "..\\..\\windows",
    "nul\x00byte",
    "ctrl\x01\x7f",
    "lone\ud800",
    "z" * 201,
    ".hidden",
    "~" + "0" * 64,
]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_stay_inside_the_cache_dir(
    disk: EnrichmentCacheManager, cache_dir: Path, tmp_path: Path, key: str
) -> None:
    assert not is_plain_key(key)

    disk.store_cached(success("urlhaus", key, {"key": key}))

    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    expected = cache_dir / "urlhaus" / digest[:2] / f"~{digest}.json"
    assert disk.path_for("urlhaus", key) == expected
    assert expected.resolve().is_relative_to(cache_dir.resolve())
    assert all_files(tmp_path) == [expected]
    got = disk.get_cached("urlhaus", key)
    assert got is not None
    assert got.key == key
    assert got.outcome.data == {"key": key}
    assert entry_from_record(decode_record(expected.read_bytes())).key == key


def test_hashed_and_plain_names_cannot_collide() -> None:
    digest = hashlib.sha256(b"a/b").hexdigest()

    assert entry_location("urlhaus", "a/b") == (digest[:2], f"~{digest}.json")
    assert entry_location("urlhaus", digest) == (digest[:2], f"{digest}.json")
    assert not is_plain_key(f"~{digest}")


def test_lone_surrogates_are_written_as_standard_json(
    disk: EnrichmentCacheManager, cache_dir: Path
) -> None:
    disk.store_cached(success("dshield", "9.9.9.9", {"v": "a\ud800b\x00"}))

    raw = (cache_dir / "dshield" / "9." / "9.9.9.9.json").read_bytes()

    assert b"\\ud800" in raw
    assert b"\\u0000" in raw
    assert raw.isascii()
    assert json.loads(raw)["outcome"]["data"] == {"v": "a\ud800b\x00"}


def test_entries_survive_a_new_manager(cache_dir: Path, clock: ManualClock) -> None:
    EnrichmentCacheManager(cache_dir, clock=clock).store_cached(success("spur", "4.4.4.4"))

    got = EnrichmentCacheManager(cache_dir, clock=clock).get_cached("spur", "4.4.4.4")

    assert got is not None
    assert got.outcome.data == {"k": "4.4.4.4"}


def test_durable_mode_stores_and_reads(cache_dir: Path, clock: ManualClock) -> None:
    disk = EnrichmentCacheManager(cache_dir, clock=clock, durable=True)

    disk.store_cached(success("hibp", "ABCDE"))

    got = disk.get_cached("hibp", "ABCDE")
    assert got is not None
    assert got.outcome.data == {"k": "ABCDE"}


# -- damaged files -------------------------------------------------------------------------


def _valid_bytes(key: str) -> bytes:
    outcome = success("dshield", key)
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    return encode_record(entry_to_record(CacheEntry("dshield", key, outcome, now, now + DAY)))


def _record(**changes: Any) -> bytes:
    """The valid record of 5.6.7.8, changed (``outer__inner=value``; ``...`` deletes)."""
    record = json.loads(_valid_bytes("5.6.7.8"))
    for field_path, value in changes.items():
        target = record
        *parents, leaf = field_path.split("__")
        for part in parents:
            target = target[part]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(record).encode()


DAMAGED = {
    "empty": b"",
    "truncated": _valid_bytes("5.6.7.8")[:57],
    "half-written": _valid_bytes("5.6.7.8")[:-1],
    "not-json": b"\x00\x01\x02 not json at all",
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "json-list": b"[1, 2, 3]",
    "json-null": b"null",
    "invalid-utf8": b'{"format": 1, "key": "\xff\xfe"}',
    "unknown-format": _record(format=2),
    "missing-outcome": _record(outcome=...),
    "missing-expires": _record(expires_at=...),
    "naive-time": _record(stored_at="2026-12-03T12:00:00"),
    "bad-time": _record(expires_at="next tuesday"),
    "other-key": _record(key="6.6.6.6", outcome__key="6.6.6.6"),
    "other-service": _record(service="spur", outcome__service="spur"),
    "key-mismatch-inside": _record(outcome__key="6.6.6.6"),
    "error-outcome": _record(outcome__status="error", outcome__reason="timeout"),
    "data-not-object": _record(outcome__data=[1, 2]),
    "latency-not-int": _record(latency_ms="85"),
    "envelope-version": _record(outcome__v=7),
    "bad-status": _record(outcome__status="maybe"),
}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_damaged_file_is_a_logged_miss_then_repaired(
    disk: EnrichmentCacheManager, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = disk.path_for("dshield", "5.6.7.8")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="cowrieprocessor.enrichment.cache.disk"):
        assert disk.get_cached("dshield", "5.6.7.8") is None
        assert disk.get_many("dshield", ["5.6.7.8"]) == {}

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert str(path) in warnings[0].getMessage()
    assert "treating it as a miss" in warnings[0].getMessage()
    assert disk.stats().services["dshield"].corrupt == 1
    assert disk.stats().services["dshield"].entries == 0

    disk.store_cached(success("dshield", "5.6.7.8", {"repaired": True}))

    got = disk.get_cached("dshield", "5.6.7.8")
    assert got is not None
    assert got.outcome.data == {"repaired": True}
    assert entry_from_record(decode_record(path.read_bytes())) == got
    assert disk.stats().services["dshield"].corrupt == 0


def test_valid_control_record_reads(disk: EnrichmentCacheManager) -> None:
    # The damaged records above are built from this one; it must be a hit, or the
    # damage cases prove nothing.
    path = disk.path_for("dshield", "5.6.7.8")
    path.parent.mkdir(parents=True)
    path.write_bytes(_record())

    got = disk.get_cached("dshield", "5.6.7.8")

    assert got is not None
    assert got.outcome.data == {"k": "5.6.7.8"}


def test_missing_file_is_a_quiet_miss(
    disk: EnrichmentCacheManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="cowrieprocessor.enrichment.cache.disk"):
        assert disk.get_cached("dshield", "7.7.7.7") is None

    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- cleanup of files ----------------------------------------------------------------------


def test_cleanup_removes_stale_temp_files_and_keeps_the_rest(
    disk: EnrichmentCacheManager, clock: ManualClock, t0: datetime
) -> None:
    disk.store_cached(success("urlhaus", "old.example"))  # 3 day TTL
    disk.store_cached(success("virustotal", "f" * 64))  # 30 day TTL
    shard = disk.path_for("urlhaus", "old.example").parent
    stale = shard / "old.example.json.123.abcd.tmp"
    fresh = shard / "old.example.json.456.ef01.tmp"
    corrupt = disk.path_for("urlhaus", "bad.example")
    for path, content in ((stale, b"{"), (fresh, b"{"), (corrupt, b"")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    now = clock.advance(4 * DAY)
    os.utime(stale, (now.timestamp() - 3601, now.timestamp() - 3601))
    os.utime(fresh, (now.timestamp() - 3599, now.timestamp() - 3599))

    removed = disk.cleanup_expired()

    assert removed == 1
    assert not disk.path_for("urlhaus", "old.example").exists()
    assert not stale.exists()
    assert fresh.exists()
    assert corrupt.exists()
    assert disk.get_cached("virustotal", "f" * 64) is not None


def test_stats_ignore_temp_and_foreign_files(
    disk: EnrichmentCacheManager, cache_dir: Path
) -> None:
    disk.store_cached(success("dshield", "1.1.1.1"))
    shard = disk.path_for("dshield", "1.1.1.1").parent
    (shard / "1.1.1.1.json.1.aaaa.tmp").write_bytes(b"partial")
    (shard / "README").write_text("not an entry")
    (cache_dir / "Not A Service").mkdir()
    (cache_dir / "stray.json").write_bytes(b"{}")

    stats = disk.stats()

    assert sorted(stats.services) == ["dshield"]
    assert stats.services["dshield"].entries == 1
    assert stats.services["dshield"].bytes == disk.path_for("dshield", "1.1.1.1").stat().st_size


# -- many processes ------------------------------------------------------------------------

WRITERS = 4
WRITES = 200
SHARED_KEYS = ("1.2.3.4", "../shared\x00key")


def _payload(writer: int, n: int) -> dict[str, Any]:
    # Sizes vary from a few bytes to ~40 KB, so a torn write could not look complete.
    return {"writer": writer, "n": n, "pad": "p" * ((writer * 7919 + n * 104729) % 40_000)}


def _key_for(writer: int, n: int) -> str:
    return SHARED_KEYS[n % 2] if n % 3 else f"10.9.{writer}.1"


def _write_many(cache_dir: str, writer: int) -> None:
    disk = EnrichmentCacheManager(cache_dir, clock=ManualClock(datetime(2026, 12, 3, tzinfo=UTC)))
    for n in range(WRITES):
        disk.store_cached(success("dshield", _key_for(writer, n), _payload(writer, n)))


def test_concurrent_writers_in_several_processes(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = EnrichmentCacheManager(
        cache_dir, clock=ManualClock(datetime(2026, 12, 3, 1, tzinfo=UTC))
    )
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_write_many, args=(str(cache_dir), w)) for w in range(WRITERS)
    ]
    written: dict[str, list[dict[str, Any]]] = {}
    for w in range(WRITERS):
        for n in range(WRITES):
            written.setdefault(_key_for(w, n), []).append(_payload(w, n))

    reads = 0
    with caplog.at_level(logging.WARNING, logger="cowrieprocessor.enrichment.cache.disk"):
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            for key in SHARED_KEYS:
                got = reader.get_cached("dshield", key)
                if got is not None:
                    reads += 1
                    assert got.outcome.data in written[key]
            time.sleep(0.0005)
        for worker in workers:
            worker.join(timeout=60)

    assert [w.exitcode for w in workers] == [0] * WRITERS
    assert caplog.records == []
    assert reads > 0
    files = all_files(cache_dir)
    assert [f for f in files if f.name.endswith(".tmp")] == []
    assert len(files) == len(SHARED_KEYS) + WRITERS
    for key, values in written.items():
        got = reader.get_cached("dshield", key)
        assert got is not None
        assert got.outcome.data in values
    for w in range(WRITERS):
        own = reader.get_cached("dshield", f"10.9.{w}.1")
        assert own is not None
        assert own.outcome.data == _payload(w, max(n for n in range(WRITES) if n % 3 == 0))


def test_scan_reports_entries_problems_and_temp_files(
    disk: EnrichmentCacheManager, cache_dir: Path
) -> None:
    good = disk.store_cached(success("hibp", "ABCDE"))
    bad = disk.path_for("hibp", "FFFFF")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"{")
    temp = disk.path_for("hibp", "ABCDE").with_name("ABCDE.json.9.beef.tmp")
    temp.write_bytes(b"x")
    disk.store_cached(success("spur", "3.3.3.3"))

    items = {item.path.name: item for item in disk.scan("hibp")}

    assert sorted(items) == ["ABCDE.json", "ABCDE.json.9.beef.tmp", "FFFFF.json"]
    assert items["ABCDE.json"].entry == good
    assert items["ABCDE.json"].problem is None
    assert items["ABCDE.json"].size == disk.path_for("hibp", "ABCDE").stat().st_size
    assert items["FFFFF.json"].entry is None
    assert items["FFFFF.json"].problem is not None
    assert "JSONDecodeError" in items["FFFFF.json"].problem
    assert items["ABCDE.json.9.beef.tmp"].is_temp
    assert (items["ABCDE.json.9.beef.tmp"].entry, items["ABCDE.json.9.beef.tmp"].size) == (None, 1)
    assert sorted(item.service for item in disk.scan()) == ["hibp", "hibp", "hibp", "spur"]


def test_failed_store_raises_and_leaves_no_temp_file(
    disk: EnrichmentCacheManager, cache_dir: Path
) -> None:
    blocked = disk.path_for("dshield", "2.2.2.2")
    (blocked / "inside").mkdir(parents=True)  # a directory where the entry file belongs

    with pytest.raises(OSError, match=r"Is a directory|Directory not empty"):
        disk.store_cached(success("dshield", "2.2.2.2"))

    assert [p.name for p in blocked.parent.iterdir()] == ["2.2.2.2.json"]
    assert disk.get_cached("dshield", "2.2.2.2") is None


def test_package_exports() -> None:
    import cowrieprocessor.enrichment.cache as package

    assert sorted(package.__all__) == sorted(
        [
            "AGE_BUCKETS",
            "DEFAULT_TTLS",
            "Cache",
            "CacheEntry",
            "CacheStats",
            "Clock",
            "DiskItem",
            "EnrichmentCacheManager",
            "EnrichmentDatabaseCache",
            "HybridCacheManager",
            "ManualClock",
            "MemoryCache",
            "ServiceCacheStats",
            "TTLPolicy",
            "decode_record",
            "encode_record",
            "entry_from_record",
            "entry_to_record",
            "system_clock",
        ]
    )
    assert all(hasattr(package, name) for name in package.__all__)
