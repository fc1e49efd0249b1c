"""Reading the disk cache for the migration: every file becomes an entry or a named problem.

The disk backend's :meth:`~cowrieprocessor.enrichment.cache.disk.EnrichmentCacheManager.scan`
reads the current layout. Files it cannot read are classified here, and entries of older
layouts are recovered when their exact key is known:

- a file that is just the API response body (a JSON object without ``"format"``), named
  after a plain key (``dshield/1./1.2.3.4.json``): the key is the name, the body becomes
  the ``data`` of a ``success`` outcome, stored at the file's modification time and
  expiring a TTL later;
- the same under a hashed name (``~<sha256>.json``) holding ``"key"`` inside: the key is
  taken only when its SHA-256 matches the name; otherwise it cannot be recovered and the
  file is reported, never stored under a guess;
- a record of the current format in the wrong place (another key's name, another service's
  directory): the record names its exact key and service, so it is migrated as such.

Only the services the enrichment knows (:data:`KNOWN_SERVICES`) are migrated: a record
naming another service, and every file under a top-level folder that is not a known
service (see :func:`~cowrieprocessor.enrichment.migrate_io.unknown_folders`), is
reported as ``unknown_service`` and never stored. An old-layout file with nothing in it
(``{}``, or only its key) is reported as ``empty_object``, never stored as a success
without data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cowrieprocessor.enrichment.cache.base import (
    CacheEntry,
    decode_record,
    entry_from_record,
)
from cowrieprocessor.enrichment.cache.disk import (
    ENTRY_SUFFIX,
    HASHED_PREFIX,
    DiskItem,
    entry_location,
    is_plain_key,
)
from cowrieprocessor.enrichment.cache.ttl import TTLPolicy
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.settings import SERVICE_NAMES

#: The services whose entries are migrated.
KNOWN_SERVICES = frozenset(SERVICE_NAMES)
#: Kinds of files that are not migrated.
PROBLEM_KINDS = (
    "empty",
    "truncated",
    "not_json",
    "nul_bytes",
    "bad_record",
    "empty_object",
    "unrecoverable_key",
    "temp_file",
    "unknown_service",
    "outside_layout",
)
#: Problem kinds that are not damage (not counted as corrupt).
NOT_CORRUPT = ("temp_file", "unknown_service", "outside_layout")
#: Kinds of files that are migrated but worth naming.
NOTE_KINDS = ("legacy_layout", "misplaced")


@dataclass(frozen=True)
class FileVerdict:
    """What one file holds: an ``entry`` (maybe with a ``note``) or a ``problem`` kind."""

    entry: CacheEntry | None
    problem: str | None = None
    note: str | None = None
    detail: str | None = None


def judge(item: DiskItem, policy: TTLPolicy) -> FileVerdict:
    """Classify one scanned file (reading it again only when the scan found a problem)."""
    if item.is_temp:
        return FileVerdict(None, "temp_file")
    if item.entry is not None:
        return FileVerdict(item.entry)
    try:
        raw = item.path.read_bytes()
    except OSError as exc:
        return FileVerdict(None, "bad_record", detail=f"cannot read: {exc.strerror or exc}")
    return judge_bytes(raw, item, policy)


def judge_bytes(raw: bytes, item: DiskItem, policy: TTLPolicy) -> FileVerdict:
    """Classify the content ``raw`` of the file ``item``."""
    if not raw.strip():
        return FileVerdict(None, "empty")
    if b"\x00" in raw:
        return FileVerdict(None, "nul_bytes", detail="raw NUL bytes (a zero-filled block?)")
    try:
        parsed = decode_record(raw)
    except ValueError:
        return FileVerdict(None, _parse_failure(raw))
    if isinstance(parsed, dict) and "format" in parsed:
        try:
            entry = entry_from_record(parsed)
        except ValueError as exc:
            return FileVerdict(None, "bad_record", detail=str(exc)[:200])
        if entry.service not in KNOWN_SERVICES:
            return FileVerdict(None, "unknown_service", detail=f"a record of {entry.service!r}")
        if entry.service == item.service and entry_location(entry.service, entry.key)[1] == (
            item.path.name
        ):
            return FileVerdict(entry)
        return FileVerdict(entry, note="misplaced", detail="record names another place")
    return _legacy(parsed, item, policy)


def _parse_failure(raw: bytes) -> str:
    try:
        json.loads(raw)
    except json.JSONDecodeError as exc:
        # JSON that began well and runs out (mid-string or at the end) is a cut file.
        ran_out = exc.msg.startswith("Unterminated string") or exc.pos >= len(raw.rstrip()) - 1
        if raw.lstrip()[:1] in (b"{", b"[") and ran_out:
            return "truncated"
        return "not_json"
    except (UnicodeDecodeError, ValueError):
        return "not_json"
    return "not_json"


def legacy_key(item: DiskItem, body: dict[str, Any]) -> str | None:
    """The exact key of an old-layout file, or None when it cannot be known."""
    name = item.path.name.removesuffix(ENTRY_SUFFIX)
    inside = body.get("key")
    if name.startswith(HASHED_PREFIX):
        if isinstance(inside, str) and entry_location(item.service, inside)[1] == item.path.name:
            return inside
        return None
    if is_plain_key(name):
        return name
    return None


def _legacy(parsed: Any, item: DiskItem, policy: TTLPolicy) -> FileVerdict:
    if not isinstance(parsed, dict):
        return FileVerdict(None, "bad_record", detail=f"a JSON {type(parsed).__name__}")
    if item.service not in KNOWN_SERVICES:
        return FileVerdict(None, "unknown_service", detail=f"a file of {item.service!r}")
    key = legacy_key(item, parsed)
    if key is None:
        return FileVerdict(None, "unrecoverable_key", detail="hashed name without its key")
    # A wrapper {"key": ..., "data": {...}} keeps its data; anything else is the body.
    data = parsed.get("data") if isinstance(parsed.get("data"), dict) else parsed
    if not data or data.keys() <= {"key"}:
        # {} (or only the key) holds no answer: storing it would invent a success.
        return FileVerdict(None, "empty_object", detail="no response data in the file")
    stored_at = datetime.fromtimestamp(item.mtime, UTC)
    outcome = Outcome(item.service, key, Status.SUCCESS, data=data, checked_at=stored_at)
    expires_at = policy.expires_at(item.service, Status.SUCCESS, stored_at)
    entry = CacheEntry(item.service, key, outcome, stored_at, expires_at)
    return FileVerdict(entry, note="legacy_layout")
