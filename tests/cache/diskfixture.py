"""A disk cache of our own making for the migration tests: good entries and every odd file.

:func:`make_disk_cache` writes it under a directory and returns what a migration must
find: the entries it must copy (by service and key) and the path of each odd file by kind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cowrieprocessor.enrichment.cache import CacheEntry, EnrichmentCacheManager, TTLPolicy
from cowrieprocessor.enrichment.outcome import Outcome, Status

DAY = timedelta(days=1)
AWKWARD_KEYS = ["http://evil.example/a b?c=1", "nul\x00key", "lone\ud800", "é" * 300]


@dataclass
class DiskFixture:
    root: Path
    entries: dict[tuple[str, str], CacheEntry] = field(default_factory=dict)
    problems: dict[str, list[Path]] = field(default_factory=dict)
    notes: dict[str, list[Path]] = field(default_factory=dict)
    expired: int = 0
    files: int = 0
    nul_escapes: int = 0
    #: Reported as ``unknown_service``, never stored: the folder of a service the
    #: enrichment does not know (its files are counted, not listed) and a record naming
    #: that service in a known service's folder.
    unknown_paths: list[Path] = field(default_factory=list)
    unknown_files: int = 0
    #: Of those, the files under the unknown folder (outside the migration's chunks).
    unknown_folder_files: int = 0


def _set_mtime(path: Path, when: datetime) -> None:
    stamp = when.timestamp()
    os.utime(path, (stamp, stamp))


def make_disk_cache(root: Path, *, fresh: int = 30, now: datetime | None = None) -> DiskFixture:
    """Write ``fresh`` ordinary entries plus the awkward, expired and odd files."""
    now = now or datetime.now(UTC)
    policy = TTLPolicy()
    disk = EnrichmentCacheManager(root, policy=policy)
    fx = DiskFixture(root)
    stored = now - DAY

    def keep(outcome: Outcome, at: datetime = stored) -> CacheEntry:
        entry = disk.store_cached(outcome, stored_at=at)
        fx.entries[(entry.service, entry.key)] = entry
        fx.files += 1
        return entry

    for n in range(fresh):
        service = ("dshield", "virustotal", "spur")[n % 3]
        key = f"198.51.{n // 250}.{n % 250}" if service != "virustotal" else f"{n:064x}"
        keep(Outcome(service, key, Status.SUCCESS, data={"n": n, "asname": f"AS{n}"}))
    for n, key in enumerate(AWKWARD_KEYS):
        keep(Outcome("urlhaus", key, Status.SUCCESS, data={"url": key, "n": n}, message="\x00m"))
    fx.nul_escapes = len(AWKWARD_KEYS)  # each message holds a NUL
    keep(Outcome("hibp", "5BAA6", Status.NOT_FOUND, http_status=404, latency_ms=12))
    for n in range(3):
        disk.store_cached(
            Outcome("dshield", f"203.0.113.{n}", Status.SUCCESS, data={}),
            stored_at=now - 30 * DAY,
        )
        fx.expired += 1
        fx.files += 1

    def odd(kind: str, service: str, name: str, content: bytes) -> Path:
        path = root / service / name[:2] / name
        if name.startswith("~"):
            path = root / service / name[1:3] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        _set_mtime(path, stored)
        fx.problems.setdefault(kind, []).append(path)
        fx.files += 1
        return path

    good = disk.path_for("dshield", "198.51.0.0").read_bytes()
    odd("empty", "dshield", "192.0.2.1.json", b"")
    odd("truncated", "dshield", "192.0.2.2.json", good[: len(good) // 2])
    odd("not_json", "spur", "192.0.2.3.json", b"<html>502 Bad Gateway</html>")
    odd("nul_bytes", "spur", "192.0.2.4.json", b"\x00" * 512)
    odd("bad_record", "dshield", "192.0.2.5.json", b'{"format": 1, "service": "dshield"}')
    odd("temp_file", "dshield", "192.0.2.6.json.123.abcd.tmp", good)
    hidden = hashlib.sha256(b"http://gone.example/x").hexdigest()
    odd("unrecoverable_key", "urlhaus", f"~{hidden}.json", b'{"query_status": "ok"}')
    # An old-layout file holding nothing: its key is known, but there is no answer.
    odd("empty_object", "dshield", "192.0.2.9.json", b"{}")

    # A folder of a service the enrichment does not know: a bare {} and a real record.
    # Then a record of that service in a known service's folder.
    unknown = root / "unknownsvc"
    (unknown / "ab").mkdir(parents=True)
    (unknown / "ab" / "abc.json").write_bytes(b"{}")
    for key in ("198.51.100.1", "198.51.100.2"):
        other = Outcome("unknownsvc", key, Status.SUCCESS, data={"x": 1})
        stray = disk.store_cached(other, stored_at=stored)
    inside_dshield = disk.path_for("dshield", "192.0.2.210")
    inside_dshield.parent.mkdir(parents=True, exist_ok=True)
    os.replace(disk.path_for("unknownsvc", stray.key), inside_dshield)
    fx.unknown_paths = [unknown, inside_dshield]
    fx.unknown_folder_files = 2
    fx.unknown_files = 3
    fx.files += 3

    # Older layouts: a bare response body named after its key, a hashed name with the key.
    legacy = root / "dshield" / "19" / "192.0.2.77.json"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    body = {"ip": {"number": "192.0.2.77", "count": 5, "asname": "LEGACY-AS"}}
    legacy.write_text(json.dumps(body))
    _set_mtime(legacy, stored)
    fx.notes["legacy_layout"] = [legacy]
    fx.files += 1
    url = "http://old.example/bins/x86"
    hashed = root / "urlhaus" / hashlib.sha256(url.encode()).hexdigest()[:2]
    hashed = hashed / f"~{hashlib.sha256(url.encode()).hexdigest()}.json"
    hashed.parent.mkdir(parents=True, exist_ok=True)
    hashed.write_text(json.dumps({"key": url, "data": {"threat": "malware_download"}}))
    _set_mtime(hashed, stored)
    fx.notes["legacy_layout"].append(hashed)
    fx.files += 1
    for path, service, key, data in (
        (legacy, "dshield", "192.0.2.77", body),
        (hashed, "urlhaus", url, {"threat": "malware_download"}),
    ):
        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        ttl = policy.ttl_for(service, Status.SUCCESS)
        outcome = Outcome(service, key, Status.SUCCESS, data=data, checked_at=at)
        fx.entries[(service, key)] = CacheEntry(service, key, outcome, at, at + ttl)

    # A record in another key's file: the record names its own exact key.
    moved = Outcome("spur", "192.0.2.200", Status.SUCCESS, data={"moved": True})
    entry = disk.store_cached(moved, stored_at=stored)
    target = disk.path_for("spur", "192.0.2.201")
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(disk.path_for("spur", "192.0.2.200"), target)
    fx.entries[("spur", "192.0.2.200")] = entry
    fx.notes["misplaced"] = [target]
    fx.files += 1
    return fx
