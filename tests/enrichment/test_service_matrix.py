"""The same failures served to every one of the five services through the client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cowrieprocessor.enrichment.http import ServiceClient
from cowrieprocessor.enrichment.outcome import Status
from tests.enrichment.conftest import FakeClock, sample_body, sample_reply

MakeClient = Callable[..., ServiceClient]


@dataclass(frozen=True)
class Case:
    service: str
    key: str
    endpoint: str | None
    path: str
    success: tuple[str, str]  # sample service and file of a success answer
    on_429: str  # the error kind a bare 429 means for this service


SERVICES = [
    Case(
        "dshield",
        "89.39.105.84",
        None,
        "/api/ip/89.39.105.84",
        ("dshield", "success.json"),
        "rate_limited",
    ),
    Case(
        "virustotal",
        "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5",
        "file",
        "/api/v3/files/9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5",
        ("virustotal", "success.json"),
        "rate_limited",
    ),
    Case(
        "urlhaus",
        "89.38.146.89",
        "host",
        "/v1/host/",
        ("urlhaus", "host-success.json"),
        "rate_limited",
    ),
    Case(
        "spur", "45.84.107.54", None, "/v2/context/45.84.107.54", ("spur", "success.json"), "quota"
    ),
    Case("hibp", "D033E", None, "/range/D033E", ("hibp", "success.meta.json"), "rate_limited"),
]
IDS = [case.service for case in SERVICES]


@pytest.fixture(params=SERVICES, ids=IDS)
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = request.param
    return found


def test_5xx_then_success(httpserver: HTTPServer, make_client: MakeClient, case: Case) -> None:
    httpserver.expect_oneshot_request(case.path).respond_with_data("oops", status=502)
    httpserver.expect_oneshot_request(case.path).respond_with_data("<html>x</html>", status=504)
    httpserver.expect_request(case.path).respond_with_response(sample_reply(*case.success))
    outcome = make_client(case.service, httpserver).lookup(case.key, case.endpoint)
    assert (outcome.status, outcome.http_status) == (Status.SUCCESS, 200)
    assert len(httpserver.log) == 3


@pytest.mark.parametrize(
    "content",
    [b"", b"<html><head><title>502</title></head></html>", b"not json, not ranges"],
    ids=["empty", "html", "text"],
)
def test_unusable_bodies(
    httpserver: HTTPServer, make_client: MakeClient, case: Case, content: bytes
) -> None:
    httpserver.expect_request(case.path).respond_with_data(content, status=200)
    outcome = make_client(case.service, httpserver).lookup(case.key, case.endpoint)
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        Status.ERROR,
        "unparseable",
        200,
    )
    assert not outcome.definitive
    assert len(httpserver.log) == 1


def test_401_stops(httpserver: HTTPServer, make_client: MakeClient, case: Case) -> None:
    httpserver.expect_request(case.path).respond_with_data("no", status=401)
    client = make_client(case.service, httpserver)
    first = client.lookup(case.key, case.endpoint)
    second = client.lookup(case.key, case.endpoint)
    assert (first.reason, second.status, second.reason) == ("auth", Status.SKIPPED, "auth_failed")
    assert len(httpserver.log) == 1


def test_429_with_retry_after(
    httpserver: HTTPServer, make_client: MakeClient, case: Case, clock: FakeClock
) -> None:
    httpserver.expect_request(case.path).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "300"}
    )
    client = make_client(case.service, httpserver, max_wait_seconds=0)
    first = client.lookup(case.key, case.endpoint)
    second = client.lookup(case.key, case.endpoint)
    assert first.reason == case.on_429
    if case.on_429 == "quota":
        # Spur: the balance is spent; nothing more this run, whatever Retry-After says.
        assert (second.reason, client.paused_until) == ("quota_spent", None)
    else:
        assert second.reason == "backing_off"
        assert client.paused_until == clock.now() + timedelta(seconds=300)
    assert len(httpserver.log) == 1


def test_429_without_retry_after(
    httpserver: HTTPServer, make_client: MakeClient, case: Case, clock: FakeClock
) -> None:
    httpserver.expect_oneshot_request(case.path).respond_with_data("slow down", status=429)
    httpserver.expect_request(case.path).respond_with_response(sample_reply(*case.success))
    client = make_client(case.service, httpserver, max_wait_seconds=600)
    outcome = client.lookup(case.key, case.endpoint)
    if case.on_429 == "quota":
        assert (outcome.reason, len(httpserver.log)) == ("quota", 1)
        return
    # Waited out (DShield's documented 5 minutes, others a short backoff), then answered.
    assert outcome.status == Status.SUCCESS
    assert len(httpserver.log) == 2
    if case.service == "dshield":
        assert clock.sleeps == [300.0]
    else:
        assert len(clock.sleeps) == 1 and 0.005 <= clock.sleeps[0] <= 0.01


@pytest.fixture
def slow_server() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_timeout(slow_server: HTTPServer, make_client: MakeClient, case: Case) -> None:
    def sleepy(request: Request) -> Response:
        time.sleep(0.4)
        return Response(sample_body(*case.success), status=200)

    slow_server.expect_request(case.path).respond_with_handler(sleepy)
    client = make_client(case.service, slow_server, timeout_seconds=0.1, max_retries=1)
    outcome = client.lookup(case.key, case.endpoint)
    assert (outcome.status, outcome.reason) == (Status.ERROR, "timeout")
    assert client.requests_sent == 2
