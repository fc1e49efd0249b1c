"""Settings of the five enrichment services, and the rate-limit strings they use.

:class:`EnrichmentSettings` holds flat fields (``dshield_base_url``,
``virustotal_rate_limit``, ``vt_api_key``, ...). ``config.Settings`` inherits it, so
each field is read from flags, ``COWRIEPROC_<FIELD>`` variables and the TOML file like
every other setting. :meth:`EnrichmentSettings.service_settings` gives the resolved
view one service needs (:class:`ServiceSettings`).

Defaults, and where they come from:

============ ================== ===== ========= =====================================
service      rate limit         TTL d not found rate source
============ ================== ===== ========= =====================================
dshield      1/second,30/minute 7     1         none published; ISC asks for restraint
                                                (429 then "stop for 5 minutes")
virustotal   4/minute,500/day   30    2         public API quota (documented)
urlhaus      1/second           3     1         none published; fair use
spur         2/second           14    3         none published; the balance is the cost
hibp         10/second          60    30        none for Pwned Passwords (Cloudflare)
============ ================== ===== ========= =====================================

Not-found TTLs are shorter because an unknown IP, file or URL may be reported
tomorrow; HIBP's corpus changes rarely, so its negatives last a month.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr, ValidationInfo, field_validator
from pyrate_limiter import Rate, validate_rate_list

from cowrieprocessor.enrichment.secrets import ENV_REFERENCE, FILE_REFERENCE, resolve_secret

SERVICE_NAMES = ("dshield", "virustotal", "urlhaus", "spur", "hibp")

_SECOND_MS = 1000
_UNIT_MS = {
    "s": _SECOND_MS,
    "sec": _SECOND_MS,
    "second": _SECOND_MS,
    "min": 60 * _SECOND_MS,
    "minute": 60 * _SECOND_MS,
    "h": 3600 * _SECOND_MS,
    "hour": 3600 * _SECOND_MS,
    "d": 86400 * _SECOND_MS,
    "day": 86400 * _SECOND_MS,
}
_RATE_PART = re.compile(r"^(\d+)/(\d*)([a-z]+?)s?$")
#: What an HTTP header value may hold here: printable ASCII (space included). httpx
#: refuses anything else (non-ASCII, control characters such as a line break).
_HEADER_TEXT = re.compile(r"^[\x20-\x7e]*$")


def parse_rate_limit(text: str, *, setting: str = "rate_limit") -> list[Rate]:
    """Parse ``"4/minute,500/day"`` into pyrate-limiter rates, shortest period first.

    Each part is ``COUNT/UNIT`` or ``COUNT/NUNIT`` (``1/5seconds``); units are second,
    minute, hour, day (also s, sec, min, h, d, and plurals).

    Raises:
        ValueError: naming ``setting`` and the bad text, when a part does not parse or the
            parts contradict each other (a longer period must allow more requests, and
            not more per second, than a shorter one).
    """
    parts = [part.replace(" ", "").lower() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"{setting} is empty; give a limit such as '4/minute,500/day'")

    rates = []
    for part in parts:
        match = _RATE_PART.match(part)
        if match is None or match[3] not in _UNIT_MS:
            raise ValueError(
                f"{setting}: {part!r} in {text!r} is not COUNT/UNIT "
                "(units: second, minute, hour, day; for example '4/minute,500/day')"
            )
        count, multiplier = int(match[1]), int(match[2] or 1)
        if count < 1 or multiplier < 1:
            raise ValueError(f"{setting}: {part!r} in {text!r} must allow at least 1 request")
        rates.append(Rate(count, _UNIT_MS[match[3]] * multiplier))

    rates.sort(key=lambda rate: rate.interval)
    if not validate_rate_list(rates):
        raise ValueError(
            f"{setting}: {text!r} contradicts itself: each longer period must allow more "
            "requests than a shorter one, and not more per second"
        )
    return rates


def _reference_of(value: object) -> str:
    """`` (from env:NAME)`` or `` (from file:PATH)`` when ``value`` is a key reference."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and text.strip().startswith((ENV_REFERENCE, FILE_REFERENCE)):
        return f" (from {text.strip()})"
    return ""


@dataclass(frozen=True)
class ServiceSettings:
    """What one service client needs, resolved (keys already read from their references).

    ``api_key`` is a SecretStr: this object's repr never shows it.
    """

    name: str
    base_url: str
    rate_limit: str
    ttl: timedelta
    not_found_ttl: timedelta
    timeout_seconds: float = 10.0
    max_retries: int = 3
    enabled: bool = True
    api_key: SecretStr | None = None
    email: str | None = None
    #: Longest a lookup waits for the rate limiter or a pause before it ends as skipped.
    #: Above 60 s so that a per-minute limit (VirusTotal's 4/minute) is waited out.
    max_wait_seconds: float = 120.0
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    rates: tuple[Rate, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rates:
            parsed = parse_rate_limit(self.rate_limit, setting=f"{self.name}_rate_limit")
            object.__setattr__(self, "rates", tuple(parsed))

    @classmethod
    def defaults(cls, name: str, **changes: Any) -> ServiceSettings:
        """The documented defaults of ``name``, with ``changes`` applied (tests, tools)."""
        d = SERVICE_DEFAULTS[name]
        base = cls(
            name=name,
            base_url=d.base_url,
            rate_limit=d.rate_limit,
            ttl=timedelta(days=d.ttl_days),
            not_found_ttl=timedelta(days=d.not_found_ttl_days),
        )
        return replace(base, **changes, rates=()) if changes else base


@dataclass(frozen=True)
class ServiceDefaults:
    base_url: str
    rate_limit: str
    ttl_days: int
    not_found_ttl_days: int


SERVICE_DEFAULTS = {
    "dshield": ServiceDefaults("https://isc.sans.edu", "1/second,30/minute", 7, 1),
    "virustotal": ServiceDefaults("https://www.virustotal.com", "4/minute,500/day", 30, 2),
    "urlhaus": ServiceDefaults("https://urlhaus-api.abuse.ch", "1/second", 3, 1),
    "spur": ServiceDefaults("https://api.spur.us", "2/second", 14, 3),
    "hibp": ServiceDefaults("https://api.pwnedpasswords.com", "10/second", 60, 30),
}
_D = SERVICE_DEFAULTS
_TIMEOUT = 10.0
_RETRIES = 3

_KEY_FIELDS = {"virustotal": "vt_api_key", "urlhaus": "urlhaus_api_key", "spur": "spur_api_key"}


class EnrichmentSettings(BaseModel):
    """Every enrichment service setting, flat, so ``COWRIEPROC_<FIELD>`` names them.

    Meant to be inherited by ``config.Settings``; usable alone in tests.
    """

    # Credentials: the key itself, or env:NAME / file:/path (resolved once, here).
    dshield_email: str | None = None
    vt_api_key: SecretStr | None = None
    urlhaus_api_key: SecretStr | None = None
    spur_api_key: SecretStr | None = None

    # Shared by all services.
    enrichment_max_wait_seconds: float = 120.0
    enrichment_backoff_base_seconds: float = 1.0
    enrichment_backoff_max_seconds: float = 60.0

    dshield_base_url: str = _D["dshield"].base_url
    dshield_rate_limit: str = _D["dshield"].rate_limit
    dshield_ttl_days: int = _D["dshield"].ttl_days
    dshield_not_found_ttl_days: int = _D["dshield"].not_found_ttl_days
    dshield_timeout_seconds: float = _TIMEOUT
    dshield_max_retries: int = _RETRIES
    dshield_enabled: bool = True

    virustotal_base_url: str = _D["virustotal"].base_url
    virustotal_rate_limit: str = _D["virustotal"].rate_limit
    virustotal_ttl_days: int = _D["virustotal"].ttl_days
    virustotal_not_found_ttl_days: int = _D["virustotal"].not_found_ttl_days
    virustotal_timeout_seconds: float = _TIMEOUT
    virustotal_max_retries: int = _RETRIES
    virustotal_enabled: bool = True

    urlhaus_base_url: str = _D["urlhaus"].base_url
    urlhaus_rate_limit: str = _D["urlhaus"].rate_limit
    urlhaus_ttl_days: int = _D["urlhaus"].ttl_days
    urlhaus_not_found_ttl_days: int = _D["urlhaus"].not_found_ttl_days
    urlhaus_timeout_seconds: float = _TIMEOUT
    urlhaus_max_retries: int = _RETRIES
    urlhaus_enabled: bool = True

    spur_base_url: str = _D["spur"].base_url
    spur_rate_limit: str = _D["spur"].rate_limit
    spur_ttl_days: int = _D["spur"].ttl_days
    spur_not_found_ttl_days: int = _D["spur"].not_found_ttl_days
    spur_timeout_seconds: float = _TIMEOUT
    spur_max_retries: int = _RETRIES
    spur_enabled: bool = True

    hibp_base_url: str = _D["hibp"].base_url
    hibp_rate_limit: str = _D["hibp"].rate_limit
    hibp_ttl_days: int = _D["hibp"].ttl_days
    hibp_not_found_ttl_days: int = _D["hibp"].not_found_ttl_days
    hibp_timeout_seconds: float = _TIMEOUT
    hibp_max_retries: int = _RETRIES
    hibp_enabled: bool = True

    @field_validator("vt_api_key", "urlhaus_api_key", "spur_api_key", mode="before")
    @classmethod
    def _resolve_key(cls, value: object, info: ValidationInfo) -> SecretStr | None:
        if isinstance(value, int) and not isinstance(value, bool):
            # A key written as a bare number in TOML: accept it rather than echo it in an error.
            value = str(value)
        setting = str(info.field_name)
        key = resolve_secret(value, setting=setting)
        if key is not None and not _HEADER_TEXT.match(key.get_secret_value()):
            # Every key is sent in a request header. The message never shows the key.
            raise ValueError(
                f"{setting}{_reference_of(value)} holds a character that cannot be sent in "
                "an HTTP header (only printable ASCII is allowed; the key is not shown)"
            )
        return key

    @field_validator("dshield_email", mode="before")
    @classmethod
    def _check_email(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
            # It goes into the User-Agent header: printable ASCII only (no line breaks).
            if value is not None and (not _HEADER_TEXT.match(value) or "@" not in value):
                raise ValueError(
                    "dshield_email must be one e-mail address in printable ASCII "
                    "(it is sent in the User-Agent header)"
                )
        return value

    @field_validator(*(f"{name}_base_url" for name in SERVICE_NAMES))
    @classmethod
    def _check_base_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{info.field_name} must start with http:// or https://")
        try:
            host = httpx.URL(value).host
        except httpx.InvalidURL as exc:
            # Refused here rather than by the first request of a run.
            raise ValueError(f"{info.field_name} is not a usable URL: {exc}") from None
        if not host:
            raise ValueError(f"{info.field_name} names no host")
        return value

    @field_validator(*(f"{name}_rate_limit" for name in SERVICE_NAMES))
    @classmethod
    def _check_rate_limit(cls, value: str, info: ValidationInfo) -> str:
        parse_rate_limit(value, setting=str(info.field_name))
        return value

    @field_validator(
        *(
            f"{name}_{suffix}"
            for name in SERVICE_NAMES
            for suffix in ("ttl_days", "timeout_seconds")
        ),
        *(f"{name}_not_found_ttl_days" for name in SERVICE_NAMES),
        "enrichment_backoff_base_seconds",
        "enrichment_backoff_max_seconds",
    )
    @classmethod
    def _check_positive(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be greater than 0")
        return value

    @field_validator(
        *(f"{name}_max_retries" for name in SERVICE_NAMES), "enrichment_max_wait_seconds"
    )
    @classmethod
    def _check_not_negative(cls, value: float, info: ValidationInfo) -> float:
        if value < 0:
            raise ValueError(f"{info.field_name} must not be negative")
        return value

    def service_settings(self, name: str) -> ServiceSettings:
        """The resolved settings of one service (``dshield``, ``virustotal``, ...).

        Raises:
            KeyError: ``name`` is not one of :data:`SERVICE_NAMES`.
        """
        if name not in SERVICE_DEFAULTS:
            raise KeyError(f"unknown service {name!r}; expected one of {', '.join(SERVICE_NAMES)}")
        key_field = _KEY_FIELDS.get(name)
        return ServiceSettings(
            name=name,
            base_url=getattr(self, f"{name}_base_url"),
            rate_limit=getattr(self, f"{name}_rate_limit"),
            ttl=timedelta(days=getattr(self, f"{name}_ttl_days")),
            not_found_ttl=timedelta(days=getattr(self, f"{name}_not_found_ttl_days")),
            timeout_seconds=getattr(self, f"{name}_timeout_seconds"),
            max_retries=getattr(self, f"{name}_max_retries"),
            enabled=getattr(self, f"{name}_enabled"),
            api_key=getattr(self, key_field) if key_field else None,
            email=self.dshield_email if name == "dshield" else None,
            max_wait_seconds=self.enrichment_max_wait_seconds,
            backoff_base_seconds=self.enrichment_backoff_base_seconds,
            backoff_max_seconds=self.enrichment_backoff_max_seconds,
        )
