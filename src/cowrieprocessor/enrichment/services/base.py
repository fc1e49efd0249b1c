"""What every service module shares: the request and response shapes, and the base class.

A service is pure: :meth:`Service.check` decides locally whether a key may be sent at
all, :meth:`Service.build_request` turns a key into a :class:`RequestSpec`, and
:meth:`Service.parse` turns a :class:`ServiceResponse` into an :class:`Outcome`. No I/O
happens here; :mod:`cowrieprocessor.enrichment.http` sends the requests and wraps every
service the same way (rate limits, retries, pauses).
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

import orjson
from pydantic import SecretStr

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason, Status


def _package_version() -> str:
    try:
        return version("cowrieprocessor")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


USER_AGENT = f"cowrieprocessor/{_package_version()}"
_TEXT_LIMIT = 120


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request, relative to the service's base URL.

    ``path`` is already safe to append (it may end in a query such as ``?json``).
    Header values that are keys are SecretStr, so the repr of a spec shows no key.
    """

    method: str
    path: str
    headers: Mapping[str, str | SecretStr] = field(default_factory=dict)
    form: Mapping[str, str] | None = None


@dataclass(frozen=True)
class ServiceResponse:
    """What came back for one request: enough for a service to decide the outcome."""

    service: str
    key: str
    endpoint: str
    status_code: int
    headers: Mapping[str, str]  # names in lower case
    content: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def safe_text(value: object, limit: int = _TEXT_LIMIT) -> str:
    """Short, printable ASCII rendering of attacker- or server-supplied text, for messages."""
    text = ascii(value)[1:-1] if isinstance(value, str) else ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def global_ip(text: str) -> str | None:
    """The canonical text of ``text`` if it is a global IP address, else None.

    Private, loopback, link-local, reserved, multicast, unspecified, shared (CGNAT) and
    documentation addresses are not global, nor is any text that is not an address.
    IPv4-mapped IPv6 addresses are judged by their IPv4 part.
    """
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return None
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    # is_global alone lets IPv4 multicast through, so every flag is checked.
    blocked = (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )
    return None if blocked else str(address)


#: The range every integer taken from an answer must fit: a signed 64-bit integer, as a
#: BIGINT column holds it and as the JSON encoder (orjson) writes it.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT64_DIGITS = 19


def parse_int(value: Any) -> int | None:
    """An integer from a number or a numeric string (APIs send both); None stays None.

    Raises:
        ValueError: anything else (a bool, a non-numeric string, a fraction), or a number
            beyond 64 bits (:data:`INT64_MIN` to :data:`INT64_MAX`), which could be
            neither stored nor written as JSON.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        # orjson reads an integer beyond 64 bits as a float.
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        digits = value.strip()
        # Checked before int(), which refuses thousands of digits with its own error.
        too_long = len(digits.lstrip("-").lstrip("0")) > _INT64_DIGITS
        number = INT64_MAX + 1 if too_long else int(digits)
    else:
        raise ValueError(f"expected a number, got {safe_text(value)}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError(f"{safe_text(value)} is beyond 64 bits")
    return number


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date).

    None when the header is absent or unreadable; never negative.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def decode_json_object(content: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is empty, not JSON, or not an object."""
    if not content.strip():
        return None
    try:
        decoded = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def describe_body(content: bytes) -> str:
    """A few words on a body that could not be used (for an outcome message)."""
    stripped = content.strip()
    if not stripped:
        return "empty body"
    if stripped[:1] == b"<":
        return "HTML body"
    return f"body is not a JSON object ({len(content)} bytes)"


class Service(ABC):
    """One provider. Subclasses set ``name``, ``endpoints`` and implement three methods.

    Subclasses are immutable after construction and safe to share between threads.
    """

    name: ClassVar[str]
    #: Lookup kinds the service offers; the first is the default.
    endpoints: ClassVar[tuple[str, ...]]
    #: Pause after a 429 that carries no Retry-After (None: exponential backoff).
    default_retry_after_seconds: ClassVar[float | None] = None

    def __init__(self, api_key: SecretStr | None = None) -> None:
        self.api_key = api_key

    def __repr__(self) -> str:
        has_key = "set" if self.api_key is not None else "none"
        return f"{type(self).__name__}(api_key={has_key})"

    @property
    def default_endpoint(self) -> str:
        return self.endpoints[0]

    def resolve_endpoint(self, endpoint: str | None) -> str:
        """``endpoint`` or the default. Raises ValueError naming the known endpoints."""
        if endpoint is None:
            return self.default_endpoint
        if endpoint not in self.endpoints:
            known = ", ".join(self.endpoints)
            raise ValueError(f"{self.name} has no {endpoint!r} lookup; expected one of {known}")
        return endpoint

    @abstractmethod
    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        """A final local outcome (skipped) when ``key`` must not be sent, else None."""

    @abstractmethod
    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        """The request for ``key`` (which :meth:`check` accepted)."""

    @abstractmethod
    def parse(self, response: ServiceResponse) -> Outcome:
        """The outcome that ``response`` means. Never raises on a bad body."""

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        """The key as outcomes and caches name it (canonical address, lower-case hash)."""
        return key

    def quota_resets_at(self, response: ServiceResponse, now: datetime) -> datetime | None:
        """When a spent quota (an ``error``/``quota`` outcome) comes back; None: not this run."""
        return None

    # Helpers for subclasses ---------------------------------------------------------

    def skipped(self, key: str, reason: SkipReason, message: str) -> Outcome:
        return Outcome(
            self.name, key, Status.SKIPPED, reason=str(reason), message=f"{self.name}: {message}"
        )

    def error(self, response: ServiceResponse, kind: ErrorKind, message: str) -> Outcome:
        return Outcome(
            self.name,
            response.key,
            Status.ERROR,
            reason=str(kind),
            http_status=response.status_code,
            message=f"{self.name}: {message}",
        )

    def success(self, response: ServiceResponse, data: dict[str, Any]) -> Outcome:
        return Outcome(
            self.name, response.key, Status.SUCCESS, data=data, http_status=response.status_code
        )

    def not_found(self, response: ServiceResponse, data: dict[str, Any] | None = None) -> Outcome:
        return Outcome(
            self.name, response.key, Status.NOT_FOUND, data=data, http_status=response.status_code
        )

    def unparseable(self, response: ServiceResponse, what: str = "") -> Outcome:
        detail = what or describe_body(response.content)
        return self.error(
            response, ErrorKind.UNPARSEABLE, f"HTTP {response.status_code}, {detail}"
        )

    def status_outcome(self, response: ServiceResponse) -> Outcome | None:
        """The outcome every service gives a status that its body cannot change.

        401/403 are auth errors, 429 is rate limiting, 5xx is an HTTP status error (the
        client retries those), and any other non-2xx is an HTTP status error too. None
        for 2xx, which the service reads itself.
        """
        code = response.status_code
        if 200 <= code < 300:
            return None
        if code in (401, 403):
            return self.error(response, ErrorKind.AUTH, f"HTTP {code}, the key was refused")
        if code == 429:
            return self.error(response, ErrorKind.RATE_LIMITED, "HTTP 429, too many requests")
        return self.error(response, ErrorKind.HTTP_STATUS, f"HTTP {code}")
