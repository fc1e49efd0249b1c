"""EnrichmentService: memo, then cache, then client; only definitive outcomes cached."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, delete
from werkzeug import Response

from cowrieprocessor.db.models import EnrichmentCacheEntry, table_of
from cowrieprocessor.enrichment.cache import Cache, MemoryCache
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.service import EnrichmentService
from cowrieprocessor.enrichment.settings import SERVICE_NAMES
from tests.enrichment.servers import KEYS, FakeProviders, make_settings

ADMIN_SHA1 = "D033E22AE348AEB5660FC2140AEC35850C4DA997"
Build = Callable[..., EnrichmentService]


@pytest.fixture
def providers(httpserver: HTTPServer) -> FakeProviders:
    fake = FakeProviders(httpserver, keys=dict(KEYS))
    fake.breached[ADMIN_SHA1] = 7
    return fake


@pytest.fixture
def build(providers: FakeProviders, tmp_path: Path) -> Iterator[Build]:
    """``build(cache, **settings)``: a service over fresh clients of every service."""
    registry = LimiterRegistry()
    clients: list[ServiceClient] = []

    def make(cache: Cache, **changes: object) -> EnrichmentService:
        settings = make_settings(providers.base_url, tmp_path, **changes)
        made = {
            name: ServiceClient.from_settings(name, settings, limiters=registry)
            for name in SERVICE_NAMES
        }
        clients.extend(made.values())
        return EnrichmentService(made, cache)

    yield make
    for client in clients:
        client.close()
    registry.close()


def test_a_key_is_asked_once_per_run_then_served_from_the_cache(
    build: Build, providers: FakeProviders
) -> None:
    cache = MemoryCache()
    first = build(cache)
    one = first.enrich_session("a", "45.84.107.4")
    two = first.enrich_session("b", "45.84.107.4")
    assert one == two
    assert sorted(one) == ["dshield", "spur", "urlhaus", "virustotal"]
    assert providers.by_service() == {"dshield": 1, "spur": 1, "urlhaus": 1, "virustotal": 1}
    assert (first.stats["dshield"].cache_misses, first.stats["dshield"].memo_hits) == (1, 1)

    second = build(cache)  # a new run over the same cache
    again = second.enrich_session("c", "45.84.107.4")
    assert {k: v.status for k, v in again.items()} == {k: v.status for k, v in one.items()}
    assert again["dshield"].checked_at == one["dshield"].checked_at  # the cached answer
    assert providers.requests() == 4
    assert second.stats["dshield"].cache_hits == 1
    second.refresh_api_calls()
    assert second.stats["dshield"].api_calls == 0


def test_errors_are_not_cached_and_are_asked_again_next_run(
    build: Build, providers: FakeProviders
) -> None:
    cache = MemoryCache()
    providers.override("dshield", Response("busy", status=503))
    service = build(cache)
    outcome = service.lookup("dshield", "45.84.107.4")
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        Status.ERROR,
        "http_status",
        503,
    )
    assert service.lookup("dshield", "45.84.107.4") is outcome  # memo: not asked again
    assert cache.get_cached("dshield", "45.84.107.4") is None
    assert service.failed_services() == ["dshield"]
    assert service.stats["dshield"].last_error == "error/http_status: dshield: HTTP 503"

    providers.clear("dshield")
    fresh = build(cache).lookup("dshield", "45.84.107.4")
    assert fresh.status == Status.SUCCESS
    assert providers.requests("dshield") == 2
    entry = cache.get_cached("dshield", "45.84.107.4")
    assert entry is not None and entry.outcome.status == Status.SUCCESS


def test_addresses_that_are_not_global_never_reach_a_client(
    build: Build, providers: FakeProviders
) -> None:
    service = build(MemoryCache())
    for address in ("10.0.0.5", "172.16.3.4", "127.0.0.1", "::1", "224.0.0.1", "nonsense", None):
        outcomes = service.enrich_session("s", address)
        assert {k: (v.status, v.reason) for k, v in outcomes.items()}["dshield"] == (
            Status.SKIPPED,
            "not_routable",
        )
    assert providers.requests() == 0
    assert service.failed_services() == []
    assert all(stats.attempted == 0 for stats in service.stats.values())


def test_virustotal_ip_reputation_only_with_a_key(build: Build, providers: FakeProviders) -> None:
    service = build(MemoryCache(), vt_api_key=None)
    assert sorted(service.enrich_session("s", "45.84.107.5")) == ["dshield", "spur", "urlhaus"]
    files = service.enrich_file("ab" * 32, "x.sh", None)
    assert (files["virustotal"].status, files["virustotal"].reason) == (
        Status.SKIPPED,
        "no_api_key",
    )
    assert (files["urlhaus"].status, files["urlhaus"].reason) == (
        Status.SKIPPED,
        "not_applicable",
    )
    assert providers.requests("virustotal") == 0


def test_passwords_use_the_cached_range_of_their_prefix(
    build: Build, providers: FakeProviders
) -> None:
    cache = MemoryCache()
    service = build(cache)
    admin = service.enrich_password("admin")
    assert (admin.status, admin.key, admin.data) == (Status.SUCCESS, ADMIN_SHA1, {"count": 7})
    nul = service.enrich_password("x\x00y")
    assert (nul.status, nul.data) == (Status.NOT_FOUND, None)
    assert providers.requests("hibp") == 2
    assert sorted(s.key for s in providers.seen) == ["09A6A", "D033E"]  # prefixes only

    # Another password of a cached range is answered from the range, without a request.
    stored = cache.get_cached("hibp", "D033E")
    assert stored is not None
    body = stored.outcome.data["body"] if stored.outcome.data else ""
    other_suffix = "F" * 35
    cache.store_cached(
        Outcome("hibp", "D033E", Status.SUCCESS, data={"body": f"{body}\n{other_suffix}:3"})
    )
    later = build(cache).enrich_password("admin")
    assert later.data == {"count": 7}
    assert providers.requests("hibp") == 2


def test_a_cache_that_cannot_be_written_does_not_stop_the_run(
    build: Build, providers: FakeProviders, tmp_path: Path
) -> None:
    from cowrieprocessor.enrichment.cache import EnrichmentCacheManager

    cache_dir = tmp_path / "cache"
    service = build(MemoryCache())
    service.cache = EnrichmentCacheManager(cache_dir)
    # A file where the service's directory should be: every store fails with OSError.
    (cache_dir / "dshield").write_text("in the way", encoding="utf-8")
    outcome = service.lookup("dshield", "45.84.107.4")
    assert outcome.status == Status.SUCCESS
    assert service.lookup("dshield", "45.84.107.4") is outcome
    assert providers.requests("dshield") == 1


def test_keys_are_sent_but_never_in_outcomes(build: Build, providers: FakeProviders) -> None:
    service = build(MemoryCache(), spur_api_key=SecretStr("wrong-" + KEYS["spur"]))
    outcome = service.lookup("spur", "45.84.107.4")
    assert (outcome.status, outcome.reason) == (Status.ERROR, "auth")
    text = repr(outcome) + repr(outcome.to_envelope()) + repr(service.stats)
    assert KEYS["spur"] not in text


def test_a_page_s_cache_entries_are_read_in_one_batch_before_its_lookups(
    build: Build, providers: FakeProviders, engine: Engine
) -> None:
    cache = EnrichmentDatabaseCache(engine)
    first = build(cache)
    known = ["45.84.107.4", "45.84.107.5"]
    answers = [first.lookup("dshield", ip) for ip in known]
    assert [a.status for a in answers] == [Status.SUCCESS, Status.NOT_FOUND]

    second = build(cache)
    page = [*known, "45.84.107.7", "10.0.0.1", None]
    assert second.prefetch_sessions((ip, ["dshield"]) for ip in page) == 2
    with engine.begin() as conn:  # from here on only the batch read can answer
        conn.execute(delete(table_of(EnrichmentCacheEntry)))

    outcomes = [second.lookup("dshield", ip) for ip in page]
    assert outcomes[:2] == answers
    assert outcomes[2].status == Status.SUCCESS  # asked: the batch found it missing
    assert [(o.status, o.reason) for o in outcomes[3:]] == [
        (Status.SKIPPED, "not_routable"),
        (Status.SKIPPED, "not_routable"),
    ]
    assert providers.by_service() == {"dshield": 3}
    stats = second.stats["dshield"]
    assert (stats.cache_hits, stats.cache_misses, stats.memo_hits) == (2, 1, 0)
    # A second look at the page is the run's memo, not the batch nor the cache.
    assert second.prefetch_sessions((ip, ["dshield"]) for ip in page) == 0
    assert [second.lookup("dshield", ip) for ip in known] == answers
    assert second.stats["dshield"].memo_hits == 2
    cache.close()
