"""The enrichment service: ask the in-run memo, then the cache, then the provider.

:class:`EnrichmentService` is what the refresh job (and any other caller) uses to turn a
session's source IP, a file's hash and URL, or a password into outcomes. For each
``(service, endpoint, key)`` it decides once per run, in this order:

1. the in-run memo: a key already looked up in this run gets the same outcome again,
   whatever it was (so a failing key is not hammered within one run);
2. the cache, when it holds a fresh entry (success or not found); a caller working
   through a page of rows reads the page's entries first with one batch
   (:meth:`EnrichmentService.prefetch` and its per-kind forms), so a database cache
   costs a round trip per page and service rather than per key;
3. the service's client, which never raises; a stopped or paused service answers
   ``skipped`` at once.

Before all three, the service's local check refuses keys that must not leave the machine
(addresses that are not global, malformed hashes, a missing key): their ``skipped``
outcome is returned without touching the memo, the cache or the client.

With a :class:`~cowrieprocessor.enrichment.flight.SingleFlight` (many refresh workers),
a cache miss goes through it: one worker asks the provider and the others wait for its
answer in the shared cache (counted as ``shared``, not as requests).

Only definitive outcomes are stored in the cache; errors and skips never are, so the
next run tries them again. A cache that cannot be written (disk full) is logged and the
run goes on without it.

Cache keys are the service's normalised keys without the endpoint: the endpoints of one
service take disjoint kinds of keys (URLhaus: host names or addresses, full URLs with a
scheme, hex digests; VirusTotal: hex digests, addresses), so they cannot collide. HIBP is
cached per range (the 5-hex prefix), and a password's outcome is derived from its range.

Not thread-safe: one service per thread (the clients it wraps are thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cowrieprocessor.enrichment.cache import Cache
from cowrieprocessor.enrichment.flight import Flight, SingleFlight, Source
from cowrieprocessor.enrichment.http import ServiceClient
from cowrieprocessor.enrichment.outcome import Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services import password_outcome, password_sha1, range_prefix

logger = logging.getLogger(__name__)

#: The services ``enrich_session`` asks, in order (VirusTotal only with a key).
SESSION_SERVICES = ("dshield", "urlhaus", "spur", "virustotal")
#: The services ``enrich_file`` asks.
FILE_SERVICES = ("virustotal", "urlhaus")
PASSWORD_SERVICE = "hibp"  # noqa: S105 - a service name, not a password

#: Skip reasons that mean the service itself could not be used (not the key's fault):
#: such lookups count as attempted and failed, like errors.
SERVICE_FAILURE_REASONS = frozenset(
    {str(SkipReason.AUTH_FAILED), str(SkipReason.QUOTA_SPENT), str(SkipReason.BACKING_OFF)}
)


@dataclass
class LookupStats:
    """What one service did in this run, counted per distinct key (not per row).

    ``attempted`` counts the client's answers that involved the provider (a request, or
    a skip because the service was stopped or paused); ``failed`` those among them that
    were not definitive. ``api_calls`` is read from the client (retries included).
    """

    service: str
    memo_hits: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    attempted: int = 0
    failed: int = 0
    api_calls: int = 0
    #: Misses answered by another worker's lookup (single flight), errors included.
    shared: int = 0
    last_error: str | None = None

    @property
    def all_failed(self) -> bool:
        """True when the service failed for every lookup it attempted (at least one)."""
        return self.attempted > 0 and self.failed == self.attempted

    def to_dict(self) -> dict[str, Any]:
        return {
            "memo_hits": self.memo_hits,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "attempted": self.attempted,
            "failed": self.failed,
            "api_calls": self.api_calls,
            "shared": self.shared,
            "last_error": self.last_error,
        }


@dataclass
class EnrichmentService:
    """Outcomes for sessions, files and passwords, through memo, cache and clients.

    Args:
        clients: one client per service name; a service without a client is not asked
            (its outcomes are simply absent from the results).
        cache: where definitive outcomes are kept between runs.
        flight: single flight between workers sharing the cache (None: ask directly).
    """

    clients: Mapping[str, ServiceClient]
    cache: Cache
    flight: SingleFlight | None = None
    stats: dict[str, LookupStats] = field(default_factory=dict)
    _memo: dict[tuple[str, str, str], Outcome] = field(default_factory=dict, repr=False)
    _prefetched: dict[tuple[str, str, str], Outcome | None] = field(
        default_factory=dict, repr=False
    )
    _sent_before: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, client in self.clients.items():
            self.stats.setdefault(name, LookupStats(name))
            self._sent_before[name] = client.requests_sent

    @property
    def services(self) -> Collection[str]:
        return self.clients.keys()

    def uses_vt_ip(self) -> bool:
        """VirusTotal IP reputation is asked only when a VirusTotal key is set."""
        client = self.clients.get("virustotal")
        return client is not None and client.settings.api_key is not None

    # Lookups by kind ------------------------------------------------------------------

    def enrich_session(
        self, session_id: str, src_ip: str | None, *, services: Collection[str] | None = None
    ) -> dict[str, Outcome]:
        """Outcomes for a session's source IP: dshield, urlhaus (host), spur, virustotal.

        ``services`` limits which are asked (default: every one with a client).
        ``session_id`` only names the session in debug logs. An address that is not
        global (or no address) ends as ``skipped``/``not_routable`` without I/O.
        """
        logger.debug("enriching session %r", session_id)
        return {
            name: self.lookup(name, src_ip, endpoint)
            for name, endpoint in self._session_endpoints(services)
        }

    def _session_endpoints(self, services: Collection[str] | None) -> list[tuple[str, str | None]]:
        """(service, endpoint) asked about a session's source address."""
        asked: list[tuple[str, str | None]] = []
        for name in SESSION_SERVICES:
            if name not in self.clients or (services is not None and name not in services):
                continue
            if name == "virustotal":
                if self.uses_vt_ip():
                    asked.append((name, "ip"))
            elif name == "urlhaus":
                asked.append((name, "host"))
            else:
                asked.append((name, None))
        return asked

    def enrich_file(
        self,
        file_hash: str | None,
        filename: str | None = None,
        url: str | None = None,
        *,
        services: Collection[str] | None = None,
    ) -> dict[str, Outcome]:
        """Outcomes for a download or upload: virustotal (file), urlhaus (url).

        ``services`` limits which are asked (default: every one with a client). A file
        without a hash (a failed transfer) is ``skipped``/``not_applicable`` for
        VirusTotal; one without a real URL (uploads, Cowrie's ``/dev/null``) likewise for
        URLhaus. ``filename`` only names the file in debug logs.
        """
        logger.debug("enriching file %r (%r)", file_hash, filename)
        wanted = [
            name
            for name in FILE_SERVICES
            if name in self.clients and (services is None or name in services)
        ]
        results: dict[str, Outcome] = {}
        if "virustotal" in wanted:
            results["virustotal"] = self.lookup("virustotal", file_hash, "file")
        if "urlhaus" in wanted:
            results["urlhaus"] = self.lookup("urlhaus", url, "url")
        return results

    def enrich_password(self, password: str) -> Outcome:
        """HIBP's outcome for the original (decoded) password, via its cached range.

        The outcome's key is the password's upper-case SHA-1; only its 5-hex prefix is
        ever sent.

        Raises:
            KeyError: there is no HIBP client.
        """
        sha1 = password_sha1(password)
        range_outcome = self.lookup(PASSWORD_SERVICE, range_prefix(sha1))
        return password_outcome(sha1, range_outcome)

    # The one lookup path --------------------------------------------------------------

    def lookup(self, service: str, key: str | None, endpoint: str | None = None) -> Outcome:
        """The outcome of ``key`` at ``service``/``endpoint``: memo, cache, then client.

        Raises:
            KeyError: there is no client for ``service``.
        """
        client = self.clients[service]
        stats = self.stats[service]
        endpoint = client.service.resolve_endpoint(endpoint)
        local = client.service.check(key, endpoint)
        if local is not None:
            # Refused locally (not routable, not applicable, no key): the service's own
            # check decides; nothing reaches the client, the cache or the network.
            return local

        cache_key = client.service.normalize_key(key or "", endpoint)
        memo_key = (service, endpoint, cache_key)
        found = self._memo.get(memo_key)
        if found is not None:
            stats.memo_hits += 1
            return found

        if memo_key in self._prefetched:
            cached = self._prefetched.pop(memo_key)
        else:
            entry = self.cache.get_cached(service, cache_key)
            cached = entry.outcome if entry is not None else None
        if cached is not None:
            stats.cache_hits += 1
            logger.debug("%s %s: cache hit (%s)", service, endpoint, cached.status)
            self._memo[memo_key] = cached
            return cached

        stats.cache_misses += 1
        if self.flight is not None:
            outcome = self._fly(service, cache_key, endpoint, stats)
        else:
            outcome = client.lookup(cache_key, endpoint)
            self._count(stats, outcome)
            if outcome.definitive:
                self._store(outcome)
        self._memo[memo_key] = outcome
        return outcome

    # A page's cache reads in one batch ------------------------------------------------

    def prefetch(
        self, service: str, keys: Iterable[str | None], endpoint: str | None = None
    ) -> int:
        """Read the cache entries of ``keys`` with one ``get_many``; return how many
        were found.

        The next :meth:`lookup` of each of these keys takes its answer from this batch
        instead of reading the cache on its own (a round trip per key on a database
        cache); a key found missing goes straight to the provider, or to the single
        flight, which reads the shared cache again under its lock. Keys the service
        refuses locally, or already answered in this run, are not read. A new prefetch
        of the same service and endpoint drops what the last one left unused.

        Raises:
            whatever the cache's ``get_many`` raises (the lookup would have met it too).
        """
        client = self.clients.get(service)
        if client is None:
            return 0
        endpoint = client.service.resolve_endpoint(endpoint)
        for stale in [k for k in self._prefetched if k[:2] == (service, endpoint)]:
            del self._prefetched[stale]
        wanted: list[str] = []
        for key in keys:
            if client.service.check(key, endpoint) is not None:
                continue
            cache_key = client.service.normalize_key(key or "", endpoint)
            if (service, endpoint, cache_key) not in self._memo:
                wanted.append(cache_key)
        if not wanted:
            return 0
        found = self.cache.get_many(service, wanted)
        for cache_key in wanted:
            entry = found.get(cache_key)
            self._prefetched[(service, endpoint, cache_key)] = (
                entry.outcome if entry is not None else None
            )
        return len(found)

    def prefetch_sessions(self, wants: Iterable[tuple[str | None, Collection[str]]]) -> int:
        """:meth:`prefetch` for a page of sessions: (source address, services wanted)."""
        batches: dict[tuple[str, str | None], list[str | None]] = {}
        for src_ip, services in wants:
            for name, endpoint in self._session_endpoints(services):
                batches.setdefault((name, endpoint), []).append(src_ip)
        return sum(self.prefetch(name, keys, ep) for (name, ep), keys in batches.items())

    def prefetch_files(
        self, wants: Iterable[tuple[str | None, str | None, Collection[str]]]
    ) -> int:
        """:meth:`prefetch` for a page of files: (sha256, URL, services wanted)."""
        hashes: list[str | None] = []
        urls: list[str | None] = []
        for file_hash, url, services in wants:
            if "virustotal" in services:
                hashes.append(file_hash)
            if "urlhaus" in services:
                urls.append(url)
        found = self.prefetch("virustotal", hashes, "file") if hashes else 0
        return found + (self.prefetch("urlhaus", urls, "url") if urls else 0)

    def prefetch_passwords(self, passwords: Iterable[str]) -> int:
        """:meth:`prefetch` for a page of passwords (their HIBP ranges)."""
        ranges = [range_prefix(password_sha1(p)) for p in passwords]
        return self.prefetch(PASSWORD_SERVICE, ranges)

    def _fly(self, service: str, cache_key: str, endpoint: str, stats: LookupStats) -> Outcome:
        assert self.flight is not None
        client = self.clients[service]

        def reread() -> Outcome | None:
            entry = self.cache.get_cached(service, cache_key)
            return entry.outcome if entry is not None else None

        flight = Flight(
            reread=reread, fetch=lambda: client.lookup(cache_key, endpoint), store=self._store
        )
        outcome, source = self.flight.run(service, cache_key, flight)
        if source == Source.FETCHED:
            self._count(stats, outcome)
        else:
            stats.shared += 1
            logger.debug("%s %s: answered by another worker (%s)", service, endpoint, source)
        return outcome

    def refresh_api_calls(self) -> None:
        """Update ``stats[*].api_calls`` from the clients' request counters."""
        for name, client in self.clients.items():
            self.stats[name].api_calls = client.requests_sent - self._sent_before[name]

    def failed_services(self) -> list[str]:
        """Services that failed for every lookup they attempted in this run."""
        return sorted(name for name, stats in self.stats.items() if stats.all_failed)

    def _count(self, stats: LookupStats, outcome: Outcome) -> None:
        involved = outcome.status != Status.SKIPPED or outcome.reason in SERVICE_FAILURE_REASONS
        if not involved:
            return
        stats.attempted += 1
        if not outcome.definitive:
            stats.failed += 1
            stats.last_error = f"{outcome.status}/{outcome.reason}: {outcome.message or ''}"

    def _store(self, outcome: Outcome) -> None:
        try:
            self.cache.store_cached(outcome)
        except OSError as exc:
            # The outcome still reaches the database; only the next run pays for it again.
            logger.warning(
                "%s: cannot store in the cache (%s); going on without it",
                outcome.service,
                type(exc).__name__,
            )
