"""The record: a cache entry as versioned JSON, shared by the disk files and the table.

The disk backend writes the record as the file, the database backend keeps it in
``payload`` (see :mod:`.rows`), and the migration reads it back exactly::

    {"format": 1, "service": "dshield", "key": "1.2.3.4",
     "stored_at": "2026-12-03T17:00:00Z", "expires_at": "2026-12-10T17:00:00Z",
     "latency_ms": 85, "outcome": {...the outcome envelope...}}

Reading a record back (:func:`entry_from_record`) checks every field. Records in the
exact shape :func:`entry_to_record` writes take a lean path: the same checks, written as
exact type tests, and one construction of the outcome. Anything else (an older or foreign
shape, a wrong type, a damaged time) goes through the full checks, which name the
problem. Both paths give equal entries for every record the lean one accepts, and the
lean one accepts no record the full one rejects (``tests/cache/test_record_lean.py``).
The functions here hold no state but a small set of service names already checked, so
they are safe to call from any thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from cowrieprocessor.enrichment.cache.ttl import is_expired, require_aware
from cowrieprocessor.enrichment.outcome import ENVELOPE_VERSION, Outcome, Status
from cowrieprocessor.jsonnumbers import has_long_number

RECORD_FORMAT = 1

_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# Service names that passed check_service, so the lean path skips the regular
# expression. Bounded: a table full of foreign names cannot grow it without limit.
_CHECKED_SERVICES: set[str] = set()
_MAX_CHECKED_SERVICES = 256
_DEFINITIVE = {str(s): s for s in (Status.SUCCESS, Status.NOT_FOUND)}


def check_service(service: str) -> str:
    """Return ``service``; raise ValueError unless it is a valid service name."""
    if not isinstance(service, str) or _SERVICE_NAME.fullmatch(service) is None:
        raise ValueError(f"service name {service!r} must match {_SERVICE_NAME.pattern}")
    return service


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; microseconds are kept when present."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, name: str) -> datetime:
    """Invert :func:`format_time`. Raises ValueError for anything but an aware timestamp."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a timestamp string, got {type(value).__name__}")
    return require_aware(datetime.fromisoformat(value), name)


@dataclass(frozen=True)
class CacheEntry:
    """One cached outcome. ``service`` and ``key`` always equal the outcome's."""

    service: str
    key: str
    outcome: Outcome
    stored_at: datetime
    expires_at: datetime

    def is_expired(self, now: datetime) -> bool:
        return is_expired(self.expires_at, now)


def entry_to_record(entry: CacheEntry) -> dict[str, Any]:
    """The JSON record of ``entry`` (see the module docstring)."""
    return {
        "format": RECORD_FORMAT,
        "service": entry.service,
        "key": entry.key,
        "stored_at": format_time(entry.stored_at),
        "expires_at": format_time(entry.expires_at),
        "latency_ms": entry.outcome.latency_ms,
        "outcome": entry.outcome.to_envelope(),
    }


def entry_from_record(record: Any) -> CacheEntry:
    """Rebuild an entry from its record, checking every field.

    Raises:
        ValueError: the record has an unknown format, a missing or mistyped field, a
            service or key that differs from its outcome's, or a non-definitive outcome.
    """
    if type(record) is dict:
        entry = lean_entry(record)
        if entry is not None:
            return entry
    return _checked_entry(record)


def _aware(text: str) -> datetime | None:
    """``text`` as an aware time in UTC, or None when it is not one (no exception)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else None


def lean_entry(record: dict[str, Any]) -> CacheEntry | None:
    """The entry of a record in the shape :func:`entry_to_record` writes, else None.

    Each test mirrors one of :func:`_checked_entry`'s, with exact types (JSON gives no
    subclasses) and without building anything twice; None sends the record to the full
    checks, which then accept it the same way or name what is wrong.
    """
    envelope = record.get("outcome")
    service = record.get("service")
    key = record.get("key")
    if (
        type(envelope) is not dict
        or type(service) is not str
        or type(key) is not str
        or record.get("format") != RECORD_FORMAT
        or envelope.get("v") != ENVELOPE_VERSION
        or envelope.get("service") != service
        or envelope.get("key") != key
        or envelope.get("reason") is not None
    ):
        return None
    if service not in _CHECKED_SERVICES:
        if _SERVICE_NAME.fullmatch(service) is None:
            return None
        if len(_CHECKED_SERVICES) < _MAX_CHECKED_SERVICES:
            _CHECKED_SERVICES.add(service)
    status_text = envelope.get("status")
    status = _DEFINITIVE.get(status_text) if type(status_text) is str else None
    data = envelope.get("data")
    message = envelope.get("message")
    http_status = envelope.get("http_status")
    latency = record.get("latency_ms")
    checked_text = envelope.get("checked_at")
    stored_text = record.get("stored_at")
    expires_text = record.get("expires_at")
    if (
        status is None
        or (data is not None and type(data) is not dict)
        or (message is not None and type(message) is not str)
        or (http_status is not None and type(http_status) is not int)
        or (latency is not None and type(latency) is not int)
        or type(checked_text) is not str
        or type(stored_text) is not str
        or type(expires_text) is not str
    ):
        return None
    # The same text the full path parses (Outcome.from_envelope replaces the Z).
    checked_at = _aware(checked_text.replace("Z", "+00:00"))
    stored_at = _aware(stored_text)
    expires_at = _aware(expires_text)
    if checked_at is None or stored_at is None or expires_at is None:
        return None
    outcome = Outcome(service, key, status, None, data, http_status, message, checked_at, latency)
    return CacheEntry(service, key, outcome, stored_at, expires_at)


def _optional(envelope: dict[str, Any], name: str, kind: type) -> None:
    value = envelope.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"outcome.{name} must be {kind.__name__} or null, got {value!r:.60}")


def _checked_entry(record: Any) -> CacheEntry:
    """The full checks of :func:`entry_from_record`, each failure with its own reason."""
    if not isinstance(record, dict):
        raise ValueError(f"a cache record must be a JSON object, got {type(record).__name__}")
    if record.get("format") != RECORD_FORMAT:
        raise ValueError(f"unknown cache record format {record.get('format')!r}")
    service, key, envelope = record.get("service"), record.get("key"), record.get("outcome")
    if not isinstance(service, str) or not isinstance(key, str):
        raise ValueError("a cache record needs string 'service' and 'key'")
    check_service(service)
    if not isinstance(envelope, dict):
        raise ValueError("a cache record needs an 'outcome' object")
    latency = record.get("latency_ms")
    if latency is not None and (type(latency) is not int):
        raise ValueError(f"latency_ms must be an integer or null, got {latency!r:.60}")
    _optional(envelope, "data", dict)
    _optional(envelope, "reason", str)
    _optional(envelope, "message", str)
    _optional(envelope, "http_status", int)
    if envelope.get("service") != service or envelope.get("key") != key:
        raise ValueError("the outcome's service and key differ from the record's")
    try:
        outcome = Outcome.from_envelope(envelope)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"bad outcome envelope: {exc!r}") from exc
    if not outcome.definitive:
        raise ValueError(f"a cache record cannot hold a {outcome.status} outcome")
    if latency is not None:
        outcome = replace(outcome, latency_ms=latency)
    return CacheEntry(
        service=service,
        key=key,
        outcome=outcome,
        stored_at=parse_time(record.get("stored_at"), "stored_at"),
        expires_at=parse_time(record.get("expires_at"), "expires_at"),
    )


def encode_record(record: dict[str, Any]) -> bytes:
    """The record as compact UTF-8 JSON.

    orjson is used because it is fast, but it refuses lone surrogates (and integers beyond
    64 bits); those records are written by the standard library with ``ensure_ascii``, so
    every code point becomes a ``\\uXXXX`` escape and the text survives exactly. Either way
    the result is standard JSON that any reader (``jq``, ``json.loads``) decodes to the
    original strings, NUL included; no private escaping is involved. Floats must be
    finite: JSON has no NaN or infinity (orjson would write null).

    Raises:
        TypeError: the record holds a value that is not JSON (a datetime, a set, ...).
    """
    try:
        return orjson.dumps(record, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode_record(raw: bytes) -> Any:
    """Parse JSON written by :func:`encode_record`. Raises ValueError when it is not JSON."""
    if has_long_number(raw):
        # orjson turns integers beyond 64 bits into floats; the standard library keeps them.
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson rejects escaped lone surrogates, which encode_record may have written;
        # only then is the slower parser worth trying.
        if b"\\ud" not in raw.lower():
            raise
        return json.loads(raw)


__all__ = [
    "RECORD_FORMAT",
    "CacheEntry",
    "check_service",
    "decode_record",
    "encode_record",
    "entry_from_record",
    "entry_to_record",
    "format_time",
    "lean_entry",
    "parse_time",
]
