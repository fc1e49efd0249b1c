"""A run with a known key: the key reaches the servers and nothing else.

Every log record (all loggers, DEBUG), every outcome envelope, message and repr, and
every object the caller can print are searched for the key string.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.settings import EnrichmentSettings
from tests.enrichment.conftest import SECRET_KEY, base_url, sample_reply

VT_SHA = "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5"
OTHER_SHA = "f80fb0bd5bad239ba382226e73c80be3da5cebcf35ba280884e22c051a117087"


def test_key_never_leaves_through_logs_outcomes_or_reprs(
    httpserver: HTTPServer,
    limiters: LimiterRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "api.key"
    key_file.write_text(SECRET_KEY + "\n", encoding="utf-8")
    reference = f"file:{key_file}"
    url = base_url(httpserver)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    settings = EnrichmentSettings(
        vt_api_key=reference,
        urlhaus_api_key=reference,
        spur_api_key=reference,
        virustotal_base_url=url,
        urlhaus_base_url=url,
        spur_base_url=f"http://127.0.0.1:{dead_port}",
        virustotal_rate_limit="1000/second",
        urlhaus_rate_limit="1000/second",
        spur_rate_limit="1000/second",
        enrichment_backoff_base_seconds=0.01,
        enrichment_backoff_max_seconds=0.02,
        spur_max_retries=1,
    )

    # A server that echoes the key in its error text, a success, a 429, a 5xx, and a
    # refused key; Spur's base URL points at a closed port (network errors).
    httpserver.expect_oneshot_request(f"/api/v3/files/{OTHER_SHA}").respond_with_json(
        {"error": {"code": "InvalidArgumentError", "message": f"bad key {SECRET_KEY}?"}},
        status=400,
    )
    httpserver.expect_oneshot_request(f"/api/v3/files/{VT_SHA}").respond_with_response(
        sample_reply("virustotal", "success.json")
    )
    httpserver.expect_oneshot_request("/api/v3/ip_addresses/45.84.107.54").respond_with_data(
        "", status=429, headers={"Retry-After": "0"}
    )
    httpserver.expect_request("/api/v3/ip_addresses/45.84.107.54").respond_with_data(
        "down", status=503
    )
    httpserver.expect_request("/v1/host/").respond_with_response(
        sample_reply("urlhaus", "auth-error.json")
    )

    caplog.set_level(logging.DEBUG)
    clients = [
        ServiceClient.from_settings(name, settings, limiters=limiters)
        for name in ("virustotal", "urlhaus", "spur")
    ]
    vt, urlhaus, spur = clients
    outcomes: list[Outcome] = [
        vt.lookup(OTHER_SHA, "file"),
        vt.lookup(VT_SHA, "file"),
        vt.lookup("45.84.107.54", "ip"),
        urlhaus.lookup("89.38.146.89", "host"),
        urlhaus.lookup("89.38.146.89", "host"),
        spur.lookup("45.84.107.54"),
    ]
    for client in clients:
        client.close()

    # The key did reach the servers, so the search below is meaningful.
    sent = [
        request.headers.get("x-apikey") or request.headers.get("Auth-Key")
        for request, _ in httpserver.log
    ]
    assert sent and set(sent) == {SECRET_KEY}
    assert [(o.status, o.reason) for o in outcomes] == [
        (Status.ERROR, "invalid_input"),
        (Status.SUCCESS, None),
        (Status.ERROR, "http_status"),
        (Status.ERROR, "auth"),
        (Status.SKIPPED, "auth_failed"),
        (Status.ERROR, "network"),
    ]
    assert outcomes[0].message == "virustotal: HTTP 400 InvalidArgumentError: bad key ***?"

    texts = [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    texts += [record.exc_text or "" for record in caplog.records]
    texts += [json.dumps(o.to_envelope(), default=str) for o in outcomes]
    texts += [repr(o) for o in outcomes]
    texts += [repr(settings), str(settings.model_dump()), repr(settings.model_dump_json())]
    texts += [repr(client) for client in clients]
    texts += [repr(client.settings) for client in clients]
    texts += [repr(client.service) for client in clients]
    texts += [repr(client.service.build_request("45.84.107.54", "ip")) for client in clients[:1]]
    assert len(caplog.records) > 10
    leaks = [text for text in texts if SECRET_KEY in text]
    assert leaks == []
