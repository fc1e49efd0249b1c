"""The outcome of one lookup, and the versioned JSON envelope it is stored in.

Every lookup ends as exactly one :class:`Outcome`: ``success``, ``not_found``, ``skipped``
(with a :class:`SkipReason`) or ``error`` (with an :class:`ErrorKind`). The same envelope
is written to ``session_summaries.enrichment[service]``, ``files.vt_analysis``, the
password breach rows and the caches, so "why is this null" is answered by a query::

    {"v": 1, "service": "dshield", "key": "1.2.3.4", "status": "error",
     "reason": "timeout", "http_status": null, "message": "read timed out after 10 s",
     "checked_at": "2026-12-03T17:00:00Z", "data": null}

``data`` holds the fields kept from the response for ``success`` (and, where the service
says something useful, ``not_found``); it is null otherwise. ``message`` is short,
printable and never holds an API key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ENVELOPE_VERSION = 1


class Status(StrEnum):
    SUCCESS = "success"
    NOT_FOUND = "not_found"
    SKIPPED = "skipped"
    ERROR = "error"


class SkipReason(StrEnum):
    """Why a lookup was not sent. Only ``not_routable`` and ``not_applicable`` are final."""

    NO_API_KEY = "no_api_key"
    NOT_ROUTABLE = "not_routable"
    NOT_APPLICABLE = "not_applicable"  # e.g. a download without a URL for URLhaus
    SERVICE_DISABLED = "service_disabled"
    QUOTA_SPENT = "quota_spent"
    AUTH_FAILED = "auth_failed"  # an earlier 401 stopped this service for the run
    BACKING_OFF = "backing_off"  # inside a Retry-After window when the run ended


class ErrorKind(StrEnum):
    AUTH = "auth"
    QUOTA = "quota"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    UNPARSEABLE = "unparseable"
    NETWORK = "network"
    INVALID_INPUT = "invalid_input"


#: Skip reasons that will not change by trying again; such rows leave the coverage
#: denominator and are never retried.
FINAL_SKIP_REASONS = frozenset({SkipReason.NOT_ROUTABLE, SkipReason.NOT_APPLICABLE})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outcome:
    """One lookup's result. Immutable; build a new one rather than editing."""

    service: str
    key: str
    status: Status
    reason: str | None = None
    data: dict[str, Any] | None = None
    http_status: int | None = None
    message: str | None = None
    checked_at: datetime = field(default_factory=utcnow)
    latency_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status in (Status.SKIPPED, Status.ERROR) and not self.reason:
            raise ValueError(f"a {self.status} outcome needs a reason")
        if self.status in (Status.SUCCESS, Status.NOT_FOUND) and self.reason:
            raise ValueError(f"a {self.status} outcome takes no reason")

    @property
    def definitive(self) -> bool:
        """True for answers from the service (success, not found): these are cached."""
        return self.status in (Status.SUCCESS, Status.NOT_FOUND)

    @property
    def retry_later(self) -> bool:
        """True when the next refresh should try this key again."""
        if self.status == Status.ERROR:
            return True
        return self.status == Status.SKIPPED and self.reason not in FINAL_SKIP_REASONS

    def to_envelope(self) -> dict[str, Any]:
        """The stored JSON shape (see the module docstring)."""
        return {
            "v": ENVELOPE_VERSION,
            "service": self.service,
            "key": self.key,
            "status": str(self.status),
            "reason": self.reason,
            "http_status": self.http_status,
            "message": self.message,
            "checked_at": self.checked_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Outcome:
        """Rebuild an outcome from its stored shape. Raises ValueError on a bad shape."""
        version = envelope.get("v")
        if version != ENVELOPE_VERSION:
            raise ValueError(f"unknown outcome envelope version {version!r}")
        checked = str(envelope["checked_at"]).replace("Z", "+00:00")
        return cls(
            service=str(envelope["service"]),
            key=str(envelope["key"]),
            status=Status(envelope["status"]),
            reason=envelope.get("reason"),
            data=envelope.get("data"),
            http_status=envelope.get("http_status"),
            message=envelope.get("message"),
            checked_at=datetime.fromisoformat(checked).astimezone(UTC),
        )
