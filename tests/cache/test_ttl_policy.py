"""The TTL policy and the clock helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cowrieprocessor.enrichment.cache import DEFAULT_TTLS, ManualClock, TTLPolicy
from cowrieprocessor.enrichment.cache.ttl import is_expired, require_aware, system_clock
from cowrieprocessor.enrichment.outcome import Status

DAY = timedelta(days=1)


def test_default_ttls_are_the_operators_values() -> None:
    policy = TTLPolicy()

    assert dict(DEFAULT_TTLS) == {
        "virustotal": 30 * DAY,
        "dshield": 7 * DAY,
        "urlhaus": 3 * DAY,
        "spur": 14 * DAY,
        "hibp": 60 * DAY,
    }
    assert {name: policy.ttl_for(name, Status.SUCCESS) for name in DEFAULT_TTLS} == DEFAULT_TTLS
    assert {name: policy.ttl_for(name, "not_found") for name in DEFAULT_TTLS} == {
        "virustotal": 10 * DAY,
        "dshield": timedelta(days=2, hours=8),
        "urlhaus": DAY,
        "spur": timedelta(days=4, hours=16),
        "hibp": 20 * DAY,
    }


def test_unknown_service_gets_the_default() -> None:
    policy = TTLPolicy(default_ttl=3 * DAY)

    assert policy.ttl_for("newservice", Status.SUCCESS) == 3 * DAY
    assert policy.ttl_for("newservice", Status.NOT_FOUND) == DAY
    assert TTLPolicy().ttl_for("newservice", Status.SUCCESS) == 7 * DAY


def test_overrides_replace_only_the_named_services() -> None:
    policy = TTLPolicy(
        {"dshield": 1 * DAY},
        not_found_ttls={"virustotal": timedelta(hours=6)},
        not_found_fraction=0.5,
    )

    assert policy.ttl_for("dshield", Status.SUCCESS) == DAY
    assert policy.ttl_for("dshield", Status.NOT_FOUND) == DAY / 2
    assert policy.ttl_for("virustotal", Status.SUCCESS) == 30 * DAY
    assert policy.ttl_for("virustotal", Status.NOT_FOUND) == timedelta(hours=6)
    assert policy.ttl_for("hibp", Status.SUCCESS) == 60 * DAY


def test_from_days() -> None:
    policy = TTLPolicy.from_days({"spur": 2.5}, {"spur": 0.25})

    assert policy.ttl_for("spur", Status.SUCCESS) == timedelta(days=2, hours=12)
    assert policy.ttl_for("spur", Status.NOT_FOUND) == timedelta(hours=6)


@pytest.mark.parametrize("status", [Status.ERROR, Status.SKIPPED, "error", "skipped"])
def test_error_and_skipped_have_no_ttl(status: Status | str) -> None:
    with pytest.raises(ValueError, match="only success and not_found are cached"):
        TTLPolicy().ttl_for("dshield", status)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttls": {"dshield": timedelta(0)}},
        {"ttls": {"dshield": -DAY}},
        {"not_found_ttls": {"hibp": timedelta(0)}},
        {"default_ttl": timedelta(0)},
        {"not_found_fraction": 0},
        {"not_found_fraction": 1.5},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must be positive|must be in"):
        TTLPolicy(**kwargs)  # type: ignore[arg-type]


def test_expires_at_is_stored_at_plus_ttl_in_utc() -> None:
    stored = datetime(2026, 12, 3, 14, 0, tzinfo=timezone(timedelta(hours=2)))

    expires = TTLPolicy().expires_at("urlhaus", Status.SUCCESS, stored)

    assert expires == datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert expires.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        TTLPolicy().expires_at("urlhaus", Status.SUCCESS, datetime(2026, 12, 3))


def test_expiry_edge_is_inclusive() -> None:
    edge = datetime(2026, 12, 3, tzinfo=UTC)

    assert is_expired(edge, edge - timedelta(microseconds=1)) is False
    assert is_expired(edge, edge) is True
    assert is_expired(edge, edge + timedelta(microseconds=1)) is True


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))

    assert clock() == datetime(2026, 1, 1, tzinfo=UTC)
    assert clock.advance(DAY) == datetime(2026, 1, 2, tzinfo=UTC)
    assert clock() == datetime(2026, 1, 2, tzinfo=UTC)
    clock.set(datetime(2025, 5, 5, tzinfo=UTC))
    assert clock() == datetime(2025, 5, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 5, 5))


def test_system_clock_is_aware_utc() -> None:
    now = system_clock()

    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    assert require_aware(now, "now") == now
