"""Every sample body through ``Service.parse``: status, reason and each kept field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.services import (
    DShieldService,
    HibpService,
    ServiceResponse,
    SpurService,
    UrlhausService,
    VirusTotalService,
    breach_count,
    is_flagged,
    is_malicious,
    password_outcome,
    password_sha1,
    range_prefix,
)
from cowrieprocessor.enrichment.services.base import parse_int
from tests.conftest import API_SAMPLES
from tests.enrichment.conftest import sample, sample_body, sample_response

KEY = SecretStr("test-key")


def response(
    service: str,
    key: str,
    endpoint: str,
    status: int,
    content: bytes,
    headers: dict[str, str] | None = None,
) -> ServiceResponse:
    return ServiceResponse(service, key, endpoint, status, headers or {}, content)


# DShield -------------------------------------------------------------------------------

DSHIELD_FEEDS = {
    "blocklistde22": {"lastseen": "2026-11-29", "firstseen": "2026-09-14"},
    "ciarmy": {"lastseen": "2026-11-30", "firstseen": "2026-10-01"},
}


def test_dshield_success_keeps_fields() -> None:
    outcome = DShieldService("a@b.example").parse(
        sample_response("dshield", "success.json", "89.39.105.84", "ip")
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.reason is None
    assert outcome.key == "89.39.105.84"
    assert outcome.http_status == 200
    assert outcome.data == {
        "asname": "EXAMPLE-HOSTING-AS",
        "ascountry": "RO",
        "as": 64500,
        "network": "89.39.104.0/22",
        "count": 4213,
        "attacks": 311,
        "mindate": "2026-08-02",
        "maxdate": "2026-11-30",
        "threatfeeds": DSHIELD_FEEDS,
    }


def test_dshield_string_counts_and_escaped_slash() -> None:
    # As PHP's json_encode writes it: counters as strings, "/" escaped.
    body = (
        b'{"ip":{"number":"89.39.105.84","count":"17","attacks":"3","as":"64500",'
        b'"network":"89.39.104.0\\/22","threatfeeds":[]}}'
    )
    outcome = DShieldService("a@b.example").parse(
        response("dshield", "89.39.105.84", "ip", 200, body)
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data is not None
    assert (outcome.data["count"], outcome.data["attacks"], outcome.data["as"]) == (17, 3, 64500)
    assert outcome.data["network"] == "89.39.104.0/22"
    assert outcome.data["threatfeeds"] == {}


def test_dshield_not_found_keeps_as_block() -> None:
    outcome = DShieldService("a@b.example").parse(
        sample_response("dshield", "not-found.json", "185.247.137.223", "ip")
    )
    assert outcome.status == Status.NOT_FOUND
    assert outcome.data == {
        "asname": "EXAMPLE-ISP-AS",
        "ascountry": "NL",
        "as": 64511,
        "network": "185.247.136.0/22",
        "count": None,
        "attacks": None,
        "mindate": None,
        "maxdate": None,
        "threatfeeds": {},
    }


def test_dshield_feeds_alone_make_success() -> None:
    body = json.dumps({"ip": {"count": None, "attacks": 0, "threatfeeds": {"tor": {}}}})
    outcome = DShieldService("a@b.example").parse(
        response("dshield", "1.1.1.1", "ip", 200, body.encode())
    )
    assert outcome.status == Status.SUCCESS


def test_dshield_bad_ip_is_invalid_input() -> None:
    outcome = DShieldService("a@b.example").parse(
        sample_response("dshield", "error-bad-ip.json", "8.8.8.8", "ip")
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "invalid_input")
    assert outcome.message == "dshield: ISC says bad IP address"
    assert outcome.data is None


def test_dshield_429_is_rate_limited() -> None:
    outcome = DShieldService("a@b.example").parse(
        sample_response("dshield", "quota-429.json", "89.39.105.84", "ip")
    )
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        Status.ERROR,
        "rate_limited",
        429,
    )


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "empty body"),
        (b"<html><body>Service busy</body></html>", "HTML body"),
        (b"ip=1.2.3.4", "body is not a JSON object (10 bytes)"),
        (b"[1, 2]", "body is not a JSON object (6 bytes)"),
    ],
)
def test_dshield_unusable_bodies_are_unparseable(content: bytes, detail: str) -> None:
    outcome = DShieldService("a@b.example").parse(
        response("dshield", "1.1.1.1", "ip", 200, content)
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "unparseable")
    assert outcome.message == f"dshield: HTTP 200, {detail}"
    assert not outcome.definitive


def test_dshield_non_numeric_count_is_unparseable() -> None:
    body = b'{"ip": {"count": "many", "threatfeeds": {}}}'
    outcome = DShieldService("a@b.example").parse(response("dshield", "1.1.1.1", "ip", 200, body))
    assert (outcome.status, outcome.reason) == (Status.ERROR, "unparseable")


# VirusTotal ----------------------------------------------------------------------------

VT_SHA = "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5"


def test_virustotal_file_success_keeps_fields() -> None:
    outcome = VirusTotalService(KEY).parse(
        sample_response("virustotal", "success.json", VT_SHA, "file")
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data == {
        "last_analysis_stats": {
            "malicious": 3,
            "suspicious": 0,
            "undetected": 2,
            "harmless": 0,
            "timeout": 1,
            "confirmed-timeout": 0,
            "failure": 0,
            "type-unsupported": 1,
        },
        "type_description": "ELF",
        "names": ["tdff", "/tmp/tdff"],
        "meaningful_name": "tdff",
        "first_submission_date": 1526973185,
        "reputation": -12,
        "suggested_threat_label": "trojan.agent/ddos",
    }


def test_virustotal_file_without_classification() -> None:
    body = {"data": {"attributes": {"last_analysis_stats": {"malicious": 0}, "names": []}}}
    outcome = VirusTotalService(KEY).parse(
        response("virustotal", VT_SHA, "file", 200, json.dumps(body).encode())
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data is not None
    assert outcome.data["suggested_threat_label"] is None
    assert outcome.data["last_analysis_stats"] == {"malicious": 0}


def test_virustotal_ip_success_keeps_fields() -> None:
    body = {
        "data": {
            "id": "45.84.107.54",
            "type": "ip_address",
            "attributes": {
                "last_analysis_stats": {"malicious": 4, "harmless": 60},
                "reputation": -3,
                "asn": 64502,
                "as_owner": "Example Transit B.V.",
                "country": "NL",
                "network": "45.84.104.0/22",
                "total_votes": {"harmless": 0, "malicious": 1},
                "whois": "long text we do not keep",
            },
        }
    }
    outcome = VirusTotalService(KEY).parse(
        response("virustotal", "45.84.107.54", "ip", 200, json.dumps(body).encode())
    )
    assert outcome.data == {
        "last_analysis_stats": {"malicious": 4, "harmless": 60},
        "reputation": -3,
        "asn": 64502,
        "as_owner": "Example Transit B.V.",
        "country": "NL",
        "network": "45.84.104.0/22",
        "total_votes": {"harmless": 0, "malicious": 1},
    }


def test_virustotal_not_found() -> None:
    sha = "f80fb0bd5bad239ba382226e73c80be3da5cebcf35ba280884e22c051a117087"
    outcome = VirusTotalService(KEY).parse(
        sample_response("virustotal", "not-found.json", sha, "file")
    )
    assert (outcome.status, outcome.data, outcome.http_status) == (Status.NOT_FOUND, None, 404)
    assert outcome.definitive


def test_virustotal_404_without_not_found_code_is_an_error() -> None:
    outcome = VirusTotalService(KEY).parse(
        response("virustotal", VT_SHA, "file", 404, b"<html>proxy says no</html>")
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "http_status")


def test_virustotal_quota_and_its_reset() -> None:
    service = VirusTotalService(KEY)
    quota = sample_response("virustotal", "quota-429.json", VT_SHA, "file")
    outcome = service.parse(quota)
    assert (outcome.status, outcome.reason) == (Status.ERROR, "quota")
    assert outcome.message == "virustotal: HTTP 429 QuotaExceededError: the API quota is spent"

    now = datetime(2026, 12, 3, 17, 30, tzinfo=UTC)
    # The sample carries Retry-After: 60; without it the daily reset at 00:00 UTC applies.
    assert service.quota_resets_at(quota, now) == now + timedelta(seconds=60)
    bare = ServiceResponse("virustotal", VT_SHA, "file", 429, {}, quota.content)
    assert service.quota_resets_at(bare, now) == datetime(2026, 12, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "content", "reason"),
    [
        (429, b'{"error": {"code": "TooManyRequestsError", "message": "x"}}', "rate_limited"),
        (429, b"<title>429</title>429 Too Many Requests", "rate_limited"),
        (401, b'{"error": {"code": "AuthenticationRequiredError", "message": "x"}}', "auth"),
        (403, b'{"error": {"code": "ForbiddenError", "message": "x"}}', "auth"),
        (400, b'{"error": {"code": "InvalidArgumentError", "message": "x"}}', "invalid_input"),
        (503, b'{"error": {"code": "TransientError", "message": "x"}}', "http_status"),
        (200, b'{"data": {"id": "x"}}', "unparseable"),
        (200, b"<html></html>", "unparseable"),
    ],
)
def test_virustotal_errors(status: int, content: bytes, reason: str) -> None:
    outcome = VirusTotalService(KEY).parse(response("virustotal", VT_SHA, "file", status, content))
    assert (outcome.status, outcome.reason, outcome.http_status) == (Status.ERROR, reason, status)


def test_virustotal_auth_sample() -> None:
    outcome = VirusTotalService(KEY).parse(
        sample_response("virustotal", "auth-401.json", VT_SHA, "file")
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "auth")
    assert outcome.message == "virustotal: HTTP 401 WrongCredentialsError: the API key was refused"


# URLhaus -------------------------------------------------------------------------------

BEETLES_SHA = "f80fb0bd5bad239ba382226e73c80be3da5cebcf35ba280884e22c051a117087"


def test_urlhaus_host_success_keeps_fields() -> None:
    outcome = UrlhausService(KEY).parse(
        sample_response("urlhaus", "host-success.json", "89.38.146.89", "host")
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data == {
        "host": "89.38.146.89",
        "urlhaus_reference": "https://urlhaus.abuse.ch/host/89.38.146.89/",
        "firstseen": "2017-11-04 22:41:07 UTC",
        "url_count": 2,
        "blacklists": {"spamhaus_dbl": "not listed", "surbl": "not listed"},
        "urls": [
            {
                "id": 74213,
                "url": "http://89.38.146.89/beetles.sh",
                "url_status": "offline",
                "threat": "malware_download",
                "date_added": "2017-11-04 22:41:07 UTC",
                "larted": True,
                "takedown_time_seconds": 86400,
                "tags": ["bash", "mirai"],
            },
            {
                "id": 74214,
                "url": "http://89.38.146.89/bins/x86",
                "url_status": "offline",
                "threat": "malware_download",
                "date_added": "2017-11-05 03:10:55 UTC",
                "larted": False,
                "takedown_time_seconds": None,
                "tags": ["elf", "mirai"],
            },
        ],
    }


def test_urlhaus_url_success_keeps_fields() -> None:
    url = "http://89.38.146.89/beetles.sh"
    outcome = UrlhausService(KEY).parse(sample_response("urlhaus", "url-success.json", url, "url"))
    assert outcome.status == Status.SUCCESS
    assert outcome.data == {
        "id": 74213,
        "url": url,
        "url_status": "offline",
        "threat": "malware_download",
        "date_added": "2017-11-04 22:41:07 UTC",
        "larted": True,
        "takedown_time_seconds": 86400,
        "tags": ["bash", "mirai"],
        "urlhaus_reference": "https://urlhaus.abuse.ch/url/74213/",
        "host": "89.38.146.89",
        "last_online": "2017-11-05 18:02:11 UTC",
        "blacklists": {"spamhaus_dbl": "not listed", "surbl": "not listed"},
        "payloads": [
            {
                "firstseen": "2017-11-04",
                "filename": "beetles.sh",
                "file_type": "sh",
                "response_size": 1532,
                "response_md5": "3b5d5c3712955042212316173ccf37be",
                "response_sha256": BEETLES_SHA,
                "signature": None,
                "virustotal": {
                    "result": "21 / 60",
                    "percent": "35.00",
                    "link": f"https://www.virustotal.com/gui/file/{BEETLES_SHA}",
                },
            }
        ],
    }


def test_urlhaus_payload_success_keeps_fields() -> None:
    outcome = UrlhausService(KEY).parse(
        sample_response("urlhaus", "payload-success.json", BEETLES_SHA, "payload")
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data == {
        "md5_hash": "3b5d5c3712955042212316173ccf37be",
        "sha256_hash": BEETLES_SHA,
        "file_type": "sh",
        "file_size": 1532,
        "signature": None,
        "firstseen": "2017-11-04 22:41:09",
        "lastseen": "2017-11-05 17:58:40",
        "url_count": 1,
        "virustotal": None,
        "urls": [
            {
                "url_id": 74213,
                "url": "http://89.38.146.89/beetles.sh",
                "url_status": "offline",
                "firstseen": "2017-11-04",
                "lastseen": "2017-11-05",
            }
        ],
    }


@pytest.mark.parametrize(
    ("name", "key", "endpoint"),
    [
        ("host-not-found.json", "167.71.25.83", "host"),
        ("url-not-found.json", "http://96.44.186.212:7744/tfhy", "url"),
        ("payload-not-found.json", VT_SHA, "payload"),
    ],
)
def test_urlhaus_no_results_is_not_found(name: str, key: str, endpoint: str) -> None:
    outcome = UrlhausService(KEY).parse(sample_response("urlhaus", name, key, endpoint))
    assert (outcome.status, outcome.data, outcome.key) == (Status.NOT_FOUND, None, key)


def test_urlhaus_invalid_host_is_invalid_input() -> None:
    outcome = UrlhausService(KEY).parse(
        sample_response("urlhaus", "host-invalid.json", "/dev/null", "host")
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "invalid_input")
    assert outcome.message == "urlhaus: URLhaus says invalid_host"


@pytest.mark.parametrize("status", [200, 401, 403])
def test_urlhaus_unknown_auth_key_is_auth(status: int) -> None:
    content = sample_body("urlhaus", "auth-error.json")
    outcome = UrlhausService(KEY).parse(response("urlhaus", "1.1.1.1", "host", status, content))
    assert (outcome.status, outcome.reason, outcome.http_status) == (Status.ERROR, "auth", status)


def test_urlhaus_auth_sample_and_bare_401() -> None:
    service = UrlhausService(KEY)
    assert (
        service.parse(sample_response("urlhaus", "auth-error.json", "x.example", "host")).reason
        == "auth"
    )
    assert service.parse(response("urlhaus", "x.example", "host", 401, b"")).reason == "auth"


def test_urlhaus_unknown_query_status_is_unparseable() -> None:
    outcome = UrlhausService(KEY).parse(
        response("urlhaus", "x.example", "host", 200, b'{"query_status": "maintenance"}')
    )
    assert (outcome.status, outcome.reason) == (Status.ERROR, "unparseable")
    assert outcome.message == "urlhaus: HTTP 200, unknown query_status maintenance"


# Spur ----------------------------------------------------------------------------------


def test_spur_success_keeps_fields() -> None:
    outcome = SpurService(KEY).parse(
        sample_response("spur", "success.json", "45.84.107.54", "context")
    )
    assert outcome.status == Status.SUCCESS
    assert outcome.data == {
        "ip": "45.84.107.54",
        "as": {"number": 64502, "organization": "Example Transit B.V."},
        "organization": "Example Transit B.V.",
        "infrastructure": "DATACENTER",
        "location": {"city": "Amsterdam", "country": "NL", "state": "North Holland"},
        "client": {
            "behaviors": ["FILE_SHARING"],
            "concentration": {
                "city": "Frankfurt am Main",
                "country": "DE",
                "density": 0.31,
                "geohash": "u0yj",
                "skew": 412,
                "state": "Hesse",
            },
            "count": 7,
            "countries": 3,
            "proxies": ["EXAMPLE_PROXY"],
            "spread": 1830211,
            "types": ["DESKTOP"],
        },
        "risks": ["TUNNEL", "CALLBACK_PROXY"],
        "services": ["OPENVPN", "WIREGUARD"],
        "tunnels": [
            {
                "anonymous": True,
                "entries": ["45.84.107.10"],
                "operator": "EXAMPLE_VPN",
                "type": "VPN",
            }
        ],
        "result_dt": "20261203",
    }


def test_spur_minimal_object_is_not_found() -> None:
    outcome = SpurService(KEY).parse(
        sample_response("spur", "not-found.json", "167.71.25.83", "context")
    )
    assert outcome.status == Status.NOT_FOUND
    assert outcome.data == {
        "ip": "167.71.25.83",
        "as": {"number": 64503, "organization": "Example Cloud LLC"},
        "organization": "Example Cloud LLC",
        "infrastructure": None,
        "location": {"city": "Santa Clara", "country": "US", "state": "California"},
        "client": None,
        "risks": [],
        "services": [],
        "tunnels": [],
        "result_dt": "20261203",
    }


@pytest.mark.parametrize(
    ("name", "reason", "message"),
    [
        (
            "quota-429.json",
            "quota",
            "spur: HTTP 429, the balance of queries is spent (x-balance-remaining: 0)",
        ),
        ("auth-401.json", "auth", "spur: HTTP 401, the key was refused"),
        (
            "bad-input-400.json",
            "invalid_input",
            "spur: HTTP 400 IP must be a public IPv4 or IPv6 address",
        ),
    ],
)
def test_spur_errors(name: str, reason: str, message: str) -> None:
    outcome = SpurService(KEY).parse(sample_response("spur", name, "45.84.107.54", "context"))
    assert (outcome.status, outcome.reason, outcome.message) == (Status.ERROR, reason, message)


def test_spur_quota_has_no_reset_this_run() -> None:
    quota = sample_response("spur", "quota-429.json", "45.84.107.54", "context")
    assert SpurService(KEY).quota_resets_at(quota, datetime.now(UTC)) is None


# HIBP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta_name", "entries", "padding"),
    [
        ("success.meta.json", 25, 0),
        ("success-padded.meta.json", 31, 806),
        ("not-found.meta.json", 20, 0),
    ],
)
def test_hibp_range_and_breach_count(meta_name: str, entries: int, padding: int) -> None:
    meta = sample("hibp", meta_name)
    lookup = meta["lookup"]
    assert password_sha1(lookup["password"]) == lookup["sha1"]
    assert range_prefix(lookup["sha1"]) == lookup["prefix"]

    raw = (API_SAMPLES / "hibp" / meta["response"]["body_file"]).read_bytes()
    rng = HibpService().parse(response("hibp", lookup["prefix"], "range", 200, raw))
    assert rng.status == Status.SUCCESS
    assert rng.data is not None
    assert (rng.data["prefix"], rng.data["entries"], rng.data["padding"]) == (
        lookup["prefix"],
        entries,
        padding,
    )
    # The raw answer and the stored (padding-free) body give the same count.
    assert breach_count(raw.decode(), lookup["sha1"]) == lookup["expected_count"]
    assert breach_count(rng.data["body"], lookup["sha1"]) == lookup["expected_count"]

    password = password_outcome(lookup["sha1"], rng)
    assert password.key == lookup["sha1"]
    if lookup["expected_count"]:
        assert (password.status, password.data) == (
            Status.SUCCESS,
            {"count": lookup["expected_count"]},
        )
    else:
        assert (password.status, password.data) == (Status.NOT_FOUND, None)


def test_hibp_padding_line_is_not_a_breach() -> None:
    raw = (API_SAMPLES / "hibp" / "success-padded.txt").read_text()
    padded_suffix = next(line.split(":")[0] for line in raw.splitlines() if line.endswith(":0"))
    assert breach_count(raw, "7C4A8" + padded_suffix) == 0


def test_hibp_one_range_answers_every_password_of_the_prefix() -> None:
    rng = HibpService().parse(
        response("hibp", "D033E", "range", 200, sample_body("hibp", "success.meta.json"))
    )
    admin = password_outcome("D033E22AE348AEB5660FC2140AEC35850C4DA997", rng)
    other = password_outcome("D033E128C3AB96821C3F3E890D1C190AEAD0F8CD", rng)
    absent = password_outcome("D033E" + "0" * 35, rng)
    assert [admin.data, other.data, absent.status] == [
        {"count": 42190571},
        {"count": 26},
        Status.NOT_FOUND,
    ]


def test_hibp_failed_range_carries_over_to_the_password() -> None:
    failed = Outcome("hibp", "D033E", Status.ERROR, reason="timeout", message="hibp: timeout")
    password = password_outcome("d033e22ae348aeb5660fc2140aec35850c4da997", failed)
    assert (password.key, password.status, password.reason, password.data) == (
        "D033E22AE348AEB5660FC2140AEC35850C4DA997",
        Status.ERROR,
        "timeout",
        None,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "hibp: HTTP 200, empty body"),
        (b"<html>cloudflare</html>", "hibp: HTTP 200, line 1 is not SUFFIX:COUNT"),
        (
            b"22AE348AEB5660FC2140AEC35850C4DA997:5\r\nnonsense",
            "hibp: HTTP 200, line 2 is not SUFFIX:COUNT",
        ),
    ],
)
def test_hibp_bad_bodies_are_unparseable(content: bytes, message: str) -> None:
    outcome = HibpService().parse(response("hibp", "D033E", "range", 200, content))
    assert (outcome.status, outcome.reason, outcome.message) == (
        Status.ERROR,
        "unparseable",
        message,
    )


def test_hibp_400_is_invalid_input() -> None:
    meta = sample("hibp", "error-400.meta.json")
    body = meta["response"]["body_text"].encode()
    outcome = HibpService().parse(response("hibp", "XYZ12", "range", 400, body))
    assert (outcome.status, outcome.reason) == (Status.ERROR, "invalid_input")


def test_password_sha1_of_lone_surrogate_and_nul() -> None:
    # Attacker text is hashed as logged; it must not raise.
    assert password_sha1("a\udc80b") == "2760D9D211861AECD593CF364B080D0F24F05469"
    assert password_sha1("pass\x00word") == "726CCDBD77CC9BB88DB6CC320E5326531304E721"


def test_flags_agree_with_the_outcomes() -> None:
    dshield = DShieldService("a@b.example")
    reported = dshield.parse(sample_response("dshield", "success.json", "89.39.105.84", "ip"))
    unseen = dshield.parse(sample_response("dshield", "not-found.json", "185.247.137.223", "ip"))
    assert (is_flagged(reported), is_flagged(unseen)) == (True, False)

    vt = VirusTotalService(KEY)
    bad = vt.parse(sample_response("virustotal", "success.json", VT_SHA, "file"))
    clean_body = {"data": {"attributes": {"last_analysis_stats": {"malicious": 0}}}}
    clean = vt.parse(response("virustotal", VT_SHA, "file", 200, json.dumps(clean_body).encode()))
    unknown = vt.parse(sample_response("virustotal", "not-found.json", VT_SHA, "file"))
    assert [is_malicious(o) for o in (bad, clean, unknown, reported)] == [
        True,
        False,
        False,
        False,
    ]


def test_virustotal_keeps_at_most_50_names() -> None:
    body = {"data": {"attributes": {"names": [f"n{i}" for i in range(300)]}}}
    outcome = VirusTotalService(KEY).parse(
        response("virustotal", VT_SHA, "file", 200, json.dumps(body).encode())
    )
    assert outcome.data is not None
    assert outcome.data["names"] == [f"n{i}" for i in range(50)]


# Numbers beyond 64 bits: neither a BIGINT column nor the JSON encoder can hold them -----

HUGE = "99999999999999999999999"
ADMIN = "D033E22AE348AEB5660FC2140AEC35850C4DA997"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (2**63, "9223372036854775808 is beyond 64 bits"),
        (str(-(2**63) - 1), "-9223372036854775809 is beyond 64 bits"),
        (HUGE, f"{HUGE} is beyond 64 bits"),
        (1e23, "1e+23 is beyond 64 bits"),  # how orjson reads a long integer
        ("9" * 5000, "9" * 117 + "... is beyond 64 bits"),  # before int() refuses it
    ],
)
def test_parse_int_refuses_values_beyond_64_bits(value: object, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_int(value)
    assert str(caught.value) == says
    # Every 64-bit value is still taken, leading zeros and orjson's floats included.
    assert [
        parse_int(2**63 - 1),
        parse_int(str(-(2**63))),
        parse_int("0009223372036854775807"),
        parse_int(1e18),
    ] == [2**63 - 1, -(2**63), 2**63 - 1, 10**18]


@pytest.mark.parametrize("count", [HUGE, str(2**63), "9" * 5000])
def test_hibp_count_beyond_64_bits_is_unparseable(count: str) -> None:
    content = f"0000000000000000000000000000000000A:3\r\n{ADMIN[5:]}:{count}".encode()
    outcome = HibpService().parse(response("hibp", "D033E", "range", 200, content))
    assert (outcome.status, outcome.reason, outcome.message, outcome.data) == (
        Status.ERROR,
        "unparseable",
        "hibp: HTTP 200, line 2 has a count beyond 64 bits",
        None,
    )
    largest = f"{ADMIN[5:]}:{2**63 - 1}".encode()
    rng = HibpService().parse(response("hibp", "D033E", "range", 200, largest))
    assert password_outcome(ADMIN, rng).data == {"count": 2**63 - 1}


def test_a_cached_range_with_a_count_beyond_64_bits_fails_only_that_password() -> None:
    # A range stored before such answers were refused: its body is text, so it was cached.
    body = f"{ADMIN[5:]}:{HUGE}\n128C3AB96821C3F3E890D1C190AEAD0F8CD:26"
    stored = Outcome(
        "hibp", "D033E", Status.SUCCESS, http_status=200, data={"prefix": "D033E", "body": body}
    )
    with pytest.raises(ValueError, match="the range holds a count beyond 64 bits"):
        breach_count(body, ADMIN)
    admin = password_outcome(ADMIN, stored)
    assert (admin.key, admin.status, admin.reason, admin.message, admin.data) == (
        ADMIN,
        Status.ERROR,
        "unparseable",
        "hibp: the range holds a count beyond 64 bits for this password",
        None,
    )
    other = password_outcome("D033E128C3AB96821C3F3E890D1C190AEAD0F8CD", stored)
    assert (other.status, other.data) == (Status.SUCCESS, {"count": 26})


@pytest.mark.parametrize("count", [HUGE, f'"{HUGE}"'])
def test_dshield_counter_beyond_64_bits_is_unparseable(count: str) -> None:
    body = f'{{"ip": {{"count": {count}, "attacks": 2, "threatfeeds": {{}}}}}}'.encode()
    outcome = DShieldService("a@b.example").parse(response("dshield", "1.1.1.1", "ip", 200, body))
    shown = HUGE if count.startswith('"') else "1e+23"
    assert (outcome.status, outcome.reason, outcome.message, outcome.data) == (
        Status.ERROR,
        "unparseable",
        f"dshield: HTTP 200, a counter is not a number: {shown} is beyond 64 bits",
        None,
    )


@pytest.mark.parametrize(
    ("endpoint", "attributes", "shown"),
    [
        ("file", {"last_analysis_stats": {"malicious": HUGE}}, HUGE),
        ("file", {"first_submission_date": int(HUGE)}, "1e+23"),
        ("ip", {"reputation": -int(HUGE)}, "-1e+23"),
        ("ip", {"asn": str(2**64)}, str(2**64)),
    ],
)
def test_virustotal_numbers_beyond_64_bits_are_unparseable(
    endpoint: str, attributes: dict[str, object], shown: str
) -> None:
    key = VT_SHA if endpoint == "file" else "45.84.107.4"
    body = json.dumps({"data": {"attributes": attributes}}).encode()
    outcome = VirusTotalService(KEY).parse(response("virustotal", key, endpoint, 200, body))
    assert (outcome.status, outcome.reason, outcome.message, outcome.data) == (
        Status.ERROR,
        "unparseable",
        f"virustotal: HTTP 200, {shown} is beyond 64 bits",
        None,
    )


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("host", {"query_status": "ok", "url_count": HUGE, "urls": []}),
        ("host", {"query_status": "ok", "urls": [{"id": HUGE}]}),
        ("payload", {"query_status": "ok", "file_size": HUGE, "urls": []}),
        ("url", {"query_status": "ok", "payloads": [{"response_size": HUGE}]}),
    ],
)
def test_urlhaus_numbers_beyond_64_bits_are_unparseable(
    endpoint: str, body: dict[str, object]
) -> None:
    key = {"host": "89.38.146.89", "payload": BEETLES_SHA, "url": "http://89.38.146.89/x"}
    outcome = UrlhausService(KEY).parse(
        response("urlhaus", key[endpoint], endpoint, 200, json.dumps(body).encode())
    )
    assert (outcome.status, outcome.reason, outcome.message, outcome.data) == (
        Status.ERROR,
        "unparseable",
        f"urlhaus: HTTP 200, {HUGE} is beyond 64 bits",
        None,
    )
