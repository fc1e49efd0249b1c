"""Local decisions (what is never sent) and the requests the services build."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from cowrieprocessor.enrichment.outcome import Status
from cowrieprocessor.enrichment.services import (
    DShieldService,
    HibpService,
    RequestSpec,
    Service,
    SpurService,
    UrlhausService,
    VirusTotalService,
    global_ip,
)

KEY = SecretStr("test-key")

NOT_GLOBAL = [
    "10.0.0.5",
    "172.31.31.222",
    "192.168.1.1",
    "127.0.0.1",
    "169.254.1.1",
    "100.64.0.1",
    "224.0.0.251",
    "239.1.2.3",
    "240.0.0.1",
    "255.255.255.255",
    "0.0.0.0",  # noqa: S104 (an address to refuse, not one to bind)
    "192.0.2.10",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
    "010.1.1.1",
    "1.2.3",
    "not an ip",
    "google.com",
    "",
    "1.2.3.4\x00",
]


@pytest.mark.parametrize("text", NOT_GLOBAL)
def test_global_ip_refuses(text: str) -> None:
    assert global_ip(text) is None


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("89.39.105.84", "89.39.105.84"),
        ("2A00:1450:4001:081C::200E", "2a00:1450:4001:81c::200e"),
        ("::ffff:8.8.8.8", "8.8.8.8"),
    ],
)
def test_global_ip_accepts(text: str, canonical: str) -> None:
    assert global_ip(text) == canonical


@pytest.mark.parametrize(
    "service",
    [DShieldService("a@b.example"), SpurService(KEY), VirusTotalService(KEY)],
    ids=["dshield", "spur", "virustotal-ip"],
)
@pytest.mark.parametrize("text", ["10.0.0.5", "224.0.0.251", "hostname.example", "::1"])
def test_ip_services_skip_non_global(service: Service, text: str) -> None:
    endpoint = "ip" if isinstance(service, VirusTotalService) else None
    outcome = service.check(text, endpoint)
    assert outcome is not None
    assert (outcome.status, outcome.reason, outcome.key) == (Status.SKIPPED, "not_routable", text)
    assert outcome.message == f"{service.name}: {text} is not a global IP address"
    assert not outcome.retry_later


def test_skip_message_of_attacker_text_is_printable() -> None:
    outcome = DShieldService("a@b.example").check("\x1b[31m\udc80" + "x" * 500)
    assert outcome is not None
    assert outcome.message is not None
    assert outcome.message.isascii() and outcome.message.isprintable()
    assert len(outcome.message) < 200


def test_missing_credentials_skip_after_validation() -> None:
    cases = [
        (DShieldService(None), "8.8.8.8", None, "dshield_email is not set"),
        (VirusTotalService(None), "A" * 64, "file", "vt_api_key is not set"),
        (SpurService(None), "8.8.8.8", None, "spur_api_key is not set"),
        (UrlhausService(None), "8.8.8.8", "host", "urlhaus_api_key is not set"),
    ]
    for service, key, endpoint, says in cases:
        outcome = service.check(key, endpoint)
        assert outcome is not None
        assert (outcome.status, outcome.reason) == (Status.SKIPPED, "no_api_key")
        assert outcome.message is not None and says in outcome.message
        assert outcome.retry_later
    # The key is normalised even when skipped, so the cache finds it later.
    vt = VirusTotalService(None).check("A" * 64, "file")
    assert vt is not None and vt.key == "a" * 64


def test_dshield_request() -> None:
    spec = DShieldService("soc@example.org").build_request("89.39.105.84")
    assert (spec.method, spec.path, spec.form) == ("GET", "/api/ip/89.39.105.84?json", None)
    assert "soc@example.org" in str(spec.headers["User-Agent"])


def test_virustotal_requests() -> None:
    service = VirusTotalService(KEY)
    file_spec = service.build_request("9CC38C07" + "0" * 56, "file")
    assert file_spec.path == "/api/v3/files/9cc38c07" + "0" * 56
    assert file_spec.headers["x-apikey"] == KEY
    ip_spec = service.build_request("45.84.107.54", "ip")
    assert ip_spec.path == "/api/v3/ip_addresses/45.84.107.54"
    assert "test-key" not in repr(file_spec)


@pytest.mark.parametrize("text", ["", "xyz", "a" * 63, "g" * 64])
def test_virustotal_file_refuses_non_hashes(text: str) -> None:
    outcome = VirusTotalService(KEY).check(text, "file")
    assert outcome is not None
    assert (outcome.status, outcome.reason) == (Status.SKIPPED, "not_applicable")


def test_unknown_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="virustotal has no 'domain' lookup"):
        VirusTotalService(KEY).check("x", "domain")


@pytest.mark.parametrize(
    ("key", "endpoint", "path", "form"),
    [
        ("89.38.146.89", "host", "/v1/host/", {"host": "89.38.146.89"}),
        ("Evil.Example.COM.", "host", "/v1/host/", {"host": "evil.example.com"}),
        (
            "http://89.38.146.89/beetles.sh",
            "url",
            "/v1/url/",
            {"url": "http://89.38.146.89/beetles.sh"},
        ),
        ("F80FB0BD" + "0" * 56, "payload", "/v1/payload/", {"sha256_hash": "f80fb0bd" + "0" * 56}),
        (
            "3b5d5c3712955042212316173ccf37be",
            "payload",
            "/v1/payload/",
            {"md5_hash": "3b5d5c3712955042212316173ccf37be"},
        ),
    ],
)
def test_urlhaus_requests(key: str, endpoint: str, path: str, form: dict[str, str]) -> None:
    service = UrlhausService(KEY)
    assert service.check(key, endpoint) is None
    spec = service.build_request(key, endpoint)
    assert spec == RequestSpec("POST", path, {"Auth-Key": KEY}, form)


@pytest.mark.parametrize(
    ("key", "endpoint", "reason"),
    [
        ("", "url", "not_applicable"),
        (None, "url", "not_applicable"),
        ("/dev/null", "url", "not_applicable"),
        ("file:///etc/passwd", "url", "not_applicable"),
        ("http://192.168.1.10/x.sh", "url", "not_routable"),
        ("http://localhost:8080/x", "url", "not_routable"),
        ("http://bad host/x", "url", "not_routable"),
        ("/dev/null", "host", "not_routable"),
        ("172.31.31.222", "host", "not_routable"),
        ("printer.local", "host", "not_routable"),
        ("intranet", "host", "not_routable"),
        ("zz", "payload", "not_applicable"),
    ],
)
def test_urlhaus_refusals(key: str | None, endpoint: str, reason: str) -> None:
    outcome = UrlhausService(KEY).check(key, endpoint)
    assert outcome is not None
    assert (outcome.status, outcome.reason, outcome.key) == (Status.SKIPPED, reason, key or "")


def test_urlhaus_download_without_url_message() -> None:
    outcome = UrlhausService(KEY).check(None, "url")
    assert outcome is not None
    assert outcome.message == "urlhaus: the download has no URL"


def test_spur_request() -> None:
    spec = SpurService(KEY).build_request("45.84.107.54")
    assert spec == RequestSpec("GET", "/v2/context/45.84.107.54", {"Token": KEY})


def test_hibp_request_sends_only_the_prefix() -> None:
    service = HibpService()
    assert service.check("d033e") is None
    spec = service.build_request("d033e")
    assert spec == RequestSpec("GET", "/range/D033E", {"Add-Padding": "true"})
    # A full hash is never turned into a request.
    refused = service.check("D033E22AE348AEB5660FC2140AEC35850C4DA997")
    assert refused is not None and refused.reason == "not_applicable"
    with pytest.raises(ValueError, match="not a 5-hex SHA-1 prefix"):
        service.build_request("D033E22AE348AEB5660FC2140AEC35850C4DA997")
