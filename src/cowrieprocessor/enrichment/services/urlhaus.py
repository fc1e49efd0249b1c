"""URLhaus (abuse.ch): ``POST {base}/v1/{host,url,payload}/``, form-encoded, ``Auth-Key``.

* ``host``: ``host=<IP or domain>`` (source IPs, download hosts);
* ``url``: ``url=<full URL>`` (download URLs; a download without one is not sent);
* ``payload``: ``sha256_hash=`` or ``md5_hash=`` (downloaded files).

The answer is branched on ``query_status``, not on the HTTP status: ``ok`` is found,
``no_results`` is *not found*, ``invalid_*`` means the input was rejected (an error,
never cached as clean), ``unknown_auth_key`` (or HTTP 401/403) is a refused key. The key
is mandatory; without one nothing is sent. Numbers arrive as strings and ``larted`` as
``"true"``/``"false"``; both are converted. At most :data:`MAX_URLS` URLs of a host or
payload are kept (``url_count`` tells the full number).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason
from cowrieprocessor.enrichment.services.base import (
    RequestSpec,
    Service,
    ServiceResponse,
    decode_json_object,
    global_ip,
    parse_int,
    safe_text,
)

MAX_URLS = 100
_HEX = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{64})$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_SUFFIXES = ("localhost", "local", "internal", "lan", "home.arpa", "invalid", "test")
_URL_SCHEMES = ("http", "https", "ftp")


class UrlhausService(Service):
    """Malware URLs, hosts and payloads known to URLhaus."""

    name = "urlhaus"
    endpoints = ("host", "url", "payload")

    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        endpoint = self.resolve_endpoint(endpoint)
        text = key or ""
        refusal = {"host": _check_host, "url": _check_url, "payload": _check_payload}[endpoint](
            text
        )
        if refusal is not None:
            reason, why = refusal
            return self.skipped(text, reason, why)
        if self.api_key is None:
            return self.skipped(
                self.normalize_key(text, endpoint),
                SkipReason.NO_API_KEY,
                "urlhaus_api_key is not set (URLhaus answers 401 without an Auth-Key)",
            )
        return None

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        endpoint = self.resolve_endpoint(endpoint)
        if endpoint == "payload":
            return key.strip().lower()
        if endpoint == "host":
            return global_ip(key) or key.strip().rstrip(".").lower()
        return key

    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        endpoint = self.resolve_endpoint(endpoint)
        value = self.normalize_key(key, endpoint)
        if endpoint == "payload":
            field = "sha256_hash" if len(value) == 64 else "md5_hash"
        else:
            field = endpoint
        return RequestSpec(
            method="POST",
            path=f"/v1/{endpoint}/",
            headers={"Auth-Key": self.api_key} if self.api_key else {},
            form={field: value},
        )

    def parse(self, response: ServiceResponse) -> Outcome:
        body = decode_json_object(response.content)
        query_status = body.get("query_status") if body else None

        # abuse.ch has answered a bad key both as 401 and as 403 with this status.
        if query_status == "unknown_auth_key":
            return self.error(response, ErrorKind.AUTH, "unknown_auth_key: the key was refused")
        by_status = self.status_outcome(response)
        if by_status is not None:
            return by_status
        if body is None:
            return self.unparseable(response)

        if query_status == "ok":
            try:
                return self.success(response, _KEEP[response.endpoint](body))
            except ValueError as exc:
                return self.unparseable(response, str(exc))
        if query_status == "no_results":
            return self.not_found(response)
        if isinstance(query_status, str) and (
            query_status.startswith("invalid_") or query_status.endswith("_expected")
        ):
            return self.error(response, ErrorKind.INVALID_INPUT, f"URLhaus says {query_status}")
        return self.unparseable(response, f"unknown query_status {safe_text(query_status)}")


def _check_host(text: str) -> tuple[SkipReason, str] | None:
    if not text.strip():
        return SkipReason.NOT_APPLICABLE, "no host"
    if _is_ip_text(text):
        if global_ip(text) is None:
            return SkipReason.NOT_ROUTABLE, f"{safe_text(text)} is not a global IP address"
        return None
    if not _public_hostname(text):
        return SkipReason.NOT_ROUTABLE, f"{safe_text(text)} is not a public host name"
    return None


def _check_url(text: str) -> tuple[SkipReason, str] | None:
    if not text.strip():
        return SkipReason.NOT_APPLICABLE, "the download has no URL"
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        return SkipReason.NOT_APPLICABLE, f"{safe_text(text)} is not a URL"
    if parts.scheme.lower() not in _URL_SCHEMES or not host or not text.isprintable():
        # Cowrie logs such as "/dev/null" for a redirect capture are not URLs.
        return SkipReason.NOT_APPLICABLE, f"{safe_text(text)} is not an http(s) or ftp URL"
    return _check_host(host)


def _check_payload(text: str) -> tuple[SkipReason, str] | None:
    if not _HEX.match(text.strip().lower()):
        return SkipReason.NOT_APPLICABLE, f"{safe_text(text)} is not a SHA-256 or MD5 hex digest"
    return None


def _is_ip_text(text: str) -> bool:
    stripped = text.strip().strip("[]")
    return ":" in stripped or bool(re.fullmatch(r"[0-9.]+", stripped))


def _public_hostname(text: str) -> bool:
    name = text.strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        return False
    if labels[-1].isdigit():
        return False
    return not any(name == s or name.endswith("." + s) for s in _LOCAL_SUFFIXES)


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise ValueError(f"larted is {safe_text(value)}, not 'true' or 'false'")


def _url_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": parse_int(entry.get("id")),
        "url": entry.get("url"),
        "url_status": entry.get("url_status"),
        "threat": entry.get("threat"),
        "date_added": entry.get("date_added"),
        "larted": _flag(entry.get("larted")),
        "takedown_time_seconds": parse_int(entry.get("takedown_time_seconds")),
        "tags": entry.get("tags") or [],
    }


def _entries(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    entries = body.get(name) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{name} is not a list of objects")
    return entries[:MAX_URLS]


def _host_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": body.get("host"),
        "urlhaus_reference": body.get("urlhaus_reference"),
        "firstseen": body.get("firstseen"),
        "url_count": parse_int(body.get("url_count")),
        "blacklists": body.get("blacklists"),
        "urls": [_url_entry(entry) for entry in _entries(body, "urls")],
    }


def _url_fields(body: dict[str, Any]) -> dict[str, Any]:
    payloads = [
        {
            "firstseen": p.get("firstseen"),
            "filename": p.get("filename"),
            "file_type": p.get("file_type"),
            "response_size": parse_int(p.get("response_size")),
            "response_md5": p.get("response_md5"),
            "response_sha256": p.get("response_sha256"),
            "signature": p.get("signature"),
            "virustotal": p.get("virustotal"),
        }
        for p in _entries(body, "payloads")
    ]
    return {
        **_url_entry(body),
        "urlhaus_reference": body.get("urlhaus_reference"),
        "host": body.get("host"),
        "last_online": body.get("last_online"),
        "blacklists": body.get("blacklists"),
        "payloads": payloads,
    }


def _payload_fields(body: dict[str, Any]) -> dict[str, Any]:
    urls = [
        {
            "url_id": parse_int(u.get("url_id")),
            "url": u.get("url"),
            "url_status": u.get("url_status"),
            "firstseen": u.get("firstseen"),
            "lastseen": u.get("lastseen"),
        }
        for u in _entries(body, "urls")
    ]
    return {
        "md5_hash": body.get("md5_hash"),
        "sha256_hash": body.get("sha256_hash"),
        "file_type": body.get("file_type"),
        "file_size": parse_int(body.get("file_size")),
        "signature": body.get("signature"),
        "firstseen": body.get("firstseen"),
        "lastseen": body.get("lastseen"),
        "url_count": parse_int(body.get("url_count")),
        "virustotal": body.get("virustotal"),
        "urls": urls,
    }


_KEEP = {"host": _host_fields, "url": _url_fields, "payload": _payload_fields}
