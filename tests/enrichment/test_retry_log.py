"""The warning the client logs before it retries names the service once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pytest_httpserver import HTTPServer

from cowrieprocessor.enrichment.http import ServiceClient
from cowrieprocessor.enrichment.outcome import Status
from tests.enrichment.conftest import FakeClock, sample_reply

MakeClient = Callable[..., ServiceClient]


def test_a_retry_warning_names_the_service_once(
    httpserver: HTTPServer,
    make_client: MakeClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    httpserver.expect_oneshot_request("/v1/host/", method="POST").respond_with_data(
        "down", status=500, headers={"Retry-After": "2"}
    )
    httpserver.expect_request("/v1/host/", method="POST").respond_with_response(
        sample_reply("urlhaus", "host-success.json")
    )
    client = make_client("urlhaus", httpserver, max_retries=2)
    caplog.set_level(logging.WARNING)

    outcome = client.lookup("89.38.146.89", "host")

    assert outcome.status == Status.SUCCESS
    assert clock.sleeps == [2.0]
    assert [r.getMessage() for r in caplog.records] == [
        "urlhaus: HTTP 500; retrying in 2.0 s (attempt 2 of 3)"
    ]
