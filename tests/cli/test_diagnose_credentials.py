"""`check-credentials` against local servers: one request per configured service, none
without a key, the right verdicts and quota, the key never shown."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from cowrieprocessor.cli import common
from cowrieprocessor.cli.enrich import app
from cowrieprocessor.diagnostics import check_credentials
from cowrieprocessor.diagnostics.credentials import PROBES
from cowrieprocessor.enrichment.settings import EnrichmentSettings
from tests.enrichment.conftest import EMAIL, SECRET_KEY, base_url, sample_reply

VT_HASH = PROBES["virustotal"][1]


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _serve_healthy(server: HTTPServer) -> None:
    server.expect_request("/api/ip/8.8.8.8").respond_with_response(
        sample_reply("dshield", "success.json")
    )
    server.expect_request(f"/api/v3/files/{VT_HASH}").respond_with_response(
        sample_reply("virustotal", "auth-401.json")
    )
    server.expect_request("/v2/context/8.8.8.8").respond_with_response(
        sample_reply("spur", "success.json")
    )
    server.expect_request("/range/00000").respond_with_response(
        sample_reply("hibp", "success.meta.json")
    )


def _settings(server: HTTPServer, **changes: Any) -> EnrichmentSettings:
    url = base_url(server)
    values: dict[str, Any] = {
        "dshield_email": EMAIL,
        "vt_api_key": SecretStr(SECRET_KEY),
        "spur_api_key": SecretStr(SECRET_KEY),
        **{f"{name}_base_url": url for name in PROBES},
    }
    values.update(changes)
    return EnrichmentSettings(**values)


def test_one_request_per_configured_service_and_verdicts(httpserver: HTTPServer) -> None:
    _serve_healthy(httpserver)
    results = {r.service: r for r in check_credentials(_settings(httpserver))}

    assert [(r.service, r.configured, r.reachable, r.accepted, r.quota_left, r.http_status)
            for r in results.values()] == [
        ("dshield", True, True, True, None, 200),
        ("virustotal", True, True, False, None, 401),
        ("urlhaus", False, None, None, None, None),
        ("spur", True, True, True, 48213, 200),
        ("hibp", True, True, True, None, 200),
    ]  # fmt: skip
    assert [r.ok for r in results.values()] == [True, False, True, True, True]
    assert "urlhaus_api_key is not set" in results["urlhaus"].detail
    # Exactly one request each; nothing for URLhaus, which has no key.
    paths = [request.path for request, _ in httpserver.log]
    assert sorted(paths) == sorted(
        ["/api/ip/8.8.8.8", f"/api/v3/files/{VT_HASH}", "/v2/context/8.8.8.8", "/range/00000"]
    )
    vt_request = next(req for req, _ in httpserver.log if req.path.startswith("/api/v3/"))
    assert vt_request.headers["x-apikey"] == SECRET_KEY
    assert SECRET_KEY not in json.dumps([r.as_dict() for r in results.values()])


def test_unreachable_and_spent_quota(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v2/context/8.8.8.8").respond_with_response(
        sample_reply("spur", "quota-429.json")
    )
    settings = _settings(httpserver, hibp_base_url=_closed_port_url())
    spur, hibp = check_credentials(settings, ("spur", "hibp"))
    assert (spur.reachable, spur.accepted, spur.quota_left, spur.http_status) == (
        True, True, 0, 429,
    )  # fmt: skip
    assert spur.ok is True
    assert (hibp.reachable, hibp.accepted, hibp.ok) == (False, None, False)
    assert len(httpserver.log) == 1  # the 429 was not retried


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 300)


@pytest.mark.usefixtures("wide_console")
def test_command_table_and_exit_code(httpserver: HTTPServer) -> None:
    _serve_healthy(httpserver)
    url = base_url(httpserver)
    env = {
        "COWRIEPROC_CONFIG": "",
        "COWRIEPROC_DSHIELD_EMAIL": EMAIL,
        "COWRIEPROC_VT_API_KEY": SECRET_KEY,
        "COWRIEPROC_SPUR_API_KEY": SECRET_KEY,
        **{f"COWRIEPROC_{name.upper()}_BASE_URL": url for name in PROBES},
    }
    result = CliRunner().invoke(app, ["check-credentials"], env=env)
    assert result.exit_code == 1  # VirusTotal refused its key
    assert SECRET_KEY not in result.output
    lines = {line.split("│")[1].strip(): line for line in result.stderr.splitlines()
             if line.count("│") > 3}  # fmt: skip
    assert [cell.strip() for cell in lines["virustotal"].split("│")[2:5]] == [
        "configured", "yes", "NO",
    ]  # fmt: skip
    assert [cell.strip() for cell in lines["urlhaus"].split("│")[2:5]] == ["missing", "-", "-"]
    assert [cell.strip() for cell in lines["spur"].split("│")[2:6]] == [
        "configured", "yes", "yes", "48,213",
    ]  # fmt: skip
    assert lines["hibp"].split("│")[2].strip() == "not needed"

    only_ok = CliRunner().invoke(
        app, ["check-credentials", "--services", "dshield,spur", "--json"], env=env
    )
    assert only_ok.exit_code == 0
    assert [s["service"] for s in json.loads(only_ok.stdout)["services"]] == ["dshield", "spur"]
    assert (
        CliRunner().invoke(app, ["check-credentials", "--services", "nope"], env=env).exit_code
        == 2
    )
