"""Service settings: environment names, rate strings, key references, defaults."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from cowrieprocessor.enrichment.secrets import (
    SecretReferenceError,
    fingerprint,
    resolve_secret,
    scrub,
)
from cowrieprocessor.enrichment.settings import (
    SERVICE_NAMES,
    EnrichmentSettings,
    ServiceSettings,
    parse_rate_limit,
)


class AppSettings(EnrichmentSettings, BaseSettings):
    """What ``config.Settings`` becomes with the one-line change (same model_config)."""

    model_config = SettingsConfigDict(
        env_prefix="COWRIEPROC_", extra="ignore", case_sensitive=False
    )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("COWRIEPROC_"):
            monkeypatch.delenv(name)


# Rate strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4/minute,500/day", [(4, 60_000), (500, 86_400_000)]),
        ("500/day, 4/minute", [(4, 60_000), (500, 86_400_000)]),
        ("1/second,30/minute", [(1, 1000), (30, 60_000)]),
        ("1/5seconds", [(1, 5000)]),
        ("10/s", [(10, 1000)]),
        ("100/hours", [(100, 3_600_000)]),
        ("2 / MIN", [(2, 60_000)]),
    ],
)
def test_parse_rate_limit(text: str, expected: list[tuple[int, int]]) -> None:
    assert [(r.limit, r.interval) for r in parse_rate_limit(text)] == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "spur_rate_limit is empty"),
        ("4/minit", "spur_rate_limit: '4/minit' in '4/minit' is not COUNT/UNIT"),
        ("four/minute", "is not COUNT/UNIT"),
        ("0/second", "must allow at least 1 request"),
        ("10/second,5/minute", "contradicts itself"),
        ("100/second,200/minute,1000/minute", "contradicts itself"),
    ],
)
def test_bad_rate_limit_names_the_setting(text: str, says: str) -> None:
    with pytest.raises(ValueError, match="spur_rate_limit") as caught:
        parse_rate_limit(text, setting="spur_rate_limit")
    assert says in str(caught.value)


def test_bad_rate_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COWRIEPROC_VIRUSTOTAL_RATE_LIMIT", "4/minit")
    with pytest.raises(ValidationError, match=r"virustotal_rate_limit: '4/minit'"):
        AppSettings()


# Environment and file ------------------------------------------------------------------


def test_every_service_setting_reads_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SERVICE_NAMES:
        upper = name.upper()
        monkeypatch.setenv(f"COWRIEPROC_{upper}_BASE_URL", f"http://proxy.example/{name}/")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_RATE_LIMIT", "7/minute")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_TTL_DAYS", "11")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_NOT_FOUND_TTL_DAYS", "2")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_TIMEOUT_SECONDS", "3.5")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_MAX_RETRIES", "0")
        monkeypatch.setenv(f"COWRIEPROC_{upper}_ENABLED", "false")
    monkeypatch.setenv("COWRIEPROC_DSHIELD_EMAIL", "soc@example.org")
    monkeypatch.setenv("COWRIEPROC_VT_API_KEY", "vt-key")
    monkeypatch.setenv("COWRIEPROC_URLHAUS_API_KEY", "urlhaus-key")
    monkeypatch.setenv("COWRIEPROC_SPUR_API_KEY", "spur-key")
    monkeypatch.setenv("COWRIEPROC_ENRICHMENT_MAX_WAIT_SECONDS", "5")

    settings = AppSettings()

    for name in SERVICE_NAMES:
        resolved = settings.service_settings(name)
        assert resolved.base_url == f"http://proxy.example/{name}"
        assert resolved.rate_limit == "7/minute"
        assert [(r.limit, r.interval) for r in resolved.rates] == [(7, 60_000)]
        assert (resolved.ttl, resolved.not_found_ttl) == (timedelta(days=11), timedelta(days=2))
        assert (resolved.timeout_seconds, resolved.max_retries) == (3.5, 0)
        assert resolved.enabled is False
        assert resolved.max_wait_seconds == 5
    keys = {
        name: settings.service_settings(name).api_key for name in ("virustotal", "urlhaus", "spur")
    }
    assert {name: key.get_secret_value() for name, key in keys.items() if key} == {
        "virustotal": "vt-key",
        "urlhaus": "urlhaus-key",
        "spur": "spur-key",
    }
    assert settings.service_settings("dshield").email == "soc@example.org"


def test_toml_keys_are_the_field_names(tmp_path: Path) -> None:
    toml = tmp_path / "sensors.toml"
    toml.write_text(
        'dshield_email = "soc@example.org"\n'
        "vt_api_key = 1234567890\n"
        'virustotal_rate_limit = "30/minute,20000/day"\n'
        "hibp_ttl_days = 90\n",
        encoding="utf-8",
    )
    values = TomlConfigSettingsSource(AppSettings, toml_file=toml)()
    settings = AppSettings(**values)
    assert settings.dshield_email == "soc@example.org"
    assert settings.vt_api_key is not None
    assert settings.vt_api_key.get_secret_value() == "1234567890"
    assert settings.service_settings("virustotal").rate_limit == "30/minute,20000/day"
    assert settings.service_settings("hibp").ttl == timedelta(days=90)


def test_defaults() -> None:
    settings = EnrichmentSettings()
    expected = {
        "dshield": ("https://isc.sans.edu", "1/second,30/minute", 7, 1),
        "virustotal": ("https://www.virustotal.com", "4/minute,500/day", 30, 2),
        "urlhaus": ("https://urlhaus-api.abuse.ch", "1/second", 3, 1),
        "spur": ("https://api.spur.us", "2/second", 14, 3),
        "hibp": ("https://api.pwnedpasswords.com", "10/second", 60, 30),
    }
    for name, (url, rate, ttl, not_found) in expected.items():
        resolved = settings.service_settings(name)
        assert (resolved.base_url, resolved.rate_limit) == (url, rate)
        assert (resolved.ttl.days, resolved.not_found_ttl.days) == (ttl, not_found)
        assert (resolved.timeout_seconds, resolved.max_retries, resolved.enabled) == (10, 3, True)
        assert resolved.api_key is None
        assert ServiceSettings.defaults(name) == resolved


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("dshield_base_url", "isc.sans.edu", "dshield_base_url must start with http://"),
        ("spur_ttl_days", 0, "spur_ttl_days must be greater than 0"),
        ("hibp_max_retries", -1, "hibp_max_retries must not be negative"),
        ("dshield_email", "soc@example.org\r\nX-Injected: 1", "dshield_email must be one"),
        ("dshield_email", "nobody", "dshield_email must be one"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        EnrichmentSettings(**{field: value})


def test_unknown_service_name() -> None:
    with pytest.raises(KeyError, match="unknown service 'shodan'"):
        EnrichmentSettings().service_settings("shodan")


# Key references ------------------------------------------------------------------------


def test_key_from_a_file_reference(tmp_path: Path) -> None:
    key_file = tmp_path / "vt.key"
    key_file.write_text("file-held-key\n", encoding="utf-8")
    settings = EnrichmentSettings(vt_api_key=f"file:{key_file}")
    assert settings.vt_api_key is not None
    assert settings.vt_api_key.get_secret_value() == "file-held-key"
    assert "file-held-key" not in repr(settings)
    assert "file-held-key" not in repr(settings.service_settings("virustotal"))


def test_key_from_an_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SPUR_TOKEN", " token-from-env ")
    monkeypatch.setenv("COWRIEPROC_SPUR_API_KEY", "env:MY_SPUR_TOKEN")
    settings = AppSettings()
    assert settings.spur_api_key is not None
    assert settings.spur_api_key.get_secret_value() == "token-from-env"


def test_unresolvable_references_name_setting_and_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    empty = tmp_path / "empty.key"
    empty.write_text("\n", encoding="utf-8")
    cases = [
        ("env:NOT_SET_ANYWHERE", "vt_api_key refers to environment variable NOT_SET_ANYWHERE"),
        (f"file:{tmp_path}/missing.key", f"vt_api_key refers to file {tmp_path}/missing.key"),
        (f"file:{empty}", "which is empty"),
        ("env:", "'env:' must be followed by a variable name"),
    ]
    for reference, says in cases:
        with pytest.raises(SecretReferenceError, match="vt_api_key") as caught:
            resolve_secret(reference, setting="vt_api_key")
        assert says in str(caught.value)
        with pytest.raises(ValidationError, match=says.split(" ")[0]):
            EnrichmentSettings(vt_api_key=reference)


def test_resolve_secret_plain_values() -> None:
    assert resolve_secret(None, setting="x") is None
    assert resolve_secret("  ", setting="x") is None
    resolved = resolve_secret(SecretStr(" abc "), setting="x")
    assert resolved is not None and resolved.get_secret_value() == "abc"
    with pytest.raises(SecretReferenceError, match="x must be a string, not list"):
        resolve_secret(["abc"], setting="x")


def test_fingerprint_and_scrub() -> None:
    key = SecretStr("s3cret-value")
    assert fingerprint(key) == fingerprint(SecretStr("s3cret-value"))
    assert fingerprint(key) != fingerprint(SecretStr("other"))
    assert len(fingerprint(key)) == 16 and "s3cret" not in fingerprint(key)
    assert fingerprint(None) == "anonymous"
    assert scrub("bad key s3cret-value given", [None, key]) == "bad key *** given"


# Values sent in request headers --------------------------------------------------------

NOT_HEADER_SAFE = [
    "VTKEY-SECRÉT-123",  # non-ASCII: httpx cannot encode it
    "key-with\nnewline",
    "key-with\ttab",
    "key\x00nul",
    "key\x7fdel",
]


@pytest.mark.parametrize("field", ["vt_api_key", "urlhaus_api_key", "spur_api_key"])
@pytest.mark.parametrize("value", NOT_HEADER_SAFE)
def test_a_key_that_cannot_be_a_header_is_refused_without_showing_it(
    field: str, value: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        EnrichmentSettings(**{field: value})
    errors = caught.value.errors()
    assert [(e["loc"], e["msg"]) for e in errors] == [
        (
            (field,),
            f"Value error, {field} holds a character that cannot be sent in an HTTP header "
            "(only printable ASCII is allowed; the key is not shown)",
        )
    ]
    assert "SECR" not in errors[0]["msg"]


def test_a_referenced_key_that_cannot_be_a_header_names_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "spur.key"
    key_file.write_text("tök-en\n", encoding="utf-8")
    monkeypatch.setenv("MY_VT_KEY", "vt\x1bkey")
    with pytest.raises(ValidationError) as caught:
        EnrichmentSettings(spur_api_key=f"file:{key_file}", vt_api_key="env:MY_VT_KEY")
    messages = sorted(str(e["msg"]) for e in caught.value.errors())
    assert messages == [
        f"Value error, spur_api_key (from file:{key_file}) holds a character that cannot be "
        "sent in an HTTP header (only printable ASCII is allowed; the key is not shown)",
        "Value error, vt_api_key (from env:MY_VT_KEY) holds a character that cannot be sent "
        "in an HTTP header (only printable ASCII is allowed; the key is not shown)",
    ]


def test_keys_of_printable_ascii_are_kept() -> None:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    settings = EnrichmentSettings(vt_api_key=f"a b {printable}")
    assert settings.vt_api_key is not None
    assert settings.vt_api_key.get_secret_value() == f"a b {printable}"


@pytest.mark.parametrize("value", ["sé@example.org", "soc@exämple.org", "soc@example.org\x7f"])
def test_a_dshield_email_that_cannot_be_a_header_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EnrichmentSettings(dshield_email=value)
    assert [e["msg"] for e in caught.value.errors()] == [
        "Value error, dshield_email must be one e-mail address in printable ASCII "
        "(it is sent in the User-Agent header)"
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://[::1/x", "hibp_base_url is not a usable URL: Invalid port: ':1'"),
        (
            "http://proxy\x01.example",
            "hibp_base_url is not a usable URL: Invalid non-printable ASCII character in URL, "
            "'\\x01' at position 12.",
        ),
        ("http://:8080", "hibp_base_url names no host"),
    ],
)
def test_a_base_url_no_request_could_use_is_refused(value: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EnrichmentSettings(hibp_base_url=value)
    assert [e["msg"] for e in caught.value.errors()] == [f"Value error, {says}"]
