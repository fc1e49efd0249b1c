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

A :class:`MigrationSummary` counts the files of a migration by kind and names them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
#: At most this many paths are named per kind; the counts stay exact.
MAX_NAMED = 1000


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


#: The counts :meth:`MigrationSummary.counted` carries, besides ``seconds`` and kinds.
_NUMBERS = ("files_seen", "migrated", "already_present", "expired", "nul_escapes", "batches")


@dataclass
class MigrationSummary:
    """Counts of one migration; ``problems`` and ``notes`` name files by kind.

    ``unknown_service`` counts files, and names each skipped folder of an unknown service
    once (its files are not listed) besides any record naming such a service. A resumed
    run's counts, seconds included, add those the status file kept of the earlier runs
    (``files_from_earlier_runs`` files), so they cover the whole source; rows an earlier
    run committed after its last status update count as ``already_present``.
    """

    migration_id: str
    source: str
    database: str
    dry_run: bool = False
    resumed: bool = False
    files_seen: int = 0
    migrated: int = 0
    already_present: int = 0
    expired: int = 0
    skipped_done_shards: int = 0
    files_from_earlier_runs: int = 0
    nul_escapes: int = 0
    batches: int = 0
    seconds: float = 0.0
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    notes: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in NOTE_KINDS})
    counts: dict[str, int] = field(default_factory=dict)

    def name(self, group: dict[str, list[str]], kind: str, path: Path, files: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + files
        if len(group[kind]) < MAX_NAMED:
            group[kind].append(shown_path(path))

    def counted(self) -> dict[str, Any]:
        """The counts and named paths as plain data, for :meth:`add` (and the status file)."""
        named = {k: list(v) for group in (self.problems, self.notes) for k, v in group.items()}
        return {
            **{name: getattr(self, name) for name in _NUMBERS},
            "seconds": self.seconds,
            "counts": dict(self.counts),
            "named": {k: v for k, v in named.items() if v},
        }

    def add(self, counted: dict[str, Any]) -> None:
        """Add counts in the form of :meth:`counted`; paths are named up to MAX_NAMED per
        kind. Values of the wrong type or an unknown kind (a damaged or hand-edited status
        file) are left out, never raised on."""
        for number in _NUMBERS:
            value = counted.get(number)
            if type(value) is int and value >= 0:
                setattr(self, number, getattr(self, number) + value)
        seconds = counted.get("seconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            self.seconds += seconds
        for kind, value in _items(counted.get("counts")):
            if kind in PROBLEM_KINDS + NOTE_KINDS and type(value) is int and value >= 0:
                self.counts[kind] = self.counts.get(kind, 0) + value
        for kind, paths in _items(counted.get("named")):
            group = self.problems if kind in self.problems else self.notes
            if kind in group and isinstance(paths, list):
                room = max(MAX_NAMED - len(group[kind]), 0)
                group[kind].extend(p for p in paths[:room] if isinstance(p, str))

    @property
    def corrupt(self) -> int:
        return sum(self.counts.get(k, 0) for k in PROBLEM_KINDS if k not in NOT_CORRUPT)

    def to_dict(self) -> dict[str, Any]:
        rate = self.files_seen / self.seconds if self.seconds > 0 else 0.0
        return {
            "migration_id": self.migration_id,
            "source": self.source,
            "database": self.database,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "files_seen": self.files_seen,
            "migrated": self.migrated,
            "already_present": self.already_present,
            "expired": self.expired,
            "corrupt": self.corrupt,
            "temp_files": self.counts.get("temp_file", 0),
            "unknown_service": self.counts.get("unknown_service", 0),
            "outside_layout": self.counts.get("outside_layout", 0),
            "nul_escapes": self.nul_escapes,
            "skipped_done_shards": self.skipped_done_shards,
            "files_from_earlier_runs": self.files_from_earlier_runs,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "files_per_second": round(rate, 1),
            "problems": {
                k: {"count": self.counts.get(k, 0), "paths": v} for k, v in self.problems.items()
            },
            "notes": {
                k: {"count": self.counts.get(k, 0), "paths": v} for k, v in self.notes.items()
            },
        }


def _items(value: Any) -> list[tuple[str, Any]]:
    """The items of ``value`` with text keys; none when it is not a dict."""
    if not isinstance(value, dict):
        return []
    return [(k, v) for k, v in value.items() if isinstance(k, str)]


def shown_path(path: Path) -> str:
    """``path`` as text a report can carry: a name whose bytes are not UTF-8 (Python holds
    them as lone surrogates, which JSON refuses) has those bytes written as ``\\xNN``."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return text
