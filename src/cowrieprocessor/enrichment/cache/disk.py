"""The disk cache operators have today: one JSON file per entry, sharded per service.

Layout: ``{cache_dir}/{service}/{key[:2]}/{key}.json``. Each file is the entry's record
(:func:`~cowrieprocessor.enrichment.cache.base.entry_to_record`): service, exact key,
stored and expiry times, latency and the outcome envelope, enough to move it into the
database exactly. The file's modification time is set to ``stored_at`` so ``find -mtime``
agrees with the stored time.

Keys never become path parts unless they are plain. A key is *plain* when it has 1 to 200
characters from ``A-Z a-z 0-9 . _ : -`` and does not start with ``.`` (so neither the key
nor its two-character shard can be ``.`` or ``..``). IPv4 and IPv6 addresses, hex hashes
and HIBP prefixes are plain. Any other key (with ``/``, ``\\``, NUL, other control
characters, lone surrogates, non-ASCII, empty, too long) is stored as
``{service}/{h[:2]}/~{h}.json`` where ``h`` is the SHA-256 of the key's UTF-8 bytes
(surrogates passed through). ``~`` never occurs in a plain key, so the two kinds of names
cannot collide, and the exact key is read back from inside the file.

Writes are atomic: the record goes to ``{name}.{pid}.{random}.tmp`` in the entry's own
directory and is renamed over the entry with :func:`os.replace`. Readers therefore see
either the old or the new file, never part of one; when several processes store the same
key at once, the last rename wins. With ``durable=False`` (the default) there is no
fsync: a power loss may leave an empty or truncated file, which reads as a miss with a
warning and is repaired by the next store, so durability costs speed and buys nothing a
cache needs. ``durable=True`` fsyncs the file and its directory.

An unreadable file (empty, truncated, not JSON, wrong shape, or holding another key) is
logged as a warning with its path and treated as a miss; it is left in place for the
operator and the migration to see, and the next store of that key replaces it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cowrieprocessor.enrichment.cache.base import (
    Cache,
    CacheEntry,
    CacheStats,
    check_service,
    decode_record,
    encode_record,
    entry_from_record,
    entry_to_record,
    matches,
)
from cowrieprocessor.enrichment.cache.ttl import Clock, TTLPolicy, system_clock
from cowrieprocessor.enrichment.outcome import Status

logger = logging.getLogger(__name__)

ENTRY_SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
HASHED_PREFIX = "~"
MAX_PLAIN_KEY_LENGTH = 200
#: Temporary files older than this are leftovers of a killed writer.
STALE_TEMP_AGE = timedelta(hours=1)

_PLAIN_KEY = re.compile(rf"[A-Za-z0-9_:-][A-Za-z0-9._:-]{{0,{MAX_PLAIN_KEY_LENGTH - 1}}}")


def is_plain_key(key: str) -> bool:
    """True when ``key`` is used as its own file name (see the module docstring)."""
    return _PLAIN_KEY.fullmatch(key) is not None


def entry_location(service: str, key: str) -> tuple[str, str]:
    """The shard directory and file name of ``key``, relative to the service directory."""
    if is_plain_key(key):
        return key[:2], key + ENTRY_SUFFIX
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:2], HASHED_PREFIX + digest + ENTRY_SUFFIX


@dataclass(frozen=True)
class _FileRead:
    entry: CacheEntry | None
    problem: str | None


class EnrichmentCacheManager(Cache):
    """The disk backend: one file per entry under ``cache_dir``.

    Safe to share between threads and processes on one host (see the module docstring for
    the atomicity argument). ``cleanup_expired`` may race with a store of the same key in
    another process: it re-checks the file's identity just before unlinking, which narrows
    the window to a few microseconds; losing that race costs one cache miss, never a
    wrong answer.

    Raises:
        OSError: from :meth:`store_cached` when the file cannot be written (disk full,
            permissions); the temporary file is removed and the old entry, if any, stays.
    """

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        policy: TTLPolicy | None = None,
        clock: Clock = system_clock,
        durable: bool = False,
    ) -> None:
        super().__init__(policy=policy, clock=clock)
        self.cache_dir = Path(cache_dir).absolute()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.durable = durable

    def path_for(self, service: str, key: str) -> Path:
        """The file that holds (or would hold) the entry for ``service`` and ``key``."""
        shard, name = entry_location(check_service(service), key)
        return self.cache_dir / service / shard / name

    # -- reading ---------------------------------------------------------------------------

    def _get(self, service: str, key: str, now: datetime) -> CacheEntry | None:
        path = self.path_for(service, key)
        read = self._read(path, service, key)
        if read.problem is not None:
            logger.warning(
                "disk cache: unreadable entry %s (%s); treating it as a miss", path, read.problem
            )
            return None
        if read.entry is None:
            return None
        if read.entry.is_expired(now):
            logger.debug("disk cache: %s entry expired", service)
            return None
        return read.entry

    def _read(self, path: Path, service: str, key: str | None) -> _FileRead:
        """Read one file; ``key`` None accepts whatever key fits the file's name."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return _FileRead(None, None)
        except OSError as exc:
            return _FileRead(None, f"cannot read: {exc.strerror or exc}")
        if not raw:
            return _FileRead(None, "empty file")
        try:
            entry = entry_from_record(decode_record(raw))
        except ValueError as exc:
            return _FileRead(None, f"{type(exc).__name__}: {str(exc)[:200]}")
        if entry.service != service:
            return _FileRead(None, f"holds service {entry.service!r}")
        if key is not None and entry.key != key:
            return _FileRead(None, f"holds another key {entry.key!r:.80}")
        if key is None and entry_location(service, entry.key)[1] != path.name:
            return _FileRead(None, f"holds key {entry.key!r:.80}, which belongs elsewhere")
        return _FileRead(entry, None)

    # -- writing ---------------------------------------------------------------------------

    def _store(self, entry: CacheEntry) -> None:
        path = self.path_for(entry.service, entry.key)
        data = encode_record(entry_to_record(entry))
        temp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            # First entry in this shard: create directories only when needed, which saves
            # a system call on every other store.
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                stamp = entry.stored_at.timestamp()
                os.utime(handle.fileno(), (stamp, stamp))
                if self.durable:
                    os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if self.durable:
            self._fsync_dir(path.parent)
        logger.debug("disk cache: stored %s entry (%d bytes)", entry.service, len(data))

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- walking ---------------------------------------------------------------------------

    def scan(self, service: str | None = None) -> Iterator[DiskItem]:
        """Every entry and temporary file in the layout, read and checked; streamed.

        Only ``{service}/{shard}/`` files ending in ``.json`` or ``.tmp`` are visited, of
        service directories with valid names; anything else is not the layout and is
        skipped. Unreadable entries come with ``problem`` set and are not logged here.
        Files that vanish during the walk (a concurrent cleanup) are skipped.
        """
        services = [service] if service is not None else None
        for service_name, item in self._walk(services):
            is_temp = item.name.endswith(TEMP_SUFFIX)
            if not is_temp and not item.name.endswith(ENTRY_SUFFIX):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = Path(item.path)
            read = _FileRead(None, None) if is_temp else self._read(path, service_name, None)
            if not is_temp and read.entry is None and read.problem is None:
                continue
            yield DiskItem(
                path=path,
                service=service_name,
                is_temp=is_temp,
                size=info.st_size,
                mtime=info.st_mtime,
                inode=info.st_ino,
                entry=read.entry,
                problem=read.problem,
            )

    def _walk(self, services: list[str] | None) -> Iterator[tuple[str, os.DirEntry[str]]]:
        if services is None:
            services = []
            for service_dir in _scan(self.cache_dir):
                try:
                    if service_dir.is_dir(follow_symlinks=False):
                        services.append(check_service(service_dir.name))
                except (OSError, ValueError):
                    continue
        for service in services:
            for shard in _scan(self.cache_dir / service):
                if shard.is_dir(follow_symlinks=False):
                    for item in _scan(Path(shard.path)):
                        yield service, item

    def _cleanup(self, now: datetime, batch_size: int) -> int:
        removed = temps = corrupt = 0
        for item in self.scan():
            if item.is_temp:
                if now.timestamp() - item.mtime >= STALE_TEMP_AGE.total_seconds():
                    temps += _unlink_if_unchanged(item)
            elif item.problem is not None:
                corrupt += 1
            elif (
                item.entry is not None
                and item.entry.is_expired(now)
                and _unlink_if_unchanged(item)
            ):
                # Files go one by one (there is no lock to bound), so the batch size only
                # paces the progress lines.
                removed += 1
                if removed % batch_size == 0:
                    logger.info("disk cache cleanup: %d expired entries removed", removed)
        logger.info(
            "disk cache cleanup: removed %d expired entries and %d stale temporary files; "
            "left %d unreadable files in place",
            removed,
            temps,
            corrupt,
        )
        return removed

    def _invalidate(
        self,
        service: str,
        key: str | None,
        stored_before: datetime | None,
        status: Status | None,
    ) -> int:
        if key is not None:
            path = self.path_for(service, key)
            read = self._read(path, service, key)
            items: Iterable[tuple[CacheEntry | None, Path]] = [(read.entry, path)]
        else:
            items = ((item.entry, item.path) for item in self.scan(service) if not item.is_temp)
        removed = 0
        for entry, path in items:
            if entry is not None and matches(entry, stored_before, status):
                path.unlink(missing_ok=True)
                removed += 1
        logger.info("disk cache: invalidated %d %s entries", removed, service)
        return removed

    def _stats(self, now: datetime) -> CacheStats:
        stats = CacheStats(computed_at=now)
        for item in self.scan():
            if item.is_temp:
                continue
            if item.entry is None:
                logger.debug("disk cache stats: unreadable %s (%s)", item.path, item.problem)
                stats.for_service(item.service).corrupt += 1
            else:
                stats.for_service(item.service).add(item.entry, item.size, now)
        return stats


@dataclass(frozen=True)
class DiskItem:
    """One file of the layout as :meth:`EnrichmentCacheManager.scan` found it.

    For an entry file, exactly one of ``entry`` and ``problem`` is set. For a temporary
    file (``is_temp``) both are None.
    """

    path: Path
    service: str
    is_temp: bool
    size: int
    mtime: float
    inode: int
    entry: CacheEntry | None
    problem: str | None


def _unlink_if_unchanged(item: DiskItem) -> bool:
    # The scan saw this inode; a concurrent store replaces the file with a new inode, and
    # that fresh entry must not be deleted.
    try:
        if os.stat(item.path, follow_symlinks=False).st_ino != item.inode:
            return False
        os.unlink(item.path)
    except FileNotFoundError:
        return False
    return True


def _scan(directory: Path) -> Iterator[os.DirEntry[str]]:
    """The items of ``directory``; nothing when it vanished or cannot be listed."""
    try:
        with os.scandir(directory) as items:
            yield from items
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("disk cache: cannot list %s: %s", directory, exc.strerror or exc)
