"""``cowrie-enrich refresh --workers N``: N refresh processes sharing one database.

:func:`refresh_with_workers` starts N worker processes (forked from a ``forkserver``
that has imported the package and nothing else, so no state is inherited: each opens its
own engine, cache, clients and limiters) that run
:func:`~cowrieprocessor.enrichment.refresh.refresh` as workers of one run:

* rows are split by claims with leases (:mod:`.claims`), so each row is enriched once
  and a worker that dies has its rows taken over when its lease ends;
* cache misses go through single flight (:mod:`.flight`), so a key is asked once;
* rate limits live in the database (:mod:`.shared_limits`), one pace per API key;
* row limits (``--sessions``/``--files``/``--passwords``) are one budget in shared memory
  (:func:`shared_budget`), so they bound all the workers together, not each worker.

Several hosts join one run by giving the same ``run_id`` (``--run-id``); their workers
then share claims as if they were one pool, but each host's command keeps its own row
limits (the budget lives in that host's memory). Each worker keeps its own status file under
``<status_dir>/workers/<n>/``; the parent merges them into ``<status_dir>/
enrichment_refresh.json`` every second and at the end.

Stopping: each worker holds the read end of a pipe whose only write end is the parent's.
The parent closes it when it is interrupted (or fails), and it closes by itself when the
parent dies, even by SIGKILL; either way each worker sees end of file and stops before
its next lookup or claim, writes its status as interrupted and gives back the claims of
the page it abandoned (its rows were not written; their answers are in the cache), so a
rerun takes them at once. Workers are not the parent's children (the forkserver's), so
nothing else would tell them.

Connections: each worker holds at most ``pool_size + max_overflow`` connections of its
engine plus, on PostgreSQL, :data:`~.shared_limits.PG_POOL_MAX` for the rate-limit
buckets and the database cache's read connection: :data:`CONNECTIONS_PER_WORKER` (see
docs/refresh.md for sizing against ``max_connections``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import orjson

from cowrieprocessor.config import Settings
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.errors import error_text, lost_database
from cowrieprocessor.enrichment.budget import RowBudget
from cowrieprocessor.enrichment.claims import DEFAULT_LEASE, RowClaims, new_run_id
from cowrieprocessor.enrichment.flight import SingleFlight
from cowrieprocessor.enrichment.refresh import RefreshOptions, refresh
from cowrieprocessor.enrichment.shared_limits import PG_POOL_MAX, shared_limiters
from cowrieprocessor.enrichment.status import STATUS_FILE_NAME, StatusFile, iso_utc

logger = logging.getLogger(__name__)

#: Engine pool of each worker: the page, claim and write connection, and one for a
#: single-flight lock held while the cache is written on another.
WORKER_POOL_SIZE = 2
WORKER_MAX_OVERFLOW = 1
#: The database cache's own read connection (one per reading thread; a worker has one).
CACHE_READ_CONNECTIONS = 1
#: Connections one worker may open on PostgreSQL, all pools together.
CONNECTIONS_PER_WORKER = (
    WORKER_POOL_SIZE + WORKER_MAX_OVERFLOW + PG_POOL_MAX + CACHE_READ_CONNECTIONS
)
#: The key of a worker's message saying it lost the database (instead of a summary).
_LOST = "database_lost"
#: A worker told to stop finishes the lookup in hand; still busy this long after (a
#: retry, a rate-limit wait), it is interrupted where it is, and as long again later it
#: ends at once.
STOP_GRACE_SECONDS = 3.0
#: How long an interrupted parent waits for its workers before terminating them.
STOP_WAIT_SECONDS = 10.0

_COUNTED = ("memo_hits", "cache_hits", "cache_misses", "attempted", "failed", "api_calls")


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs; pickled to the child."""

    index: int
    settings: Settings
    options: RefreshOptions
    run_id: str
    lease_seconds: float
    status_dir: Path
    log_level: int = logging.WARNING


@dataclass
class PoolResult:
    """The merged outcome of all workers; reads like :class:`RefreshResult`."""

    summary: dict[str, Any]
    died: list[int] = field(default_factory=list)
    #: One line from a worker that ended because the database could no longer be used
    #: (connection lost, server gone), or None; such a worker is also in ``died``.
    database_lost: str | None = None

    @property
    def failed_services(self) -> list[str]:
        return list(self.summary["failed_services"])

    @property
    def exit_code(self) -> int:
        """1 when a service failed for every lookup or any worker died, else 0."""
        return 1 if self.failed_services or self.died else 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.summary)


def refresh_with_workers(
    settings: Settings,
    options: RefreshOptions,
    workers: int,
    *,
    run_id: str | None = None,
    lease: timedelta = DEFAULT_LEASE,
    status_dir: Path | None = None,
    log_level: int = logging.WARNING,
) -> PoolResult:
    """Run ``workers`` worker processes over ``settings.db_url`` and merge their results.

    The row limits of ``options`` bound the run as a whole: the workers draw from one
    :func:`shared_budget`, so together they write at most that many rows of each kind
    (and look up no more). A worker that dies (killed, out of memory) does not stop
    the others: they take its rows over once its lease ends, and the result names it in
    ``died``.

    Raises:
        ValueError: ``workers`` is below 1.
        KeyboardInterrupt: after the workers were told to stop (each finishes the lookup
            in hand, keeps the pages it committed and gives back its other claims) and
            joined, at most :data:`STOP_WAIT_SECONDS` before the rest are terminated.
            Any other exception stops the workers the same way before it propagates.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    run_id = run_id or new_run_id()
    directory = status_dir if status_dir is not None else settings.status_dir
    # forkserver: one clean server process imports the package once and forks each
    # worker from it, so workers start in milliseconds instead of each importing
    # everything again (spawn), and inherit no threads, engines or sockets (fork would).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    results: Queue[tuple[int, dict[str, Any]]] = context.Queue()
    # Closing ``stop_writer`` (or this process ending) tells every worker to stop.
    stop_reader, stop_writer = context.Pipe(duplex=False)
    budget = shared_budget(context, options)
    specs = [
        WorkerSpec(i, settings, options, run_id, lease.total_seconds(), directory, log_level)
        for i in range(workers)
    ]
    processes = [
        context.Process(
            target=worker_main,
            args=(spec, results, stop_reader, budget),
            name=f"refresh-worker-{i}",
        )
        for i, spec in enumerate(specs)
    ]
    logger.info("refresh run %s: starting %d workers", run_id, workers)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    summaries: dict[int, dict[str, Any]] = {}
    lost: dict[int, str] = {}
    try:
        for process in processes:
            process.start()
        stop_reader.close()  # each worker has its own copy now
        while any(p.is_alive() for p in processes):
            _drain(results, summaries, lost, timeout=0.5)
            _write_merged(directory, specs, summaries, (started, started_at), "running")
        for process in processes:
            process.join()
        _drain(results, summaries, lost, timeout=0.1)
    except BaseException as error:
        # A second Ctrl-C or SIGTERM must not cut this short: the workers would be left
        # unwaited and the status file at "running". It takes 12 s at the most.
        with _signals_held():
            stop_writer.close()
            _stop(processes, results, summaries, lost)
            state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            _write_merged(directory, specs, summaries, (started, started_at), state)
        raise
    finally:
        stop_writer.close()

    died = [i for i, p in enumerate(processes) if i not in summaries or p.exitcode != 0]
    for index in died:
        if index in lost:  # the caller reports the loss, once for all workers
            logger.info("refresh worker %d lost the database: %s", index, lost[index])
        else:
            code = processes[index].exitcode
            logger.error("refresh worker %d ended with exit code %s", index, code)
    state = "failed" if died and len(died) == workers else "finished"
    merged = _write_merged(directory, specs, summaries, (started, started_at), state)
    merged["run_id"] = run_id
    merged["workers"] = workers
    merged["died"] = died
    if lost:
        merged["database_lost"] = lost[min(lost)]
    return PoolResult(merged, died, lost[min(lost)] if lost else None)


def shared_budget(context: BaseContext, options: RefreshOptions) -> RowBudget:
    """One :class:`~.budget.RowBudget` of ``options``' row limits for every worker that
    ``context`` starts (pass it in the process's arguments).

    The counts live in shared memory under one process-shared lock, so a take by one
    worker is seen by all at once and the rows taken by all never exceed the limit;
    rows a worker took and did not write go back to all. Splitting each limit into
    fixed shares instead would lose a dying worker's whole share (here it loses only
    the page it held) and would need a way to say "none" for a share of 0 (a limit
    below the number of workers), where 0 means no limit. A worker that dies keeps
    what it took for its page; the run then writes fewer rows than the limit, never
    more. The budget is this host's: workers joining the run from other hosts
    (``--run-id``) spend their own command's limits.
    """
    # A raw array and a lock of its own: a synchronized array would take the lock on
    # every read too, without the timeout RowBudget puts on it.
    return RowBudget(context.RawArray("q", RowBudget.limits(options)), context.Lock())


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM are ignored (main thread only; elsewhere no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(
    processes: Sequence[BaseProcess],
    results: Queue[tuple[int, dict[str, Any]]],
    summaries: dict[int, dict[str, Any]],
    lost: dict[int, str],
) -> None:
    """Wait for workers told to stop (reading what they send, so none blocks on a full
    queue), at most :data:`STOP_WAIT_SECONDS`; then terminate those left."""
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while any(p.is_alive() for p in processes if p.pid is not None):
        if time.monotonic() >= deadline:
            break
        _drain(results, summaries, lost, timeout=0.1)
    for process in processes:
        if process.pid is not None and process.is_alive():
            logger.warning("%s did not stop in time; terminating it", process.name)
            process.terminate()
            process.join(timeout=2)
            if process.is_alive():
                process.kill()


class _StopWatch:
    """In a worker: whether the parent said stop, by closing its end of the stop pipe
    or by dying (the pipe then closes by itself)."""

    def __init__(self, connection: Connection) -> None:
        self.requested = threading.Event()
        #: Set once the refresh has returned or raised: nothing left to interrupt.
        self.done = threading.Event()
        threading.Thread(
            target=self._watch, args=(connection,), name="stop-watch", daemon=True
        ).start()

    def check(self, *_: object) -> None:
        """Raise KeyboardInterrupt once told to stop (also a refresh progress callback:
        called after each row is looked up)."""
        if self.requested.is_set():
            raise KeyboardInterrupt("the refresh parent said stop")

    def _watch(self, connection: Connection) -> None:
        with contextlib.suppress(EOFError, OSError):
            connection.recv_bytes()  # nothing is ever sent: this returns at end of file
        self.requested.set()
        if self.done.wait(STOP_GRACE_SECONDS):
            return
        # Still inside one lookup (retries, a rate-limit wait): interrupt it there.
        logger.info("still busy %.0f s after stop; interrupting", STOP_GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(STOP_GRACE_SECONDS)
        # Reached only if the process is still running (this thread is a daemon).
        logger.warning("still running %.0f s after stop; ending", 2 * STOP_GRACE_SECONDS)
        os._exit(1)


class _StoppingClaims(RowClaims):
    """Claims that take no new page, and wait for no lease, once told to stop."""

    def __init__(self, stop: _StopWatch, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop = stop

    def claim(self, kind: str, keys: Any) -> set[str]:
        self.stop.check()
        return super().claim(kind, keys)

    def unfinished(self, kind: str) -> tuple[list[str], datetime | None]:
        self.stop.check()
        return super().unfinished(kind)


def worker_main(
    spec: WorkerSpec,
    results: Queue[tuple[int, dict[str, Any]]],
    stop: Connection,
    budget: RowBudget | None = None,
) -> None:
    """The body of one worker process: its own engine, limiters, claims and flight; the
    row limits drawn from ``budget`` (shared with the other workers; default: this
    worker's own, of ``spec.options``).

    Should the database fail (see :func:`~cowrieprocessor.db.errors.lost_database`), the
    worker sends the parent one line saying so instead of its summary and ends without
    a traceback; what it committed stays. Any other error ends it as a death. When the
    parent closes ``stop`` (or dies) the worker stops as if interrupted.
    """
    logging.basicConfig(
        level=spec.log_level,
        format="%(asctime)s %(processName)s %(levelname)s %(name)s %(message)s",
    )
    try:
        _work(spec, results, _StopWatch(stop), budget)
    except Exception as error:
        found = lost_database(error)
        if found is None:
            raise
        logger.debug("refresh worker %d lost the database", spec.index, exc_info=True)
        results.put((spec.index, {_LOST: error_text(found, spec.settings.db_url)}))


def _work(
    spec: WorkerSpec,
    results: Queue[tuple[int, dict[str, Any]]],
    stop: _StopWatch,
    budget: RowBudget | None,
) -> None:
    engine = create_engine(
        spec.settings.db_url, pool_size=WORKER_POOL_SIZE, max_overflow=WORKER_MAX_OVERFLOW
    )
    limiters = shared_limiters(spec.settings.db_url)
    claims = _StoppingClaims(
        stop, engine, spec.run_id, lease=timedelta(seconds=spec.lease_seconds)
    )
    try:
        if spec.index == 0:
            removed = claims.remove_old()
            if removed:
                logger.info("removed %d old claims", removed)
        result = refresh(
            engine,
            spec.settings,
            spec.options,
            limiters=limiters,
            status_dir=_worker_dir(spec.status_dir, spec.index),
            progress=stop.check,
            claims=claims,
            # A pending flight of a dead worker holds its waiters as long as a claim.
            flight=SingleFlight(engine, owner=claims.worker, lease=claims.lease),
            budget=budget,
        )
        stop.done.set()
        summary = result.as_dict()
        summary["lost_claims"] = claims.lost
        results.put((spec.index, summary))
    except KeyboardInterrupt:
        # Told to stop by the parent, or Ctrl-C (it reaches every worker): the status
        # file says interrupted, the committed pages stay, the parent reports the run.
        stop.done.set()
        logger.info("refresh worker %d interrupted", spec.index)
        _give_back_quietly(claims, spec.index)
    finally:
        stop.done.set()
        limiters.close()
        engine.dispose()


def _give_back_quietly(claims: RowClaims, index: int) -> None:
    try:
        freed = claims.give_back_all()
    except Exception:  # the database is gone: the leases end by themselves
        logger.debug("refresh worker %d could not give its claims back", index, exc_info=True)
        return
    if freed:
        logger.info("refresh worker %d gave back %d unwritten claims", index, freed)


def _worker_dir(directory: Path, index: int) -> Path:
    return directory / "workers" / str(index)


def _drain(
    results: Queue[tuple[int, dict[str, Any]]],
    into: dict[int, dict[str, Any]],
    lost: dict[int, str],
    timeout: float,
) -> None:
    """Move what workers sent into ``into`` (summaries) and ``lost`` (database lost)."""
    try:
        message = results.get(timeout=timeout)
    except queue.Empty:
        return
    while True:
        index, summary = message
        if _LOST in summary:
            lost[index] = summary[_LOST]
        else:
            into[index] = summary
        try:
            message = results.get_nowait()
        except queue.Empty:
            return


def _write_merged(
    directory: Path,
    specs: list[WorkerSpec],
    finals: dict[int, dict[str, Any]],
    started: tuple[float, datetime],
    state: str,
) -> dict[str, Any]:
    """Merge each worker's final summary, or its status file while it runs, under the
    parent's pid and the run's start (what a monitor checks for a run that died)."""
    parts: list[dict[str, Any]] = []
    for spec in specs:
        if spec.index in finals:
            parts.append(finals[spec.index])
            continue
        path = _worker_dir(directory, spec.index) / STATUS_FILE_NAME
        try:
            parts.append(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            continue
    merged = merge_summaries(parts, time.monotonic() - started[0], state)
    options = specs[0].options
    services = next((p["services"] for p in parts if "services" in p), list(options.services))
    merged = {
        **{key: merged[key] for key in ("v", "job", "state")},
        "pid": os.getpid(),
        "started_at": iso_utc(started[1]),
        "updated_at": iso_utc(datetime.now(UTC)),
        "mode": str(options.mode),
        "services": services,
        **merged,
    }
    StatusFile(directory / STATUS_FILE_NAME, lambda: merged).write()
    return merged


def merge_summaries(parts: list[dict[str, Any]], elapsed: float, state: str) -> dict[str, Any]:
    """One status document for several workers: counts added, totals shared.

    ``cache.tiers`` (the hybrid cache's hits and misses per tier and service) is summed
    like the other counts and present when any part has it, in the single-process shape.
    """
    rows: dict[str, dict[str, int]] = {}
    outcomes: dict[str, dict[str, int]] = {}
    lookups: dict[str, dict[str, Any]] = {}
    last_errors: dict[str, str] = {}
    for part in parts:
        for kind, counts in part.get("rows", {}).items():
            mine = rows.setdefault(kind, {"total": 0, "scanned": 0, "enriched": 0})
            mine["total"] = max(mine["total"], counts["total"])
            mine["scanned"] += counts["scanned"]
            mine["enriched"] += counts["enriched"]
        for service, labels in part.get("outcomes", {}).items():
            mine_out = outcomes.setdefault(service, {})
            for label, number in labels.items():
                mine_out[label] = mine_out.get(label, 0) + number
        for service, stats in part.get("lookups", {}).items():
            merged = lookups.setdefault(
                service, {name: 0 for name in (*_COUNTED, "shared")} | {"last_error": None}
            )
            for name in (*_COUNTED, "shared"):
                merged[name] += int(stats.get(name, 0))
            if stats.get("last_error"):
                merged["last_error"] = stats["last_error"]
        last_errors.update(part.get("last_errors", {}))
    tiers = _merge_tiers([p["cache"]["tiers"] for p in parts if "tiers" in p.get("cache", {})])
    failed = sorted(
        name for name, s in lookups.items() if s["attempted"] > 0 and s["failed"] == s["attempted"]
    )
    api_calls = sum(s["api_calls"] for s in lookups.values())
    scanned = sum(r["scanned"] for r in rows.values())
    elapsed = max(elapsed, 1e-6)
    return {
        "v": 1,
        "job": "enrichment_refresh",
        "state": state,
        "elapsed_seconds": round(elapsed, 3),
        "rows": rows,
        "outcomes": {name: dict(sorted(c.items())) for name, c in sorted(outcomes.items())},
        "lookups": dict(sorted(lookups.items())),
        "cache": {
            "hits": sum(s["cache_hits"] for s in lookups.values()),
            "misses": sum(s["cache_misses"] for s in lookups.values()),
            "repeats_in_run": sum(s["memo_hits"] for s in lookups.values()),
            "shared": sum(s["shared"] for s in lookups.values()),
            **({"tiers": tiers} if tiers is not None else {}),
        },
        "api_calls": api_calls,
        "rate_rows_per_second": round(scanned / elapsed, 2),
        "rate_api_calls_per_second": round(api_calls / elapsed, 2),
        "eta_seconds": None,
        "last_errors": dict(sorted(last_errors.items())),
        "lost_claims": sum(int(p.get("lost_claims", 0)) for p in parts),
        "ok": not failed,
        "failed_services": failed,
    }


def _merge_tiers(
    parts: list[dict[str, dict[str, dict[str, int]]]],
) -> dict[str, dict[str, dict[str, int]]] | None:
    """The workers' ``cache.tiers`` summed: {tier: {service: {count: n}}}, every tier any
    worker reported (an empty one stays, as in a single process); None without any."""
    if not parts:
        return None
    merged: dict[str, dict[str, dict[str, int]]] = {}
    for part in parts:
        for tier, services in part.items():
            mine = merged.setdefault(tier, {})
            for service, counts in services.items():
                into = mine.setdefault(service, {})
                for name, number in counts.items():
                    into[name] = into.get(name, 0) + int(number)
    return {tier: dict(sorted(services.items())) for tier, services in merged.items()}
