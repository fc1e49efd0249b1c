"""Fixtures for the service and HTTP client tests: samples, a movable clock, settings.

The sample files in ``shared/data/api-samples`` are read at test time; the bodies they
hold are what the local servers answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Response

from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.services import ServiceResponse, build_service
from cowrieprocessor.enrichment.settings import ServiceSettings
from tests.conftest import API_SAMPLES

#: A key nobody would type by accident, to grep for in logs and outcomes.
SECRET_KEY = "k3y-DO-NOT-LEAK-5f0c9a7e1b2d"
EMAIL = "soc@example.org"


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it."""

    def __init__(self, start: datetime = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)) -> None:
        self._wall = start
        self._mono = 10_000.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += timedelta(seconds=seconds)
            self._mono += seconds


def sample(service: str, name: str) -> dict[str, Any]:
    """One sample file, parsed."""
    loaded: dict[str, Any] = json.loads((API_SAMPLES / service / name).read_text("utf-8"))
    return loaded


def sample_body(service: str, name: str) -> bytes:
    """The response body a sample describes, as bytes on the wire."""
    response = sample(service, name)["response"]
    if "body" in response:
        return json.dumps(response["body"]).encode()
    if "body_file" in response:
        return (API_SAMPLES / service / response["body_file"]).read_bytes()
    return str(response["body_text"]).encode()


def sample_response(service: str, name: str, key: str, endpoint: str) -> ServiceResponse:
    """A sample as the client hands it to ``Service.parse``."""
    response = sample(service, name)["response"]
    return ServiceResponse(
        service=service,
        key=key,
        endpoint=endpoint,
        status_code=response["status"],
        headers={k.lower(): v for k, v in response.get("headers", {}).items()},
        content=sample_body(service, name),
    )


def sample_reply(service: str, name: str) -> Response:
    """A sample as a werkzeug response, for pytest-httpserver."""
    response = sample(service, name)["response"]
    return Response(
        sample_body(service, name),
        status=response["status"],
        headers=response.get("headers", {}),
    )


def base_url(server: HTTPServer) -> str:
    return server.url_for("/").rstrip("/")


def settings_for(name: str, server: HTTPServer | None = None, **changes: Any) -> ServiceSettings:
    """Settings that make tests fast: a generous rate, tiny backoff, the test key."""
    values: dict[str, Any] = {
        "rate_limit": "1000/second",
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "timeout_seconds": 2.0,
        "api_key": SecretStr(SECRET_KEY) if name in ("virustotal", "urlhaus", "spur") else None,
        "email": EMAIL if name == "dshield" else None,
    }
    if server is not None:
        values["base_url"] = base_url(server)
    values.update(changes)
    return ServiceSettings.defaults(name, **values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiters(clock: FakeClock) -> Iterator[LimiterRegistry]:
    """A registry of its own per test, timed by the fake clock."""
    registry = LimiterRegistry(clock=clock)
    yield registry
    registry.close()


@pytest.fixture
def real_limiters() -> Iterator[LimiterRegistry]:
    """A registry of its own per test, on the real clock (for measured rates)."""
    registry = LimiterRegistry()
    yield registry
    registry.close()


@pytest.fixture
def make_client(limiters: LimiterRegistry) -> Iterator[Any]:
    """``make_client(name, server, **settings)``: a client on the fake clock, closed after."""
    made: list[ServiceClient] = []

    def make(name: str, server: HTTPServer | None = None, **changes: Any) -> ServiceClient:
        settings = settings_for(name, server, **changes)
        client = ServiceClient(build_service(settings), settings, limiters=limiters)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
