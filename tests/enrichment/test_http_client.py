"""The shared client against real local HTTP servers: outcomes, retries, pauses, stops."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services import DShieldService, ServiceResponse
from tests.enrichment.conftest import (
    EMAIL,
    SECRET_KEY,
    FakeClock,
    sample_body,
    sample_reply,
    settings_for,
)

MakeClient = Callable[..., ServiceClient]
VT_SHA = "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5"
BEETLES_SHA = "f80fb0bd5bad239ba382226e73c80be3da5cebcf35ba280884e22c051a117087"


def received(server: HTTPServer) -> list[Request]:
    return [request for request, _ in server.log]


# Every sample, through the client and a real server ------------------------------------

CASES = [
    # service, sample, key, endpoint, path, status, reason
    ("dshield", "success.json", "89.39.105.84", None, "/api/ip/89.39.105.84", "success", None),
    (
        "dshield",
        "not-found.json",
        "185.247.137.223",
        None,
        "/api/ip/185.247.137.223",
        "not_found",
        None,
    ),
    ("dshield", "error-bad-ip.json", "8.8.8.8", None, "/api/ip/8.8.8.8", "error", "invalid_input"),
    ("virustotal", "success.json", VT_SHA, "file", f"/api/v3/files/{VT_SHA}", "success", None),
    (
        "virustotal",
        "not-found.json",
        BEETLES_SHA,
        "file",
        f"/api/v3/files/{BEETLES_SHA}",
        "not_found",
        None,
    ),
    ("virustotal", "auth-401.json", VT_SHA, "file", f"/api/v3/files/{VT_SHA}", "error", "auth"),
    ("urlhaus", "host-success.json", "89.38.146.89", "host", "/v1/host/", "success", None),
    ("urlhaus", "host-not-found.json", "167.71.25.83", "host", "/v1/host/", "not_found", None),
    (
        "urlhaus",
        "host-invalid.json",
        "bad-host.example",
        "host",
        "/v1/host/",
        "error",
        "invalid_input",
    ),
    (
        "urlhaus",
        "url-success.json",
        "http://89.38.146.89/beetles.sh",
        "url",
        "/v1/url/",
        "success",
        None,
    ),
    (
        "urlhaus",
        "url-not-found.json",
        "http://96.44.186.212:7744/tfhy",
        "url",
        "/v1/url/",
        "not_found",
        None,
    ),
    ("urlhaus", "payload-success.json", BEETLES_SHA, "payload", "/v1/payload/", "success", None),
    ("urlhaus", "payload-not-found.json", VT_SHA, "payload", "/v1/payload/", "not_found", None),
    ("urlhaus", "auth-error.json", "89.38.146.89", "host", "/v1/host/", "error", "auth"),
    ("spur", "success.json", "45.84.107.54", None, "/v2/context/45.84.107.54", "success", None),
    (
        "spur",
        "not-found.json",
        "167.71.25.83",
        None,
        "/v2/context/167.71.25.83",
        "not_found",
        None,
    ),
    ("spur", "auth-401.json", "45.84.107.54", None, "/v2/context/45.84.107.54", "error", "auth"),
    (
        "spur",
        "bad-input-400.json",
        "45.84.107.54",
        None,
        "/v2/context/45.84.107.54",
        "error",
        "invalid_input",
    ),
    ("spur", "quota-429.json", "45.84.107.54", None, "/v2/context/45.84.107.54", "error", "quota"),
    ("hibp", "success.meta.json", "D033E", None, "/range/D033E", "success", None),
    ("hibp", "not-found.meta.json", "DC15E", None, "/range/DC15E", "success", None),
]


@pytest.mark.parametrize(
    ("service", "name", "key", "endpoint", "path", "status", "reason"),
    CASES,
    ids=[f"{case[0]}-{case[1]}" for case in CASES],
)
def test_each_sample_through_the_client(
    httpserver: HTTPServer,
    make_client: MakeClient,
    service: str,
    name: str,
    key: str,
    endpoint: str | None,
    path: str,
    status: str,
    reason: str | None,
) -> None:
    httpserver.expect_request(path).respond_with_response(sample_reply(service, name))
    client = make_client(service, httpserver)

    outcome = client.lookup(key, endpoint)

    assert (outcome.service, outcome.status, outcome.reason) == (service, status, reason)
    assert outcome.http_status == int(sample_reply(service, name).status_code)
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert len(httpserver.log) == 1
    assert client.requests_sent == 1


def test_request_headers_and_forms(httpserver: HTTPServer, make_client: MakeClient) -> None:
    httpserver.expect_request("/api/ip/89.39.105.84", query_string="json").respond_with_response(
        sample_reply("dshield", "success.json")
    )
    httpserver.expect_request(f"/api/v3/files/{VT_SHA}").respond_with_response(
        sample_reply("virustotal", "success.json")
    )
    httpserver.expect_request("/v1/url/", method="POST").respond_with_response(
        sample_reply("urlhaus", "url-success.json")
    )
    httpserver.expect_request("/v1/payload/", method="POST").respond_with_response(
        sample_reply("urlhaus", "payload-success.json")
    )
    httpserver.expect_request("/v2/context/45.84.107.54").respond_with_response(
        sample_reply("spur", "success.json")
    )
    httpserver.expect_request("/range/D033E").respond_with_response(
        sample_reply("hibp", "success.meta.json")
    )

    make_client("dshield", httpserver).lookup("89.39.105.84")
    make_client("virustotal", httpserver).lookup(VT_SHA, "file")
    urlhaus = make_client("urlhaus", httpserver)
    urlhaus.lookup("http://89.38.146.89/beetles.sh", "url")
    urlhaus.lookup(BEETLES_SHA.upper(), "payload")
    make_client("spur", httpserver).lookup("45.84.107.54")
    make_client("hibp", httpserver).lookup("d033e")

    dshield, vt, url, payload, spur, hibp = received(httpserver)
    assert dshield.method == "GET" and dshield.query_string == b"json"
    assert dshield.headers["User-Agent"] == f"cowrieprocessor/0.1.0 (contact: {EMAIL})"
    assert vt.headers["x-apikey"] == SECRET_KEY
    assert url.method == "POST"
    assert url.headers["Auth-Key"] == SECRET_KEY
    assert url.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert url.form.to_dict() == {"url": "http://89.38.146.89/beetles.sh"}
    assert payload.form.to_dict() == {"sha256_hash": BEETLES_SHA}
    assert spur.headers["Token"] == SECRET_KEY
    assert hibp.headers["Add-Padding"] == "true"
    # Only the five hex characters of the prefix leave the machine.
    assert hibp.path == "/range/D033E"
    assert hibp.query_string == b""
    assert hibp.get_data() == b""
    assert all("22AE348" not in value for value in hibp.headers.values())
    for request in (vt, url, spur, hibp):
        assert request.headers["User-Agent"].startswith("cowrieprocessor/")


def test_spur_balance_is_recorded(httpserver: HTTPServer, make_client: MakeClient) -> None:
    httpserver.expect_request("/v2/context/45.84.107.54").respond_with_response(
        sample_reply("spur", "success.json")
    )
    client = make_client("spur", httpserver)
    client.lookup("45.84.107.54")
    assert client.balance_remaining == 48213


# Never sent ----------------------------------------------------------------------------


def test_refused_keys_never_reach_the_server_nor_the_limiter(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_response(
        sample_reply("dshield", "success.json")
    )
    client = make_client("dshield", httpserver, rate_limit="1/minute")
    skipped = [client.lookup(ip) for ip in ("10.1.1.1", "127.0.0.1", "fe80::1", "ff02::1", "x.y")]
    assert [o.reason for o in skipped] == ["not_routable"] * 5
    assert len(httpserver.log) == 0

    # The limiter's one slot per minute was not used by the refused keys.
    assert client.lookup("89.39.105.84").status == Status.SUCCESS
    assert clock.sleeps == []


def test_disabled_service_sends_nothing(httpserver: HTTPServer, make_client: MakeClient) -> None:
    client = make_client("spur", httpserver, enabled=False)
    outcome = client.lookup("45.84.107.54")
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, "service_disabled")
    assert outcome.message == "spur: spur_enabled is off"
    assert len(httpserver.log) == 0


def test_missing_key_sends_nothing(httpserver: HTTPServer, make_client: MakeClient) -> None:
    client = make_client("urlhaus", httpserver, api_key=None)
    assert client.lookup("89.38.146.89", "host").reason == "no_api_key"
    assert len(httpserver.log) == 0


# 429 and Retry-After -------------------------------------------------------------------


def _arrivals(clock: FakeClock, reply: Callable[[], Response]) -> tuple[list[datetime], Any]:
    """A handler that notes the fake time of each request."""
    seen: list[datetime] = []

    def handler(request: Request) -> Response:
        seen.append(clock.now())
        return reply()

    return seen, handler


def test_retry_after_300_keeps_every_request_away_for_300_s(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    replies = iter(
        [sample_reply("dshield", "quota-429.json")] + [sample_reply("dshield", "success.json")] * 3
    )
    seen, handler = _arrivals(clock, lambda: next(replies))
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_handler(handler)
    # max_wait 0: nothing waits out the pause, every lookup inside it is skipped.
    client = make_client("dshield", httpserver, max_wait_seconds=0)
    start = clock.now()

    first = client.lookup("89.39.105.84")
    assert (first.status, first.reason, first.http_status) == (Status.ERROR, "rate_limited", 429)
    assert (
        first.message == "dshield: HTTP 429, too many requests; paused until 2026-12-03T12:05:00Z"
    )
    assert client.paused_until == start + timedelta(seconds=300)

    # Lookups all through the pause end as skipped without a request.
    for offset in (0, 1, 150, 299, 299.999):
        clock.advance(offset - (clock.now() - start).total_seconds())
        during = client.lookup("89.39.105.84")
        assert (during.status, during.reason) == (Status.SKIPPED, "backing_off")
        assert during.message == "dshield: paused until 2026-12-03T12:05:00Z after HTTP 429"
    assert len(seen) == 1

    clock.advance(0.001)
    assert client.paused_until is None
    assert client.lookup("89.39.105.84").status == Status.SUCCESS
    assert seen == [start, start + timedelta(seconds=300)]


def test_retry_after_within_max_wait_is_waited_out(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    replies = iter(
        [sample_reply("dshield", "quota-429.json"), sample_reply("dshield", "success.json")]
    )
    seen, handler = _arrivals(clock, lambda: next(replies))
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_handler(handler)
    client = make_client("dshield", httpserver, max_wait_seconds=600)
    start = clock.now()

    outcome = client.lookup("89.39.105.84")

    assert outcome.status == Status.SUCCESS
    assert seen == [start, start + timedelta(seconds=300)]
    assert clock.sleeps == [300.0]


def test_retry_after_as_http_date(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    httpserver.expect_request(f"/api/v3/files/{VT_SHA}").respond_with_data(
        b'{"error": {"code": "TooManyRequestsError", "message": "slow down"}}',
        status=429,
        headers={"Retry-After": "Thu, 03 Dec 2026 12:02:00 GMT"},
    )
    client = make_client("virustotal", httpserver, max_wait_seconds=10)
    outcome = client.lookup(VT_SHA, "file")
    assert outcome.reason == "rate_limited"
    assert client.paused_until == datetime(2026, 12, 3, 12, 2, tzinfo=UTC)


def test_429_without_retry_after_backs_off_boundedly(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    # VT's edge answers an HTML 429 without Retry-After.
    httpserver.expect_request(f"/api/v3/files/{VT_SHA}").respond_with_data(
        "<title>429</title>429 Too Many Requests", status=429, content_type="text/html"
    )
    client = make_client(
        "virustotal", httpserver, max_retries=3, backoff_base_seconds=1.0, backoff_max_seconds=3.0
    )

    outcome = client.lookup(VT_SHA, "file")

    assert (outcome.status, outcome.reason) == (Status.ERROR, "rate_limited")
    assert outcome.message is not None and outcome.message.endswith("gave up after 4 attempts")
    assert len(httpserver.log) == 4
    # Backoff ceilings 1, 2, 3 (capped): each wait is in [ceiling / 2, ceiling].
    assert len(clock.sleeps) == 3
    for wait, ceiling in zip(clock.sleeps, [1.0, 2.0, 3.0], strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_dshield_429_without_retry_after_pauses_five_minutes(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_data("busy", status=429)
    client = make_client("dshield", httpserver)
    client.lookup("89.39.105.84")
    assert client.paused_until == clock.now() + timedelta(seconds=300)


# 5xx, timeouts, network ----------------------------------------------------------------


def test_5xx_then_success(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    path = "/v2/context/45.84.107.54"
    httpserver.expect_oneshot_request(path).respond_with_data("oops", status=503)
    httpserver.expect_oneshot_request(path).respond_with_data(
        "<html>bad gateway</html>", status=502
    )
    httpserver.expect_request(path).respond_with_response(sample_reply("spur", "success.json"))
    client = make_client("spur", httpserver, backoff_base_seconds=2.0, backoff_max_seconds=60.0)

    outcome = client.lookup("45.84.107.54")

    assert (outcome.status, outcome.http_status) == (Status.SUCCESS, 200)
    assert len(httpserver.log) == 3
    assert 1.0 <= clock.sleeps[0] <= 2.0
    assert 2.0 <= clock.sleeps[1] <= 4.0


def test_5xx_until_the_retries_are_spent(httpserver: HTTPServer, make_client: MakeClient) -> None:
    httpserver.expect_request("/range/D033E").respond_with_data("down", status=500)
    client = make_client("hibp", httpserver, max_retries=2)
    outcome = client.lookup("D033E")
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        Status.ERROR,
        "http_status",
        500,
    )
    assert outcome.message == "hibp: HTTP 500; gave up after 3 attempts"
    assert len(httpserver.log) == 3
    assert not outcome.definitive and outcome.retry_later


@pytest.fixture
def slow_server() -> Iterator[HTTPServer]:
    """A threaded server, so a sleeping handler does not hold up the next request."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def test_timeouts_end_as_timeout(slow_server: HTTPServer, make_client: MakeClient) -> None:
    def sleepy(request: Request) -> Response:
        time.sleep(0.6)
        return Response(sample_body("spur", "success.json"), status=200)

    slow_server.expect_request("/v2/context/45.84.107.54").respond_with_handler(sleepy)
    client = make_client("spur", slow_server, timeout_seconds=0.15, max_retries=1)

    started = time.monotonic()
    outcome = client.lookup("45.84.107.54")
    elapsed = time.monotonic() - started

    assert (outcome.status, outcome.reason, outcome.http_status) == (Status.ERROR, "timeout", None)
    assert (
        outcome.message == "spur: no answer within 0.15 s (ReadTimeout); gave up after 2 attempts"
    )
    assert outcome.latency_ms is not None and outcome.latency_ms >= 150
    assert client.requests_sent == 2
    assert elapsed < 1.5


def test_network_errors_end_as_network(make_client: MakeClient, clock: FakeClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client("hibp", base_url=f"http://127.0.0.1:{port}", max_retries=2)

    outcome = client.lookup("D033E")

    assert (outcome.status, outcome.reason) == (Status.ERROR, "network")
    assert outcome.message is not None and outcome.message.startswith("hibp: ConnectError")
    assert client.requests_sent == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    ("content", "content_type", "detail"),
    [
        (b"", "application/json", "empty body"),
        (b"<!DOCTYPE html><html><body>Just a moment...</body></html>", "text/html", "HTML body"),
        (b"not json at all", "text/plain", "body is not a JSON object (15 bytes)"),
    ],
)
def test_unusable_200_bodies_are_unparseable_and_not_retried(
    httpserver: HTTPServer, make_client: MakeClient, content: bytes, content_type: str, detail: str
) -> None:
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_data(
        content, content_type=content_type
    )
    client = make_client("dshield", httpserver)
    outcome = client.lookup("89.39.105.84")
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        Status.ERROR,
        "unparseable",
        200,
    )
    assert outcome.message == f"dshield: HTTP 200, {detail}"
    assert not outcome.definitive
    assert len(httpserver.log) == 1


# Refused keys and spent quotas ---------------------------------------------------------


def test_401_stops_the_service_with_one_message(
    httpserver: HTTPServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request(f"/api/v3/files/{VT_SHA}").respond_with_response(
        sample_reply("virustotal", "auth-401.json")
    )
    client = make_client("virustotal", httpserver)
    caplog.set_level(logging.DEBUG)

    first = client.lookup(VT_SHA, "file")
    later = [client.lookup(VT_SHA, "file"), client.lookup("45.84.107.54", "ip")]

    assert (first.status, first.reason) == (Status.ERROR, "auth")
    assert [(o.status, o.reason) for o in later] == [(Status.SKIPPED, "auth_failed")] * 2
    assert later[0].message == (
        "virustotal: HTTP 401 WrongCredentialsError: the API key was refused; "
        "the key is not used again"
    )
    assert len(httpserver.log) == 1
    assert client.stopped == SkipReason.AUTH_FAILED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "virustotal stopped for this run: HTTP 401 WrongCredentialsError: "
        "the API key was refused; the key is not used again"
    ]


def test_urlhaus_unknown_auth_key_with_200_stops_too(
    httpserver: HTTPServer, make_client: MakeClient
) -> None:
    httpserver.expect_request("/v1/host/").respond_with_json({"query_status": "unknown_auth_key"})
    client = make_client("urlhaus", httpserver)
    assert client.lookup("89.38.146.89", "host").reason == "auth"
    assert client.lookup("89.38.146.89", "host").reason == "auth_failed"
    assert len(httpserver.log) == 1


def test_virustotal_daily_quota_pauses_until_midnight_utc(
    httpserver: HTTPServer,
    make_client: MakeClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = f"/api/v3/files/{VT_SHA}"
    httpserver.expect_oneshot_request(path).respond_with_json(
        {"error": {"code": "QuotaExceededError", "message": "Quota exceeded"}}, status=429
    )
    httpserver.expect_request(path).respond_with_response(
        sample_reply("virustotal", "success.json")
    )
    client = make_client("virustotal", httpserver)
    caplog.set_level(logging.WARNING)

    spent = client.lookup(VT_SHA, "file")
    midnight = datetime(2026, 12, 4, tzinfo=UTC)
    assert (spent.status, spent.reason) == (Status.ERROR, "quota")
    assert spent.message == (
        "virustotal: HTTP 429 QuotaExceededError: the API quota is spent; "
        "paused until 2026-12-04T00:00:00Z"
    )
    assert client.paused_until == midnight
    assert "virustotal: quota spent; paused until 2026-12-04T00:00:00Z" in caplog.messages

    clock.advance(3600)
    waiting = client.lookup(VT_SHA, "file")
    assert (waiting.status, waiting.reason) == (Status.SKIPPED, "quota_spent")
    assert waiting.message == "virustotal: paused until 2026-12-04T00:00:00Z after a spent quota"
    assert len(httpserver.log) == 1

    clock.advance((midnight - clock.now()).total_seconds())
    assert client.lookup(VT_SHA, "file").status == Status.SUCCESS
    assert len(httpserver.log) == 2


def test_spur_spent_balance_stops_the_service(
    httpserver: HTTPServer, make_client: MakeClient
) -> None:
    httpserver.expect_request("/v2/context/45.84.107.54").respond_with_response(
        sample_reply("spur", "quota-429.json")
    )
    client = make_client("spur", httpserver)
    first = client.lookup("45.84.107.54")
    second = client.lookup("45.84.107.54")
    assert (first.reason, second.reason) == ("quota", "quota_spent")
    assert client.stopped == SkipReason.QUOTA_SPENT
    assert client.balance_remaining == 0
    assert len(httpserver.log) == 1


def test_503_with_retry_after_is_honoured(
    httpserver: HTTPServer, make_client: MakeClient, clock: FakeClock
) -> None:
    path = "/range/D033E"
    httpserver.expect_oneshot_request(path).respond_with_data(
        "maintenance", status=503, headers={"Retry-After": "7"}
    )
    httpserver.expect_request(path).respond_with_response(
        sample_reply("hibp", "success.meta.json")
    )
    client = make_client("hibp", httpserver)
    assert client.lookup("D033E").status == Status.SUCCESS
    assert clock.sleeps == [7.0]


def test_final_skip_reasons_come_before_disabled(make_client: MakeClient) -> None:
    client = make_client("dshield", enabled=False)
    assert client.lookup("192.168.0.1").reason == "not_routable"
    assert client.lookup("8.8.8.8").reason == "service_disabled"


class _BrokenParser(DShieldService):
    def parse(self, response: ServiceResponse) -> Outcome:
        raise KeyError("a bug")


def test_a_parser_bug_is_logged_and_unparseable(
    httpserver: HTTPServer, limiters: LimiterRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/api/ip/89.39.105.84").respond_with_response(
        sample_reply("dshield", "success.json")
    )
    settings = settings_for("dshield", httpserver)
    with ServiceClient(_BrokenParser(EMAIL), settings, limiters=limiters) as client:
        outcome = client.lookup("89.39.105.84")
    assert (outcome.status, outcome.reason) == (Status.ERROR, "unparseable")
    assert outcome.message == "dshield: HTTP 200, the parser failed on this body"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "dshield: the parser failed on HTTP 200"
    ]
