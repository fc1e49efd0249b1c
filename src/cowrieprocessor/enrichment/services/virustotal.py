"""VirusTotal API v3: files by hash, and IP address reputation. Header ``x-apikey``.

* ``file``: ``GET {base}/api/v3/files/{hash}`` (SHA-256 of downloads and uploads; MD5
  and SHA-1 are accepted too, the answer's id is always the SHA-256).
* ``ip``: ``GET {base}/api/v3/ip_addresses/{ip}``.

Errors come as ``{"error": {"code", "message"}}`` and are told apart by ``code`` only
(the message wording varies). 404 ``NotFoundError`` is a valid negative: VT has never
seen the file. 429 ``QuotaExceededError`` means a quota is spent: the service pauses
until the ``Retry-After`` it was given or, without one, until the daily quota resets at
00:00 UTC. 429 ``TooManyRequestsError`` and an edge 429 with an HTML body are rate
limiting (retried after ``Retry-After`` or a backoff).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services.base import (
    RequestSpec,
    Service,
    ServiceResponse,
    decode_json_object,
    global_ip,
    parse_int,
    retry_after_seconds,
    safe_text,
)

#: Popular files carry hundreds of names; the first ones are kept.
MAX_NAMES = 50
_HASH = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})$")


class VirusTotalService(Service):
    """File verdicts (``file``) and IP reputation (``ip``)."""

    name = "virustotal"
    endpoints = ("file", "ip")

    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        endpoint = self.resolve_endpoint(endpoint)
        text = key or ""
        if endpoint == "file":
            if not _HASH.match(text.strip().lower()):
                return self.skipped(
                    text,
                    SkipReason.NOT_APPLICABLE,
                    f"{safe_text(text)} is not an MD5, SHA-1 or SHA-256 hex digest",
                )
        elif global_ip(text) is None:
            return self.skipped(
                text, SkipReason.NOT_ROUTABLE, f"{safe_text(text)} is not a global IP address"
            )
        if self.api_key is None:
            return self.skipped(
                self.normalize_key(text, endpoint),
                SkipReason.NO_API_KEY,
                "vt_api_key is not set",
            )
        return None

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        if self.resolve_endpoint(endpoint) == "file":
            return key.strip().lower()
        return global_ip(key) or key

    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        endpoint = self.resolve_endpoint(endpoint)
        collection = "files" if endpoint == "file" else "ip_addresses"
        headers = {"accept": "application/json"}
        return RequestSpec(
            method="GET",
            path=f"/api/v3/{collection}/{self.normalize_key(key, endpoint)}",
            headers={**headers, "x-apikey": self.api_key} if self.api_key else headers,
        )

    def parse(self, response: ServiceResponse) -> Outcome:
        body = decode_json_object(response.content)
        code, text = _error_code(body)
        status = response.status_code
        label = f"HTTP {status} {code}" if code else f"HTTP {status}"

        if status == 404 and code == "NotFoundError":
            return self.not_found(response)
        if status == 429 and code == "QuotaExceededError":
            return self.error(response, ErrorKind.QUOTA, f"{label}: the API quota is spent")
        if status in (401, 403):
            return self.error(response, ErrorKind.AUTH, f"{label}: the API key was refused")
        if status == 400:
            return self.error(response, ErrorKind.INVALID_INPUT, f"{label}: {text}")
        by_status = self.status_outcome(response)
        if by_status is not None:
            return by_status

        if body is None:
            return self.unparseable(response)
        data = body.get("data")
        attributes = data.get("attributes") if isinstance(data, dict) else None
        if not isinstance(attributes, dict):
            return self.unparseable(response, "no data.attributes object in the body")
        try:
            if response.endpoint == "file":
                return self.success(response, _file_fields(attributes))
            return self.success(response, _ip_fields(attributes))
        except ValueError as exc:
            return self.unparseable(response, str(exc))

    def quota_resets_at(self, response: ServiceResponse, now: datetime) -> datetime | None:
        """The time Retry-After names, else the next 00:00 UTC (the daily quota reset)."""
        wait = retry_after_seconds(response.header("Retry-After"), now)
        if wait is not None:
            return now + timedelta(seconds=wait)
        return datetime.combine(now.date() + timedelta(days=1), time(0, tzinfo=now.tzinfo))


def is_malicious(outcome: Outcome) -> bool:
    """``vt_flagged``: a successful VirusTotal answer with at least one malicious verdict."""
    if outcome.service != VirusTotalService.name or outcome.status != Status.SUCCESS:
        return False
    stats = (outcome.data or {}).get("last_analysis_stats") or {}
    return bool(stats.get("malicious"))


def _error_code(body: dict[str, Any] | None) -> tuple[str | None, str]:
    error = body.get("error") if body else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    return (safe_text(code, 60) if code is not None else None), safe_text(error.get("message"))


def _stats(attributes: dict[str, Any]) -> dict[str, int | None] | None:
    stats = attributes.get("last_analysis_stats")
    if stats is None:
        return None
    if not isinstance(stats, dict):
        raise ValueError("last_analysis_stats is not an object")
    return {str(name): parse_int(count) for name, count in stats.items()}


def _file_fields(attributes: dict[str, Any]) -> dict[str, Any]:
    classification = attributes.get("popular_threat_classification")
    label = (
        classification.get("suggested_threat_label") if isinstance(classification, dict) else None
    )
    return {
        "last_analysis_stats": _stats(attributes),
        "type_description": attributes.get("type_description"),
        "names": (attributes.get("names") or [])[:MAX_NAMES],
        "meaningful_name": attributes.get("meaningful_name"),
        "first_submission_date": parse_int(attributes.get("first_submission_date")),
        "reputation": parse_int(attributes.get("reputation")),
        "suggested_threat_label": label,
    }


def _ip_fields(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "last_analysis_stats": _stats(attributes),
        "reputation": parse_int(attributes.get("reputation")),
        "asn": parse_int(attributes.get("asn")),
        "as_owner": attributes.get("as_owner"),
        "country": attributes.get("country"),
        "network": attributes.get("network"),
        "total_votes": attributes.get("total_votes"),
    }
