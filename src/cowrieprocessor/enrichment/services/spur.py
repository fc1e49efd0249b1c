"""Spur Context API v2: ``GET {base}/v2/context/{ip}`` with the ``Token`` header.

Spur has no 404 for ordinary addresses: an address with nothing to say comes back as a
minimal object (``ip``, ``as``, ``location``, ``organization``), which is *not found*
here, with those fields kept. Any of ``client``, ``tunnels``, ``risks``, ``services`` or
``infrastructure`` makes it a success. Every key but ``ip`` may be omitted, and the
enumerations are open sets, so values are kept as they come.

Its 429 means the account's balance of queries is spent (not "slow down"): an
``error``/``quota`` outcome, and the client stops the service for the run. The
``x-balance-remaining`` header is read by the client; ``x-result-dt`` (the date of the
data feed) is kept in ``data["result_dt"]``.
"""

from __future__ import annotations

from typing import Any

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason
from cowrieprocessor.enrichment.services.base import (
    RequestSpec,
    Service,
    ServiceResponse,
    decode_json_object,
    global_ip,
    safe_text,
)

_SIGNALS = ("client", "tunnels", "risks", "services", "infrastructure")
_OBJECTS = ("as", "location", "client")
_LISTS = ("risks", "services", "tunnels")


class SpurService(Service):
    """Anonymisation context of source IPs: VPNs, proxies, tunnels, infrastructure, risks."""

    name = "spur"
    endpoints = ("context",)

    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        self.resolve_endpoint(endpoint)
        address = global_ip(key) if key else None
        if address is None:
            return self.skipped(
                key or "", SkipReason.NOT_ROUTABLE, f"{safe_text(key)} is not a global IP address"
            )
        if self.api_key is None:
            return self.skipped(address, SkipReason.NO_API_KEY, "spur_api_key is not set")
        return None

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        return global_ip(key) or key

    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        self.resolve_endpoint(endpoint)
        return RequestSpec(
            method="GET",
            path=f"/v2/context/{self.normalize_key(key)}",
            headers={"Token": self.api_key} if self.api_key else {},
        )

    def parse(self, response: ServiceResponse) -> Outcome:
        body = decode_json_object(response.content)
        said = safe_text(body.get("error")) if body and body.get("error") else ""
        status = response.status_code
        if status == 429:
            remaining = response.header("x-balance-remaining")
            detail = f" (x-balance-remaining: {safe_text(remaining)})" if remaining else ""
            return self.error(
                response, ErrorKind.QUOTA, f"HTTP 429, the balance of queries is spent{detail}"
            )
        if status == 400:
            return self.error(response, ErrorKind.INVALID_INPUT, f"HTTP 400 {said}".rstrip())
        by_status = self.status_outcome(response)
        if by_status is not None:
            return by_status
        if body is None:
            return self.unparseable(response)

        data = _kept_fields(body)
        data["result_dt"] = response.header("x-result-dt")
        wrong = [
            name
            for name in _OBJECTS
            if data[name] is not None and not isinstance(data[name], dict)
        ]
        wrong += [name for name in _LISTS if not isinstance(data[name], list)]
        if wrong:
            return self.unparseable(response, f"unexpected shape of {', '.join(wrong)}")
        if any(body.get(name) for name in _SIGNALS):
            return self.success(response, data)
        return self.not_found(response, data)


def _kept_fields(body: dict[str, Any]) -> dict[str, Any]:
    """All documented fields; an omitted object is None and an omitted list is []."""
    return {
        "ip": body.get("ip"),
        "as": body.get("as"),
        "organization": body.get("organization"),
        "infrastructure": body.get("infrastructure"),
        "location": body.get("location"),
        "client": body.get("client"),
        "risks": body.get("risks") or [],
        "services": body.get("services") or [],
        "tunnels": body.get("tunnels") or [],
    }
