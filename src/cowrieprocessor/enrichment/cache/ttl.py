"""How long a cached outcome stays fresh, and the clock every cache reads time from.

The TTL depends on the service and on the outcome's status:

===========  ==========  ==========================
service      success     not_found (default: 1/3)
===========  ==========  ==========================
virustotal   30 days     10 days
dshield      7 days      2 days 8 hours
urlhaus      3 days      1 day
spur         14 days     4 days 16 hours
hibp         60 days     20 days
(other)      7 days      2 days 8 hours
===========  ==========  ==========================

Not found gets a third of the service's TTL by default because "not seen yet" is the
answer most likely to change: a hash gets uploaded to VirusTotal, an IP starts attacking
and shows up in DShield. Both TTLs can be overridden per service. Only definitive
outcomes (``success``, ``not_found``) have a TTL; errors and skips are never cached.

Expiry is exact and inclusive: an entry is expired when ``now >= expires_at``. At the
instant ``expires_at`` it is already a miss.

Every cache takes a ``clock`` (a callable returning an aware datetime) instead of calling
``datetime.now`` itself, so tests fix time with :class:`ManualClock`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from cowrieprocessor.enrichment.outcome import Status

#: A source of the current time. It must return timezone-aware datetimes.
Clock = Callable[[], datetime]

DEFAULT_TTLS: Mapping[str, timedelta] = {
    "virustotal": timedelta(days=30),
    "dshield": timedelta(days=7),
    "urlhaus": timedelta(days=3),
    "spur": timedelta(days=14),
    "hibp": timedelta(days=60),
}

#: TTL of a service not named in the policy (for example a future provider).
DEFAULT_UNKNOWN_SERVICE_TTL = timedelta(days=7)

#: Share of the success TTL given to ``not_found`` when no explicit value is set.
DEFAULT_NOT_FOUND_FRACTION = 1 / 3


def system_clock() -> datetime:
    """The real current time, in UTC."""
    return datetime.now(UTC)


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` in UTC; raise ValueError when it has no timezone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def is_expired(expires_at: datetime, now: datetime) -> bool:
    """The one expiry rule all backends share: expired once ``now >= expires_at``."""
    return now >= expires_at


class ManualClock:
    """A clock that only moves when told to; thread-safe. For tests and simulations."""

    def __init__(self, start: datetime) -> None:
        self._now = require_aware(start, "start")
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = require_aware(when, "when")

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock by ``delta`` (may be negative) and return the new time."""
        with self._lock:
            self._now += delta
            return self._now


def _positive(value: timedelta, what: str) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"the TTL for {what} must be positive, got {value}")
    return value


class TTLPolicy:
    """TTLs per service and status.

    Args:
        ttls: success TTL per service; merged over :data:`DEFAULT_TTLS`.
        not_found_ttls: explicit ``not_found`` TTL per service; services not named here
            get ``not_found_fraction`` of their success TTL.
        not_found_fraction: in (0, 1].
        default_ttl: success TTL of services named nowhere.

    Raises:
        ValueError: for a TTL that is not positive or a fraction outside (0, 1].
    """

    def __init__(
        self,
        ttls: Mapping[str, timedelta] | None = None,
        *,
        not_found_ttls: Mapping[str, timedelta] | None = None,
        not_found_fraction: float = DEFAULT_NOT_FOUND_FRACTION,
        default_ttl: timedelta = DEFAULT_UNKNOWN_SERVICE_TTL,
    ) -> None:
        if not 0 < not_found_fraction <= 1:
            raise ValueError(f"not_found_fraction must be in (0, 1], got {not_found_fraction}")
        merged = dict(DEFAULT_TTLS)
        merged.update(ttls or {})
        self._ttls = {name: _positive(ttl, name) for name, ttl in merged.items()}
        self._not_found = {
            name: _positive(ttl, f"{name} not_found")
            for name, ttl in (not_found_ttls or {}).items()
        }
        self._fraction = not_found_fraction
        self._default = _positive(default_ttl, "unknown services")

    @classmethod
    def from_days(
        cls,
        days: Mapping[str, float] | None = None,
        not_found_days: Mapping[str, float] | None = None,
    ) -> TTLPolicy:
        """Build a policy from numbers of days, as settings files give them."""
        return cls(
            {name: timedelta(days=value) for name, value in (days or {}).items()},
            not_found_ttls={
                name: timedelta(days=value) for name, value in (not_found_days or {}).items()
            },
        )

    def ttl_for(self, service: str, status: Status | str) -> timedelta:
        """The TTL of a ``status`` outcome of ``service``.

        Raises:
            ValueError: for ``error`` and ``skipped``, which are never cached.
        """
        status = Status(status)
        success_ttl = self._ttls.get(service, self._default)
        if status == Status.SUCCESS:
            return success_ttl
        if status == Status.NOT_FOUND:
            explicit = self._not_found.get(service)
            return explicit if explicit is not None else success_ttl * self._fraction
        raise ValueError(f"{status} outcomes have no TTL: only success and not_found are cached")

    def expires_at(self, service: str, status: Status | str, stored_at: datetime) -> datetime:
        """When an entry stored at ``stored_at`` stops being fresh."""
        return require_aware(stored_at, "stored_at") + self.ttl_for(service, status)
