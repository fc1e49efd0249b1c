"""`check-credentials`: is each service's key configured, the service reachable, the key
accepted, and how much quota is left, with one cheap request per service.

A service without its key (or DShield without the contact e-mail) is not contacted at
all: the service module decides that locally, before any I/O. The probe lookups use
fixed, harmless keys (a public resolver address, the hash of the empty file, the first
HIBP range), send at most one request each (no retries, no waiting for a rate limit or
a pause), and never carry attacker data. Keys are never part of the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import httpx

from cowrieprocessor.enrichment.http import LimiterRegistry, ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services import build_service
from cowrieprocessor.enrichment.settings import SERVICE_NAMES, EnrichmentSettings

logger = logging.getLogger(__name__)

#: (endpoint, key) of the probe of each service.
PROBES = {
    "dshield": ("ip", "8.8.8.8"),
    "virustotal": ("file", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    "urlhaus": ("host", "8.8.8.8"),
    "spur": ("context", "8.8.8.8"),
    "hibp": ("range", "00000"),
}
#: Services that need no key at all (DShield needs the e-mail instead).
KEYLESS = frozenset({"hibp"})


@dataclass(frozen=True)
class CredentialCheck:
    """The result for one service. None means "not known" (not asked, or no answer)."""

    service: str
    configured: bool
    enabled: bool
    reachable: bool | None
    accepted: bool | None
    quota_left: int | None
    http_status: int | None
    detail: str

    @property
    def ok(self) -> bool:
        """Configured and enabled services must answer and accept the key."""
        if not self.configured or not self.enabled:
            return True
        return bool(self.reachable) and self.accepted is not False

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "configured": self.configured,
            "enabled": self.enabled,
            "reachable": self.reachable,
            "accepted": self.accepted,
            "quota_left": self.quota_left,
            "http_status": self.http_status,
            "ok": self.ok,
            "detail": self.detail,
        }


def check_credentials(
    settings: EnrichmentSettings,
    services: tuple[str, ...] = SERVICE_NAMES,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout_seconds: float = 10.0,
) -> list[CredentialCheck]:
    """Probe each of ``services`` once (see the module docstring); never raises for
    anything a service or the network does."""
    registry = LimiterRegistry()
    try:
        return [
            _check_one(name, settings, registry, transport, timeout_seconds) for name in services
        ]
    finally:
        registry.close()


def _check_one(
    name: str,
    settings: EnrichmentSettings,
    registry: LimiterRegistry,
    transport: httpx.BaseTransport | None,
    timeout_seconds: float,
) -> CredentialCheck:
    resolved = settings.service_settings(name)
    # One request: no retries, no waiting for a limiter or a Retry-After.
    probe_settings = replace(
        resolved,
        max_retries=0,
        max_wait_seconds=0.0,
        timeout_seconds=min(resolved.timeout_seconds, timeout_seconds),
        enabled=True,
    )
    endpoint, key = PROBES[name]
    configured = name in KEYLESS or (
        resolved.email is not None if name == "dshield" else resolved.api_key is not None
    )
    if not configured:
        outcome = build_service(probe_settings).check(key, endpoint)
        detail = (outcome.message if outcome is not None else None) or "no key configured"
        return CredentialCheck(name, False, resolved.enabled, None, None, None, None, detail)

    with ServiceClient(
        build_service(probe_settings), probe_settings, limiters=registry, transport=transport
    ) as client:
        outcome = client.lookup(key, endpoint)
        balance = client.balance_remaining
    check = _judge(name, resolved.enabled, outcome, balance)
    logger.info("%s: reachable=%s accepted=%s", name, check.reachable, check.accepted)
    return check


def _judge(name: str, enabled: bool, outcome: Outcome, balance: int | None) -> CredentialCheck:
    reachable: bool | None
    accepted: bool | None
    quota_left = balance
    if outcome.status in (Status.SUCCESS, Status.NOT_FOUND):
        reachable, accepted, detail = True, True, "the key works"
    elif outcome.status == Status.SKIPPED:
        # Only a skip before any request gets here (no_api_key is handled by the caller).
        reachable, accepted = None, None
        detail = outcome.message or str(outcome.reason)
    else:
        kind = outcome.reason
        detail = outcome.message or str(kind)
        if kind in ("timeout", "network"):
            reachable, accepted = False, None
        elif kind == "auth":
            reachable, accepted = True, False
        elif kind == "quota":
            reachable, accepted, quota_left = True, True, 0
        elif kind == "rate_limited":
            reachable, accepted = True, True
        else:
            reachable, accepted = True, None
    if not enabled:
        detail = f"{name}_enabled is off (probed anyway); {detail}"
    if outcome.reason == SkipReason.NO_API_KEY:
        return CredentialCheck(name, False, enabled, None, None, None, None, detail)
    return CredentialCheck(
        name, True, enabled, reachable, accepted, quota_left, outcome.http_status, detail
    )
