"""DShield / SANS ISC IP API: ``GET {base}/api/ip/{ip}?json``.

No key is needed, but ISC blocks default user agents and asks for contact details, so
the operator's e-mail (``dshield_email``) goes into the User-Agent; without it nothing
is sent. ISC answers HTTP 200 for unseen IPs too: null counters and no threat feeds
mean *not found* (the AS block is still kept, it says who owns the address). A
malformed address comes back as ``{"error": "bad IP address"}`` with HTTP 200.
"""

from __future__ import annotations

from typing import Any

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services.base import (
    USER_AGENT,
    RequestSpec,
    Service,
    ServiceResponse,
    decode_json_object,
    global_ip,
    parse_int,
    safe_text,
)


class DShieldService(Service):
    """Source-IP reputation from DShield sensors and the feeds ISC aggregates."""

    name = "dshield"
    endpoints = ("ip",)
    # ISC: "at times of high load you may get 429 responses ... stop for 5 minutes".
    default_retry_after_seconds = 300.0

    def __init__(self, email: str | None = None) -> None:
        super().__init__(api_key=None)
        self.email = email

    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        self.resolve_endpoint(endpoint)
        address = global_ip(key) if key else None
        if address is None:
            return self.skipped(
                key or "", SkipReason.NOT_ROUTABLE, f"{safe_text(key)} is not a global IP address"
            )
        if not self.email:
            return self.skipped(
                address,
                SkipReason.NO_API_KEY,
                "dshield_email is not set; ISC asks for a contact e-mail in the User-Agent",
            )
        return None

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        return global_ip(key) or key

    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        self.resolve_endpoint(endpoint)
        return RequestSpec(
            method="GET",
            path=f"/api/ip/{self.normalize_key(key)}?json",
            headers={"User-Agent": f"{USER_AGENT} (contact: {self.email})"},
        )

    def parse(self, response: ServiceResponse) -> Outcome:
        by_status = self.status_outcome(response)
        if by_status is not None:
            return by_status

        body = decode_json_object(response.content)
        if body is None:
            return self.unparseable(response)
        if "ip" not in body and "error" in body:
            return self.error(
                response, ErrorKind.INVALID_INPUT, f"ISC says {safe_text(body['error'])}"
            )
        record = body.get("ip")
        if not isinstance(record, dict):
            return self.unparseable(response, "no 'ip' object in the body")

        try:
            data = _kept_fields(record)
        except ValueError as exc:
            return self.unparseable(response, str(exc))
        if _reported(data):
            return self.success(response, data)
        return self.not_found(response, data)


def is_flagged(outcome: Outcome) -> bool:
    """``session_summaries.dshield_flagged``: DShield has reports, attacks or feeds for the IP.

    The same rule that made the outcome a success, so flag and JSON always agree.
    """
    return outcome.service == DShieldService.name and outcome.status == Status.SUCCESS


def _kept_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The fields we keep; counters become ints (ISC sends numbers or strings)."""
    feeds = record.get("threatfeeds")
    if feeds is None or feeds == []:
        # PHP's json_encode writes an empty array for an empty map.
        feeds = {}
    if not isinstance(feeds, dict):
        raise ValueError(f"threatfeeds is a {type(feeds).__name__}, not an object")
    try:
        counters = {name: parse_int(record.get(name)) for name in ("as", "count", "attacks")}
    except ValueError as exc:
        raise ValueError(f"a counter is not a number: {exc}") from None
    return {
        "asname": record.get("asname"),
        "ascountry": record.get("ascountry"),
        "as": counters["as"],
        "network": record.get("network"),
        "count": counters["count"],
        "attacks": counters["attacks"],
        "mindate": record.get("mindate"),
        "maxdate": record.get("maxdate"),
        "threatfeeds": feeds,
    }


def _reported(data: dict[str, Any]) -> bool:
    """True when DShield has seen the address: any report, attack or threat feed."""
    return bool(data["count"]) or bool(data["attacks"]) or bool(data["threatfeeds"])
