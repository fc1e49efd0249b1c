"""The one HTTP client that wraps every service the same way.

A :class:`ServiceClient` owns one ``httpx.Client`` for one service and is meant to be
built once per process and used for every lookup of that service (it is thread-safe).
For each lookup it decides, in this order, and stops at the first answer:

1. the service's local check (not routable, not applicable, no key): no I/O at all;
2. the service is disabled: ``skipped``/``service_disabled``;
3. the service was stopped for the run (a refused key, a spent balance): ``skipped``
   with ``auth_failed`` or ``quota_spent``, no request;
4. the service is paused (after a 429 or a spent quota) or the rate limiter has no
   slot: the lookup *waits* when the wait is at most ``max_wait_seconds``, otherwise it
   ends at once as ``skipped``/``backing_off`` (``quota_spent`` when a daily limit or a
   quota is the cause). The refresh job can read :attr:`ServiceClient.paused_until`;
5. the request. Timeouts, network errors and 5xx are retried after an exponential
   backoff with jitter, at most ``max_retries`` times; a 429 pauses the service for its
   ``Retry-After`` (seconds or HTTP date) or, without one, for the service's default or
   a backoff, and is retried when that is short enough; 401/403 stop the service for the
   run with one error log line; a spent quota pauses it until the service says it comes
   back (VirusTotal: 00:00 UTC) or stops it for the run (Spur).

Rate limits use pyrate-limiter: one limiter per service, key fingerprint and rate
setting for the whole process, kept by a :class:`LimiterRegistry`. Its bucket factory
decides where the counts live: in memory by default; a factory returning pyrate-limiter's
``SQLiteBucket`` (``use_file_lock=True`` needs the ``filelock`` package) or
``PostgresBucket`` shares one pace between processes. Only synchronous buckets work.

Time is read and slept through a :class:`Clock`, so tests can replace it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Protocol

import httpx
from pydantic import SecretStr
from pyrate_limiter import AbstractBucket, InMemoryBucket, Limiter, Rate, RateItem

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason, Status
from cowrieprocessor.enrichment.secrets import fingerprint, scrub
from cowrieprocessor.enrichment.services import (
    RequestSpec,
    Service,
    ServiceResponse,
    build_service,
)
from cowrieprocessor.enrichment.services.base import USER_AGENT, retry_after_seconds, safe_text
from cowrieprocessor.enrichment.settings import EnrichmentSettings, ServiceSettings

logger = logging.getLogger(__name__)

_DAY_MS = 86_400_000
_WAIT_BUFFER_SECONDS = 0.05
_RETRYABLE = frozenset({ErrorKind.TIMEOUT, ErrorKind.NETWORK})


class Clock(Protocol):
    """Where the client reads time and sleeps. ``now`` is aware UTC."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()

#: Builds the bucket of one limiter from its name (``ratelimit_<service>_<fingerprint>``,
#: a valid SQL table name) and its rates.
BucketFactory = Callable[[str, Sequence[Rate]], AbstractBucket]


class _ClockedMemoryBucket(InMemoryBucket):
    """pyrate-limiter's in-memory bucket, timed by our clock so tests can move time."""

    def __init__(self, rates: Sequence[Rate], clock: Clock) -> None:
        super().__init__(list(rates))
        self._time_source = clock

    def now(self) -> int:
        return int(self._time_source.monotonic() * 1000)


def memory_buckets(clock: Clock = SYSTEM_CLOCK) -> BucketFactory:
    """Buckets in this process's memory (the default)."""
    return lambda name, rates: _ClockedMemoryBucket(rates, clock)


class ServiceLimiter:
    """The pace of one service and key: a pyrate-limiter ``Limiter`` over one bucket."""

    def __init__(self, name: str, rates: Sequence[Rate], bucket: AbstractBucket) -> None:
        self.name = name
        self.rates = tuple(rates)
        self._bucket = bucket
        self._limiter = Limiter(bucket)

    def try_acquire(self) -> tuple[float, Rate | None]:
        """Take a slot now: ``(0, None)``, or ``(seconds to wait, the rate that is full)``.

        Never blocks. Another thread may take the slot that frees up, so a caller that
        waited asks again.
        """
        if self._limiter.try_acquire(self.name, blocking=False) is True:
            return 0.0, None
        failing = self._bucket.failing_rate
        # The bucket's own clock: a shared bucket times items by a clock all processes share.
        probe = RateItem(self.name, self._bucket.now(), 1)  # type: ignore[no-untyped-call]
        wait_ms = self._bucket.waiting(probe)
        if not isinstance(wait_ms, int):
            raise TypeError(f"bucket of {self.name} is asynchronous; only sync buckets work here")
        # The buffer covers millisecond rounding and the jitter between here and the server.
        return max(wait_ms, 1) / 1000 + _WAIT_BUFFER_SECONDS, failing

    def close(self) -> None:
        self._limiter.close()


class LimiterRegistry:
    """The limiters of a process, one per (service, key fingerprint, rate setting).

    Within one process the settings do not change, so this is one limiter per service
    and key; a second rate setting (tests, a library user with two configurations) gets
    its own limiter rather than changing the pace of clients already running.
    """

    def __init__(
        self, bucket_factory: BucketFactory | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.clock = clock
        self._bucket_factory = bucket_factory or memory_buckets(clock)
        self._limiters: dict[tuple[str, str, str], ServiceLimiter] = {}
        self._lock = threading.Lock()

    def limiter(
        self, service: str, api_key: SecretStr | None, rates: Sequence[Rate]
    ) -> ServiceLimiter:
        """The limiter of ``service`` used with ``api_key``, created on first use."""
        key_print = fingerprint(api_key)
        rates_key = ",".join(f"{rate.limit}/{rate.interval}" for rate in rates)
        with self._lock:
            found = self._limiters.get((service, key_print, rates_key))
            if found is None:
                name = f"ratelimit_{service}_{key_print}"
                found = ServiceLimiter(name, rates, self._bucket_factory(name, rates))
                self._limiters[(service, key_print, rates_key)] = found
            return found

    def close(self) -> None:
        """Stop every limiter's background leak thread and forget them."""
        with self._lock:
            limiters, self._limiters = list(self._limiters.values()), {}
        for limiter in limiters:
            limiter.close()


DEFAULT_LIMITERS = LimiterRegistry()


class ServiceClient:
    """Sends one service's lookups, paced, retried and paused as the module describes.

    Thread-safe: lookups may run in several threads at once; they share the limiter,
    the pause and the stop.
    """

    def __init__(
        self,
        service: Service,
        settings: ServiceSettings,
        *,
        limiters: LimiterRegistry | None = None,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if service.name != settings.name:
            raise ValueError(f"settings of {settings.name} given to the {service.name} client")
        registry = limiters or DEFAULT_LIMITERS
        self.service = service
        self.settings = settings
        self._clock = registry.clock
        self._limiter = registry.limiter(settings.name, settings.api_key, settings.rates)
        self._http = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._paused_until: datetime | None = None
        self._pause_reason = SkipReason.BACKING_OFF
        self._pause_cause = ""
        self._stopped: SkipReason | None = None
        self._stop_message = ""
        #: Queries left on the account, when the service says (Spur's x-balance-remaining).
        self.balance_remaining: int | None = None
        #: Requests that reached the network (each retry counts).
        self.requests_sent = 0

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: EnrichmentSettings,
        *,
        limiters: LimiterRegistry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> ServiceClient:
        """The client of service ``name`` configured by ``settings``.

        Raises:
            KeyError: ``name`` is not a known service.
        """
        resolved = settings.service_settings(name)
        return cls(build_service(resolved), resolved, limiters=limiters, transport=transport)

    def __repr__(self) -> str:
        return f"ServiceClient({self.service.name}, base_url={self.settings.base_url!r})"

    @property
    def paused_until(self) -> datetime | None:
        """The end of the current pause, or None when the service is not paused.

        A service stopped for the run is not "paused": see :attr:`stopped`.
        """
        with self._lock:
            until = self._paused_until
        return until if until is not None and until > self._clock.now() else None

    @property
    def stopped(self) -> SkipReason | None:
        """Why the service was stopped for the run (auth_failed, quota_spent), or None."""
        return self._stopped

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The lookup ---------------------------------------------------------------------

    def lookup(self, key: str | None, endpoint: str | None = None) -> Outcome:
        """Look ``key`` up (at ``endpoint``, default the service's first). Never raises
        for anything the network or the service does; every path ends in an Outcome.

        Raises:
            ValueError: ``endpoint`` is not one the service offers.
        """
        endpoint = self.service.resolve_endpoint(endpoint)
        local = self.service.check(key, endpoint)
        if local is not None:
            return replace(local, checked_at=self._clock.now())
        key = self.service.normalize_key(key or "", endpoint)
        if not self.settings.enabled:
            return self._skip(
                key, SkipReason.SERVICE_DISABLED, f"{self.service.name}_enabled is off"
            )

        spec = self.service.build_request(key, endpoint)
        attempt = 0
        while True:
            blocked = self._wait_for_turn(key)
            if blocked is not None:
                return blocked

            outcome, response = self._send(spec, key, endpoint)
            delay, note = self._react(outcome, response, attempt)
            last_try = attempt >= self.settings.max_retries
            if delay is None or last_try or delay > self.settings.max_wait_seconds:
                if delay is not None and attempt > 0:
                    note = f"{note}; gave up after {attempt + 1} attempts".lstrip("; ")
                return self._finish(outcome, note)

            logger.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)",
                self.service.name,
                self._bare(outcome),
                delay,
                attempt + 2,
                self.settings.max_retries + 1,
            )
            self._clock.sleep(delay)
            attempt += 1

    def _wait_for_turn(self, key: str) -> Outcome | None:
        """Wait for the pause and the rate limiter, or the skipped outcome if too long."""
        while True:
            if self._stopped is not None:
                return self._skip(key, self._stopped, self._stop_message)

            now = self._clock.now()
            with self._lock:
                until, reason, cause = self._paused_until, self._pause_reason, self._pause_cause
            if until is not None and until > now:
                remaining = (until - now).total_seconds()
                if remaining > self.settings.max_wait_seconds:
                    return self._skip(key, reason, f"paused until {_iso(until)} after {cause}")
                self._clock.sleep(remaining)
                continue

            wait, full_rate = self._limiter.try_acquire()
            if wait == 0:
                return None
            if wait > self.settings.max_wait_seconds:
                daily = full_rate is not None and full_rate.interval >= _DAY_MS
                return self._skip(
                    key,
                    SkipReason.QUOTA_SPENT if daily else SkipReason.BACKING_OFF,
                    f"rate limit {self.settings.rate_limit} reached; next request possible "
                    f"at {_iso(now + timedelta(seconds=wait))}",
                )
            logger.debug("%s: waiting %.2f s for the rate limit", self.service.name, wait)
            self._clock.sleep(wait)

    def _send(
        self, spec: RequestSpec, key: str, endpoint: str
    ) -> tuple[Outcome, ServiceResponse | None]:
        """One request. Transport failures become timeout/network outcomes."""
        url = f"{self.settings.base_url}{spec.path}"
        headers = {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in spec.headers.items()
        }
        form = dict(spec.form) if spec.form is not None else None
        with self._lock:
            self.requests_sent += 1

        started = time.perf_counter()
        try:
            reply = self._http.request(spec.method, url, headers=headers, data=form)
        except httpx.TimeoutException as exc:
            latency = _elapsed_ms(started)
            logger.debug("%s %s -> timeout after %d ms", spec.method, url, latency)
            message = (
                f"no answer within {self.settings.timeout_seconds:g} s ({type(exc).__name__})"
            )
            return self._failed(key, ErrorKind.TIMEOUT, message, latency), None
        except httpx.TransportError as exc:
            latency = _elapsed_ms(started)
            logger.debug("%s %s -> %s after %d ms", spec.method, url, type(exc).__name__, latency)
            message = f"{type(exc).__name__}: {safe_text(str(exc))}"
            return self._failed(key, ErrorKind.NETWORK, message, latency), None
        except httpx.DecodingError as exc:
            latency = _elapsed_ms(started)
            message = f"body could not be decoded ({type(exc).__name__})"
            return self._failed(key, ErrorKind.UNPARSEABLE, message, latency), None

        latency = _elapsed_ms(started)
        logger.debug("%s %s -> HTTP %d in %d ms", spec.method, url, reply.status_code, latency)
        response = ServiceResponse(
            service=self.service.name,
            key=key,
            endpoint=endpoint,
            status_code=reply.status_code,
            headers={name.lower(): value for name, value in reply.headers.items()},
            content=reply.content,
        )
        self._note_balance(response)
        try:
            outcome = self.service.parse(response)
        except (ValueError, TypeError, KeyError, AttributeError):
            # A parser bug must not end the run; it is logged and the body not cached.
            logger.exception(
                "%s: the parser failed on HTTP %d", self.service.name, reply.status_code
            )
            outcome = self.service.unparseable(response, "the parser failed on this body")
        # Scrubbed here, before anything logs it: server text could echo the key.
        clean = self._clean(outcome.message) if outcome.message else None
        stamped = replace(
            outcome, latency_ms=latency, http_status=reply.status_code, message=clean
        )
        return stamped, response

    def _react(
        self, outcome: Outcome, response: ServiceResponse | None, attempt: int
    ) -> tuple[float | None, str]:
        """Update pause and stop from an outcome: (seconds before a retry or None, note)."""
        if outcome.status != Status.ERROR:
            return None, ""
        kind = ErrorKind(outcome.reason or "")
        now = self._clock.now()

        if kind == ErrorKind.AUTH:
            self._stop(SkipReason.AUTH_FAILED, f"{self._bare(outcome)}; the key is not used again")
            return None, ""
        if kind == ErrorKind.QUOTA:
            resets = self.service.quota_resets_at(response, now) if response else None
            if resets is None:
                self._stop(SkipReason.QUOTA_SPENT, f"{self._bare(outcome)}; stopped for this run")
                return None, "stopped for this run"
            self._pause(resets, SkipReason.QUOTA_SPENT, "a spent quota")
            logger.warning("%s: quota spent; paused until %s", self.service.name, _iso(resets))
            return (resets - now).total_seconds(), f"paused until {_iso(resets)}"

        header = response.header("Retry-After") if response else None
        told = retry_after_seconds(header, now)
        if kind == ErrorKind.RATE_LIMITED:
            wait = told
            if wait is None:
                wait = self.service.default_retry_after_seconds or self._backoff(attempt)
            until = now + timedelta(seconds=wait)
            self._pause(until, SkipReason.BACKING_OFF, "HTTP 429")
            logger.warning(
                "%s: HTTP 429; pausing %.0f s until %s%s",
                self.service.name,
                wait,
                _iso(until),
                " as Retry-After asks" if told is not None else "",
            )
            return wait, f"paused until {_iso(until)}"
        server_error = kind == ErrorKind.HTTP_STATUS and (outcome.http_status or 0) >= 500
        if kind in _RETRYABLE or server_error:
            return (told if told is not None else self._backoff(attempt)), ""
        return None, ""

    # State and helpers ----------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(
            self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2.0**attempt
        )
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _pause(self, until: datetime, reason: SkipReason, cause: str) -> None:
        with self._lock:
            if self._paused_until is None or until > self._paused_until:
                self._paused_until, self._pause_reason, self._pause_cause = until, reason, cause

    def _stop(self, reason: SkipReason, message: str) -> None:
        with self._lock:
            first = self._stopped is None
            self._stopped, self._stop_message = reason, message
        if first:
            logger.error("%s stopped for this run: %s", self.service.name, message)

    def _note_balance(self, response: ServiceResponse) -> None:
        remaining = response.header("x-balance-remaining")
        if remaining is not None and remaining.strip().isdigit():
            self.balance_remaining = int(remaining.strip())
            logger.debug("%s: %s queries left", self.service.name, self.balance_remaining)

    def _skip(self, key: str, reason: SkipReason, message: str) -> Outcome:
        return Outcome(
            self.service.name,
            key,
            Status.SKIPPED,
            reason=str(reason),
            message=self._clean(f"{self.service.name}: {message}"),
            checked_at=self._clock.now(),
        )

    def _failed(self, key: str, kind: ErrorKind, message: str, latency: int) -> Outcome:
        return Outcome(
            self.service.name,
            key,
            Status.ERROR,
            reason=str(kind),
            message=self._clean(f"{self.service.name}: {message}"),
            latency_ms=latency,
        )

    def _finish(self, outcome: Outcome, note: str) -> Outcome:
        message = outcome.message
        if message is not None:
            message = self._clean(f"{message}; {note}" if note else message)
        return replace(outcome, message=message, checked_at=self._clock.now())

    def _bare(self, outcome: Outcome) -> str:
        """The outcome's message without the service name in front."""
        return (outcome.message or "").removeprefix(f"{self.service.name}: ")

    def _clean(self, text: str) -> str:
        return scrub(text, [self.settings.api_key])


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
