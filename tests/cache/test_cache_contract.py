"""The one suite every cache backend passes (backends are listed in conftest.BACKENDS)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cowrieprocessor.enrichment.cache import (
    AGE_BUCKETS,
    Cache,
    CacheEntry,
    ManualClock,
    TTLPolicy,
    encode_record,
    entry_to_record,
)
from cowrieprocessor.enrichment.outcome import Outcome, SkipReason, Status

DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


def success(service: str, key: str, data: dict[str, Any] | None = None, **extra: Any) -> Outcome:
    return Outcome(
        service, key, Status.SUCCESS, data=data if data is not None else {"k": key}, **extra
    )


def not_found(service: str, key: str, **extra: Any) -> Outcome:
    return Outcome(service, key, Status.NOT_FOUND, **extra)


# -- roundtrip -----------------------------------------------------------------------------


def test_store_then_get_returns_every_field(cache: Cache, t0: datetime) -> None:
    checked = datetime(2026, 12, 3, 11, 59, 58, 123456, tzinfo=UTC)
    outcome = Outcome(
        "dshield",
        "198.51.100.7",
        Status.SUCCESS,
        data={"asname": "EXAMPLE-AS", "count": 42, "attacks": 3, "nested": [1, None, True]},
        http_status=200,
        message="ok",
        checked_at=checked,
        latency_ms=85,
    )

    stored = cache.store_cached(outcome)
    got = cache.get_cached("dshield", "198.51.100.7")

    assert stored == CacheEntry("dshield", "198.51.100.7", outcome, t0, t0 + 7 * DAY)
    assert got is not None
    assert got.service == "dshield"
    assert got.key == "198.51.100.7"
    assert got.stored_at == t0
    assert got.expires_at == t0 + 7 * DAY
    assert got.outcome.service == "dshield"
    assert got.outcome.key == "198.51.100.7"
    assert got.outcome.status is Status.SUCCESS
    assert got.outcome.reason is None
    assert got.outcome.data == {
        "asname": "EXAMPLE-AS",
        "count": 42,
        "attacks": 3,
        "nested": [1, None, True],
    }
    assert got.outcome.http_status == 200
    assert got.outcome.message == "ok"
    assert got.outcome.checked_at == checked
    assert got.outcome.latency_ms == 85
    assert got == stored


def test_not_found_roundtrip_with_and_without_data(cache: Cache, t0: datetime) -> None:
    cache.store_cached(not_found("virustotal", "a" * 64, http_status=404))
    cache.store_cached(not_found("urlhaus", "evil.example", data={"query_status": "no_results"}))

    vt = cache.get_cached("virustotal", "a" * 64)
    uh = cache.get_cached("urlhaus", "evil.example")

    assert vt is not None
    assert vt.outcome.status is Status.NOT_FOUND
    assert vt.outcome.data is None
    assert vt.outcome.http_status == 404
    assert vt.expires_at == t0 + 10 * DAY
    assert uh is not None
    assert uh.outcome.data == {"query_status": "no_results"}
    assert uh.expires_at == t0 + DAY


def test_miss_for_unknown_key_and_for_other_service(cache: Cache) -> None:
    cache.store_cached(success("dshield", "192.0.2.1"))

    assert cache.get_cached("dshield", "192.0.2.2") is None
    assert cache.get_cached("spur", "192.0.2.1") is None
    assert cache.get_cached("dshield", "192.0.2.1") is not None


def test_store_replaces_the_entry_of_the_same_key(cache: Cache, clock: ManualClock) -> None:
    cache.store_cached(success("spur", "192.0.2.9", {"v": 1}))
    later = clock.advance(DAY)
    cache.store_cached(success("spur", "192.0.2.9", {"v": 2}))

    got = cache.get_cached("spur", "192.0.2.9")

    assert got is not None
    assert got.outcome.data == {"v": 2}
    assert got.stored_at == later
    assert cache.stats().services["spur"].entries == 1


def test_get_many_returns_fresh_hits_only(cache: Cache, clock: ManualClock) -> None:
    for key in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        cache.store_cached(success("dshield", key))
    cache.store_cached(not_found("dshield", "10.0.0.4"))  # expires after 7/3 days
    clock.advance(3 * DAY)

    found = cache.get_many("dshield", ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.9", "10.0.0.1"])

    assert sorted(found) == ["10.0.0.1", "10.0.0.3"]
    assert found["10.0.0.1"].outcome.data == {"k": "10.0.0.1"}
    assert found["10.0.0.3"].outcome.data == {"k": "10.0.0.3"}
    assert cache.get_many("dshield", []) == {}
    assert cache.get_many("urlhaus", ["10.0.0.1"]) == {}
    with pytest.raises(TypeError):
        cache.get_many("dshield", "10.0.0.1")


# -- TTL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "ttl"),
    [
        ("virustotal", 30 * DAY),
        ("dshield", 7 * DAY),
        ("urlhaus", 3 * DAY),
        ("spur", 14 * DAY),
        ("hibp", 60 * DAY),
    ],
)
def test_ttl_edges(
    cache: Cache, clock: ManualClock, t0: datetime, service: str, ttl: timedelta
) -> None:
    cache.store_cached(success(service, "k1"))
    cache.store_cached(not_found(service, "k2"))

    clock.set(t0 + ttl / 3 - TICK)
    assert cache.get_cached(service, "k2") is not None
    clock.set(t0 + ttl / 3)
    assert cache.get_cached(service, "k2") is None
    assert cache.get_cached(service, "k1") is not None

    clock.set(t0 + ttl - TICK)
    assert cache.get_cached(service, "k1") is not None
    clock.set(t0 + ttl)
    assert cache.get_cached(service, "k1") is None
    clock.set(t0 + ttl + TICK)
    assert cache.get_cached(service, "k1") is None
    assert cache.get_many(service, ["k1", "k2"]) == {}


def test_policy_overrides_apply(make_cache: Callable[..., Cache], t0: datetime) -> None:
    policy = TTLPolicy({"dshield": 2 * DAY}, not_found_ttls={"dshield": timedelta(hours=1)})
    cache = make_cache(policy)

    assert cache.store_cached(success("dshield", "a")).expires_at == t0 + 2 * DAY
    assert cache.store_cached(not_found("dshield", "b")).expires_at == t0 + timedelta(hours=1)


def test_explicit_times_are_kept(cache: Cache, t0: datetime, clock: ManualClock) -> None:
    stored_at = t0 - 10 * DAY + timedelta(microseconds=250)
    expires_at = t0 + DAY

    entry = cache.store_cached(
        success("hibp", "5BAA6"), stored_at=stored_at, expires_at=expires_at
    )
    got = cache.get_cached("hibp", "5BAA6")

    assert entry.stored_at == stored_at
    assert entry.expires_at == expires_at
    assert got is not None
    assert (got.stored_at, got.expires_at) == (stored_at, expires_at)
    clock.set(expires_at)
    assert cache.get_cached("hibp", "5BAA6") is None


@pytest.mark.parametrize(
    "times",
    [
        {"stored_at": datetime(2026, 12, 3, 12, 0)},
        {"expires_at": datetime(2026, 12, 9, 12, 0)},
        {"expires_at": datetime(2026, 12, 3, 12, 0, tzinfo=UTC)},
        {
            "stored_at": datetime(2026, 12, 4, tzinfo=UTC),
            "expires_at": datetime(2026, 12, 3, tzinfo=UTC),
        },
    ],
    ids=["naive-stored", "naive-expires", "expires-equals-stored", "expires-before-stored"],
)
def test_bad_times_are_refused(cache: Cache, times: dict[str, datetime]) -> None:
    with pytest.raises(ValueError, match=r"timezone-aware|must be after"):
        cache.store_cached(success("dshield", "192.0.2.1"), **times)

    assert cache.get_cached("dshield", "192.0.2.1") is None


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome("dshield", "192.0.2.1", Status.ERROR, reason="timeout"),
        Outcome("virustotal", "b" * 64, Status.ERROR, reason="http_status", http_status=503),
        Outcome("spur", "192.0.2.1", Status.SKIPPED, reason=SkipReason.QUOTA_SPENT),
        Outcome("dshield", "10.0.0.1", Status.SKIPPED, reason=SkipReason.NOT_ROUTABLE),
    ],
    ids=["error-timeout", "error-503", "skipped-quota", "skipped-final"],
)
def test_error_and_skipped_outcomes_are_refused(cache: Cache, outcome: Outcome) -> None:
    with pytest.raises(ValueError, match="only success and not_found are cached"):
        cache.store_cached(outcome)

    assert cache.get_cached(outcome.service, outcome.key) is None
    assert cache.stats().total.entries == 0


@pytest.mark.parametrize("service", ["", "DShield", "../x", "a/b", "x" * 33, "1abc"])
def test_invalid_service_names_are_refused(cache: Cache, service: str) -> None:
    with pytest.raises(ValueError, match="service name"):
        cache.store_cached(success(service, "k"))
    with pytest.raises(ValueError, match="service name"):
        cache.get_cached(service, "k")


# -- cleanup and stats ---------------------------------------------------------------------


def test_cleanup_removes_exactly_the_expired(cache: Cache, clock: ManualClock) -> None:
    for n in range(5):
        cache.store_cached(success("dshield", f"10.1.0.{n}"))
    for n in range(3):
        cache.store_cached(success("urlhaus", f"host{n}.example"))
    for n in range(2):
        cache.store_cached(not_found("dshield", f"10.2.0.{n}"))
    clock.advance(4 * DAY)

    assert cache.cleanup_expired(batch_size=2) == 5
    assert cache.cleanup_expired() == 0
    stats = cache.stats()
    assert stats.services["dshield"].entries == 5
    assert stats.services["dshield"].expired == 0
    assert "urlhaus" not in stats.services or stats.services["urlhaus"].entries == 0
    assert sorted(cache.get_many("dshield", [f"10.1.0.{n}" for n in range(5)])) == [
        f"10.1.0.{n}" for n in range(5)
    ]
    with pytest.raises(ValueError, match="batch_size"):
        cache.cleanup_expired(batch_size=0)


def test_stats_numbers_are_exact(cache: Cache, reports_record_bytes: bool, t0: datetime) -> None:
    far = t0 + 365 * DAY
    ages = {
        "a": DAY / 2,
        "b": DAY - TICK,
        "c": DAY,
        "d": 6 * DAY,
        "e": 7 * DAY,
        "f": 29 * DAY,
        "g": 30 * DAY,
        "h": 400 * DAY,
    }
    entries = [
        cache.store_cached(success("virustotal", key), stored_at=t0 - age, expires_at=far)
        for key, age in ages.items()
    ]
    entries.append(
        cache.store_cached(not_found("virustotal", "i"), stored_at=t0 - 2 * DAY, expires_at=t0)
    )
    entries.append(
        cache.store_cached(success("virustotal", "j"), stored_at=t0 - 3 * DAY, expires_at=t0 - DAY)
    )
    entries.append(cache.store_cached(not_found("hibp", "ABCDE")))
    entries.append(cache.store_cached(not_found("hibp", "00000", data={"padding": True})))

    stats = cache.stats()

    assert stats.computed_at == t0
    assert sorted(stats.services) == ["hibp", "virustotal"]
    vt = stats.services["virustotal"].to_dict()
    vt_bytes = vt.pop("bytes")
    assert vt == {
        "service": "virustotal",
        "entries": 10,
        "expired": 2,
        "corrupt": 0,
        "by_status": {"not_found": 1, "success": 9},
        "age_buckets": {"<1d": 2, "1-7d": 4, "7-30d": 2, ">30d": 2},
    }
    hibp = stats.services["hibp"]
    assert (hibp.entries, hibp.expired, hibp.by_status) == (2, 0, {"not_found": 2})
    assert hibp.age_buckets == {"<1d": 2, "1-7d": 0, "7-30d": 0, ">30d": 0}
    total = stats.total
    assert (total.entries, total.expired) == (12, 2)
    assert total.bytes == vt_bytes + hibp.bytes
    assert tuple(total.age_buckets) == AGE_BUCKETS
    if reports_record_bytes:
        sizes = {e.service: 0 for e in entries}
        for e in entries:
            sizes[e.service] += len(encode_record(entry_to_record(e)))
        assert vt_bytes == sizes["virustotal"]
        assert hibp.bytes == sizes["hibp"]
    else:
        assert vt_bytes > 0
        assert hibp.bytes > 0


def test_stats_of_an_empty_cache(cache: Cache) -> None:
    stats = cache.stats()

    assert stats.services == {}
    assert stats.total.to_dict()["entries"] == 0
    assert stats.to_dict()["total"]["age_buckets"] == {"<1d": 0, "1-7d": 0, "7-30d": 0, ">30d": 0}


# -- values, awkward text, size ------------------------------------------------------------


def test_entries_are_values(cache: Cache) -> None:
    data: dict[str, Any] = {"names": ["a"], "stats": {"malicious": 1}}
    cache.store_cached(success("virustotal", "c" * 64, data))
    data["names"].append("changed-after-store")

    first = cache.get_cached("virustotal", "c" * 64)
    assert first is not None
    assert first.outcome.data is not None
    first.outcome.data["stats"]["malicious"] = 99
    second = cache.get_cached("virustotal", "c" * 64)

    assert second is not None
    assert second.outcome.data == {"names": ["a"], "stats": {"malicious": 1}}


AWKWARD_DATA: dict[str, Any] = {
    "nul": "before\x00after",
    "surrogates": "lone \ud800 high, lone \udfff low, pair \U0001f600",
    "escape_mark": "\ue000 private use",
    "escape_text": "\\u0000 and \\ud800 as plain text",
    "control": "\x1b[31mred\x1b[0m\r\n\t\x7f",
    "key\x00with nul": 1,
    "key \ud83d lone": [None, "\x00", {"\udc00": "\ud800\x00"}],
    "": "empty key",
    "long": "€" * 10_000,
    "numbers": [0, -1, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, 1.5, -0.0, 1e300],
}


def test_awkward_payload_roundtrips_exactly(cache: Cache) -> None:
    cache.store_cached(success("dshield", "203.0.113.5", AWKWARD_DATA, message="m\x00\ud800"))

    got = cache.get_cached("dshield", "203.0.113.5")

    assert got is not None
    assert got.outcome.data == AWKWARD_DATA
    assert list(got.outcome.data) == list(AWKWARD_DATA)
    assert got.outcome.message == "m\x00\ud800"


AWKWARD_KEYS = [
    "",
    ".",
    "..",
    "../../etc/passwd",
    "/absolute",
    "a/b",
    "back\\slash",
    "nul\x00key",
    "\x00",
    "lone\ud800",
    "\udfff",
    "new\nline",
    "tab\tkey",
    "é-unicode",
    "x" * 200,
    "x" * 201,
    "y" * 5000,
    "~hashed-looking",
    "http://evil.example/bins/x86?a=1&b=2",
    "::1",
    "2001:db8::7",
]


def test_awkward_keys_roundtrip_and_stay_apart(cache: Cache) -> None:
    for n, key in enumerate(AWKWARD_KEYS):
        cache.store_cached(success("urlhaus", key, {"n": n}))

    for n, key in enumerate(AWKWARD_KEYS):
        got = cache.get_cached("urlhaus", key)
        assert got is not None, repr(key)
        assert got.key == key
        assert got.outcome.key == key
        assert got.outcome.data == {"n": n}
    assert cache.stats().services["urlhaus"].entries == len(AWKWARD_KEYS)
    assert sorted(cache.get_many("urlhaus", AWKWARD_KEYS)) == sorted(AWKWARD_KEYS)


def test_five_megabyte_payload_roundtrips(cache: Cache) -> None:
    data = {
        "rows": [
            {"i": i, "name": f"file-{i}.bin", "tags": ["x" * 16, "\x00"]} for i in range(40_000)
        ],
        "blob": "z" * 2_500_000,
    }
    assert len(encode_record({"d": data})) > 5_000_000

    cache.store_cached(success("virustotal", "d" * 64, data))
    got = cache.get_cached("virustotal", "d" * 64)

    assert got is not None
    assert got.outcome.data == data


def test_five_megabyte_payload_with_lone_surrogates_roundtrips(cache: Cache) -> None:
    data = {"blob": "\ud800" + "q" * 5_000_000 + "\x00"}

    cache.store_cached(success("virustotal", "e" * 64, data))
    got = cache.get_cached("virustotal", "e" * 64)

    assert got is not None
    assert got.outcome.data == data


# -- invalidate ----------------------------------------------------------------------------


def _fill_for_invalidate(cache: Cache, t0: datetime) -> None:
    far = t0 + 100 * DAY
    for n, age in enumerate((1, 5, 10, 40)):
        stored = t0 - age * DAY
        cache.store_cached(success("spur", f"s{n}"), stored_at=stored, expires_at=far)
        cache.store_cached(not_found("spur", f"n{n}"), stored_at=stored, expires_at=far)
    cache.store_cached(success("dshield", "s0"))


@pytest.mark.parametrize(
    ("filters", "removed", "left"),
    [
        ({}, 8, []),
        ({"key": "s1"}, 1, ["n0", "n1", "n2", "n3", "s0", "s2", "s3"]),
        ({"key": "nope"}, 0, ["n0", "n1", "n2", "n3", "s0", "s1", "s2", "s3"]),
        ({"status": "not_found"}, 4, ["s0", "s1", "s2", "s3"]),
        ({"status": Status.ERROR}, 0, ["n0", "n1", "n2", "n3", "s0", "s1", "s2", "s3"]),
        ({"stored_before_days": 5}, 4, ["n0", "n1", "s0", "s1"]),
        ({"stored_before_days": 5, "status": "success"}, 2, ["n0", "n1", "n2", "n3", "s0", "s1"]),
        (
            {"stored_before_days": 5, "key": "s1"},
            0,
            ["n0", "n1", "n2", "n3", "s0", "s1", "s2", "s3"],
        ),
    ],
)
def test_invalidate_removes_exactly_the_matching(
    cache: Cache, t0: datetime, filters: dict[str, Any], removed: int, left: list[str]
) -> None:
    _fill_for_invalidate(cache, t0)
    if "stored_before_days" in filters:
        filters["stored_before"] = t0 - filters.pop("stored_before_days") * DAY

    assert cache.invalidate("spur", **filters) == removed

    keys = ["n0", "n1", "n2", "n3", "s0", "s1", "s2", "s3"]
    assert sorted(cache.get_many("spur", keys)) == left
    assert cache.get_cached("dshield", "s0") is not None
    assert cache.stats().total.entries == len(left) + 1


def test_integers_beyond_64_bits_roundtrip(cache: Cache) -> None:
    # No awkward text here, so a serialising backend takes its fast path.
    data = {"big": [2**63 - 1, -(2**63) - 1, 2**64, -(10**30), 10**30], "id": 12345678901234567890}

    cache.store_cached(success("virustotal", "9" * 64, data))
    got = cache.get_cached("virustotal", "9" * 64)

    assert got is not None
    assert got.outcome.data == data
    assert all(type(v) is int for v in got.outcome.data["big"])
