"""The limiter: observed request times never exceed the configured rate."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr
from pyrate_limiter import AbstractBucket, Rate, SQLiteBucket
from pytest_httpserver import HTTPServer, URIPattern
from werkzeug import Request, Response

from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Status
from cowrieprocessor.enrichment.services import build_service
from cowrieprocessor.enrichment.settings import ServiceSettings
from tests.enrichment.conftest import FakeClock, sample_body, settings_for

MakeClient = Callable[..., ServiceClient]
IPS = [f"45.84.107.{n}" for n in range(1, 40)]


class _ContextPath(URIPattern):
    def match(self, uri: str) -> bool:
        return uri.startswith("/v2/context/")


def _timestamps(server: HTTPServer, clock: Callable[[], float]) -> list[float]:
    """Serve Spur successes on every path, noting when each request arrived."""
    seen: list[float] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            seen.append(clock())
        return Response(sample_body("spur", "success.json"), status=200)

    server.expect_request(_ContextPath()).respond_with_handler(handler)
    return seen


def _max_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(
        sum(1 for t in ordered[i:] if t - start < window) for i, start in enumerate(ordered)
    )


def test_observed_rate_never_exceeds_the_limit(
    httpserver: HTTPServer, real_limiters: LimiterRegistry
) -> None:
    seen = _timestamps(httpserver, time.monotonic)
    settings = settings_for("spur", httpserver, rate_limit="5/second", max_wait_seconds=5)
    client = ServiceClient(build_service(settings), settings, limiters=real_limiters)

    # Four threads share the one client and so the one limiter.
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(client.lookup, IPS[:12]))
    elapsed = time.monotonic() - started
    client.close()

    assert [o.status for o in outcomes] == [Status.SUCCESS] * 12
    assert len(seen) == 12
    # 12 requests at 5 per second: slots at 0 s, 1 s and 2 s.
    assert _max_in_window(seen, 1.0) <= 5
    assert 2.0 <= elapsed < 4.0


def test_two_clients_of_one_key_share_the_limiter(
    httpserver: HTTPServer, limiters: LimiterRegistry, clock: FakeClock
) -> None:
    seen = _timestamps(httpserver, clock.monotonic)
    settings = settings_for("spur", httpserver, rate_limit="2/minute", max_wait_seconds=120)
    first = ServiceClient(build_service(settings), settings, limiters=limiters)
    second = ServiceClient(build_service(settings), settings, limiters=limiters)
    other_key = settings_for(
        "spur", httpserver, rate_limit="2/minute", api_key=SecretStr("another-key")
    )
    third = ServiceClient(build_service(other_key), other_key, limiters=limiters)

    for client, ip in [(first, IPS[0]), (second, IPS[1]), (first, IPS[2]), (second, IPS[3])]:
        assert client.lookup(ip).status == Status.SUCCESS
    start = seen[0]
    # The third request of the key waited for the minute to pass, whichever client sent it.
    assert [round(t - start, 2) for t in seen] == [0.0, 0.0, 60.05, 60.05]

    # Another key has a limiter of its own: no wait.
    before = len(clock.sleeps)
    assert third.lookup(IPS[4]).status == Status.SUCCESS
    assert len(clock.sleeps) == before
    for client in (first, second, third):
        client.close()


def test_daily_limit_ends_as_quota_spent(make_client: MakeClient, httpserver: HTTPServer) -> None:
    _timestamps(httpserver, time.monotonic)
    client = make_client("spur", httpserver, rate_limit="2/minute,3/day", max_wait_seconds=120)

    statuses = [client.lookup(ip) for ip in IPS[:4]]

    assert [o.status for o in statuses[:3]] == [Status.SUCCESS] * 3
    assert (statuses[3].status, statuses[3].reason) == (Status.SKIPPED, "quota_spent")
    assert statuses[3].message is not None
    assert statuses[3].message.startswith("spur: rate limit 2/minute,3/day reached;")
    assert len(httpserver.log) == 3


def test_short_limit_beyond_max_wait_is_backing_off(
    make_client: MakeClient, httpserver: HTTPServer
) -> None:
    _timestamps(httpserver, time.monotonic)
    client = make_client("spur", httpserver, rate_limit="1/minute", max_wait_seconds=5)
    assert client.lookup(IPS[0]).status == Status.SUCCESS
    skipped = client.lookup(IPS[1])
    assert (skipped.status, skipped.reason) == (Status.SKIPPED, "backing_off")
    assert (
        skipped.message
        == "spur: rate limit 1/minute reached; next request possible at 2026-12-03T12:01:00Z"
    )


def test_sqlite_bucket_factory_plugs_in(httpserver: HTTPServer, tmp_path: Path) -> None:
    seen = _timestamps(httpserver, time.monotonic)
    path = tmp_path / "limits.sqlite"

    def sqlite_bucket(name: str, rates: Sequence[Rate]) -> AbstractBucket:
        return SQLiteBucket.init_from_file(list(rates), table=name, db_path=str(path))

    registry = LimiterRegistry(bucket_factory=sqlite_bucket)
    settings = settings_for("spur", httpserver, rate_limit="3/second", max_wait_seconds=5)
    client = ServiceClient(build_service(settings), settings, limiters=registry)
    try:
        outcomes = [client.lookup(ip) for ip in IPS[:7]]
    finally:
        client.close()
        registry.close()

    assert [o.status for o in outcomes] == [Status.SUCCESS] * 7
    assert _max_in_window(seen, 1.0) <= 3
    with sqlite3.connect(path) as db:
        tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert any(name.startswith("ratelimit_spur_") for name in tables)


@pytest.mark.parametrize("rate", ["4/minute,500/day", "10/second"])
def test_registry_gives_one_limiter_per_service_key_and_rate(rate: str) -> None:
    registry = LimiterRegistry()
    try:
        settings = settings_for("virustotal", rate_limit=rate)
        a = registry.limiter("virustotal", settings.api_key, settings.rates)
        b = registry.limiter(
            "virustotal", SecretStr(settings.api_key.get_secret_value()), settings.rates
        )  # type: ignore[union-attr]
        c = registry.limiter("virustotal", SecretStr("other"), settings.rates)
        d = registry.limiter("spur", settings.api_key, settings.rates)
        assert a is b
        assert len({id(a), id(c), id(d)}) == 3
    finally:
        registry.close()


def test_virustotal_defaults_wait_out_the_minute(
    httpserver: HTTPServer, limiters: LimiterRegistry, clock: FakeClock
) -> None:
    seen: list[float] = []

    def handler(request: Request) -> Response:
        seen.append(clock.monotonic())
        return Response(sample_body("virustotal", "not-found.json"), status=404)

    class _Files(URIPattern):
        def match(self, uri: str) -> bool:
            return uri.startswith("/api/v3/files/")

    httpserver.expect_request(_Files()).respond_with_handler(handler)
    defaults = ServiceSettings.defaults("virustotal")
    settings = settings_for(
        "virustotal",
        httpserver,
        rate_limit=defaults.rate_limit,
        max_wait_seconds=defaults.max_wait_seconds,
    )
    client = ServiceClient(build_service(settings), settings, limiters=limiters)

    outcomes = [client.lookup(f"{n:064x}", "file") for n in range(6)]
    client.close()

    assert [o.status for o in outcomes] == [Status.NOT_FOUND] * 6
    assert [round(t - seen[0], 2) for t in seen] == [0.0, 0.0, 0.0, 0.0, 60.05, 60.05]
