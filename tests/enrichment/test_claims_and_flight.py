"""Row claims and single flight on real SQLite and PostgreSQL, without processes: a clock
the test moves for leases, threads with their own connections for concurrent flights."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import EnrichmentFlight, table_of
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.claims import CLAIMS, PageClaims, RowClaims
from cowrieprocessor.enrichment.flight import Flight, SingleFlight, Source
from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, Status

FLIGHTS = table_of(EnrichmentFlight)
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.moment = T0

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def wide(db_url: str) -> Iterator[Engine]:
    """An engine at the newest schema with room for a dozen threads' connections."""
    engine = create_engine(db_url, pool_size=12, max_overflow=4)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


# Claims --------------------------------------------------------------------------------


def test_claims_split_rows_and_a_dead_worker_s_rows_return_after_the_lease(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=30)
    first = RowClaims(engine, "run-1", worker="w1", lease=lease, now=clock)
    second = RowClaims(engine, "run-1", worker="w2", lease=lease, now=clock)

    assert first.claim("sessions", ["1", "2", "3"]) == {"1", "2", "3"}
    assert second.claim("sessions", ["2", "3", "4"]) == {"4"}

    # w1 writes row 1 and dies holding 2 and 3.
    with engine.begin() as conn:
        assert first.finish(conn, "sessions", {"1"}) == {"1"}
    clock.moment += lease - timedelta(seconds=1)
    assert second.claim("sessions", ["1", "2", "3"]) == set()
    assert second.unfinished("sessions") == ([], T0 + lease)

    clock.moment += timedelta(seconds=1)
    # Every lease of the run has ended, w2's own on row 4 too (it is still w2's to write).
    assert second.unfinished("sessions") == (["2", "3", "4"], None)
    assert second.claim("sessions", ["1", "2", "3"]) == {"2", "3"}

    # The dead worker comes back: its rows are no longer its own to write.
    with engine.begin() as conn:
        assert first.finish(conn, "sessions", {"2", "3"}) == set()
    assert first.lost == 2
    with engine.begin() as conn:
        assert second.finish(conn, "sessions", {"2", "3", "4"}) == {"2", "3", "4"}
    assert second.unfinished("sessions") == ([], None)


def test_finished_claims_keep_a_run_off_and_let_the_next_run_in(engine: Engine) -> None:
    clock = Clock()
    worker = RowClaims(engine, "run-1", worker="w1", now=clock)
    same_run = RowClaims(engine, "run-1", worker="w2", now=clock)
    next_run = RowClaims(engine, "run-2", worker="w3", now=clock)
    worker.claim("files", ["7"])
    worker.release("files", ["7"])

    assert same_run.claim("files", ["7"]) == set()
    assert next_run.claim("files", ["7"]) == {"7"}


def test_rows_a_dead_run_held_are_waited_for_and_taken_over_by_the_next_run(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=30)
    dead = RowClaims(engine, "run-1", worker="w1", lease=lease, now=clock)
    other = RowClaims(engine, "run-2", worker="w2", lease=lease, now=clock)
    rerun = RowClaims(engine, "run-3", worker="w3", lease=lease, now=clock)
    assert dead.claim("sessions", ["1", "2"]) == {"1", "2"}
    clock.moment += timedelta(seconds=10)
    assert other.claim("sessions", ["3"]) == {"3"}

    # run-1 lost its database holding rows 1 and 2; run-2 is alive and working on row 3.
    assert rerun.claim("sessions", ["1", "2", "3", "4"]) == {"4"}
    assert rerun.elsewhere == {"sessions": {"1", "2", "3"}}
    with engine.begin() as conn:
        assert rerun.finish(conn, "sessions", {"4"}) == {"4"}
    assert rerun.unfinished("sessions") == ([], T0 + lease)

    with engine.begin() as conn:  # run-2 writes its row: nothing left to wait for there
        assert other.finish(conn, "sessions", {"3"}) == {"3"}
    clock.moment = T0 + lease
    assert rerun.unfinished("sessions") == (["1", "2"], None)
    assert rerun.elsewhere == {"sessions": {"1", "2"}}
    assert rerun.claim("sessions", ["1", "2"]) == {"1", "2"}
    assert rerun.elsewhere == {"sessions": set()}
    with engine.begin() as conn:
        assert rerun.finish(conn, "sessions", {"1", "2"}) == {"1", "2"}
    assert rerun.unfinished("sessions") == ([], None)


def test_the_sweep_finishes_a_dead_worker_s_claim_on_a_row_deleted_since(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=30)
    dead = RowClaims(engine, "run-1", worker="w1", lease=lease, now=clock)
    alive = PageClaims(RowClaims(engine, "run-1", worker="w2", lease=lease, now=clock))
    assert dead.claim("files", ["1", "2"]) == {"1", "2"}
    clock.moment += lease
    table = {"1": "row one"}  # row 2 was deleted while its claim's lease ran out
    worked: list[list[str]] = []

    def do_page(rows: list[str], sweep: bool) -> bool:
        assert sweep and len(worked) < 3, f"the sweep keeps coming back: {worked}"
        keys = {key for key, value in table.items() if value in rows}
        claimed = alive.claims.claim("files", keys)
        alive.claims.release("files", claimed)
        worked.append(sorted(claimed))
        return False

    def rows_of(keys: list[str]) -> list[str]:
        return [table[key] for key in keys if key in table]

    def key_of(row: str) -> str:
        return next(key for key, value in table.items() if value == row)

    alive.sweep("files", rows_of, key_of, do_page)

    assert worked == [["1"]]
    assert alive.claims.unfinished("files") == ([], None)
    with engine.begin() as conn:
        claims = conn.execute(
            select(CLAIMS.c.row_key, CLAIMS.c.claimed_by, CLAIMS.c.finished_at).where(
                CLAIMS.c.kind == "files"
            )
        ).all()
    assert sorted((key, by, done is not None) for key, by, done in claims) == [
        ("1", "w2", True),
        ("2", "w2", True),
    ]


def test_given_back_claims_are_free_at_once_and_renewal_moves_the_lease(
    engine: Engine,
) -> None:
    clock = Clock()
    lease = timedelta(seconds=10)
    first = RowClaims(engine, "run-1", worker="w1", lease=lease, now=clock)
    second = RowClaims(engine, "run-1", worker="w2", lease=lease, now=clock)
    first.claim("passwords", ["aa", "bb"])

    clock.moment += timedelta(seconds=8)
    first.renew("passwords", ["aa", "bb"])
    clock.moment += timedelta(seconds=8)
    assert second.claim("passwords", ["aa", "bb"]) == set()

    first.give_back("passwords", ["bb"])
    assert second.claim("passwords", ["aa", "bb"]) == {"bb"}
    # Row aa: renewed at 8 s until 18 s; row bb: w2 until 26 s. The earliest end counts.
    assert first.unfinished("passwords") == ([], T0 + timedelta(seconds=18))


def test_old_claims_are_removed_but_placeholders_kept(engine: Engine) -> None:
    clock = Clock()
    worker = RowClaims(engine, "run-1", worker="w1", now=clock)
    worker.claim("files", ["1", "2"])
    worker.release("files", ["1"])
    clock.moment += timedelta(days=2)

    assert worker.remove_old() == 2
    assert worker.claim("files", ["1", "2"]) == {"1", "2"}


# Single flight -------------------------------------------------------------------------


def _success(key: str) -> Outcome:
    return Outcome("dshield", key, Status.SUCCESS, data={"attacks": 3}, checked_at=T0)


def _failure(key: str) -> Outcome:
    return Outcome(
        "dshield", key, Status.ERROR, reason=str(ErrorKind.TIMEOUT), message="dshield: slow"
    )


def _fly_together(
    engine: Engine, cache: EnrichmentDatabaseCache, answer: Outcome, count: int
) -> tuple[list[tuple[Outcome, Source]], list[int]]:
    """``count`` threads miss the same key at once; each has its own SingleFlight."""
    fetches: list[int] = []
    results: list[tuple[Outcome, Source]] = []
    lock = threading.Lock()
    start = threading.Barrier(count)

    def fetch() -> Outcome:
        with lock:
            fetches.append(1)
        time.sleep(0.4)
        return answer

    def reread() -> Outcome | None:
        entry = cache.get_cached("dshield", answer.key)
        return entry.outcome if entry is not None else None

    def worker(index: int) -> None:
        flight = SingleFlight(engine, owner=f"t{index}", poll_interval=0.02)
        start.wait()
        found = flight.run("dshield", answer.key, Flight(reread, fetch, cache.store_cached))
        with lock:
            results.append(found)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, fetches


def test_one_worker_asks_and_the_others_read_its_answer(wide: Engine) -> None:
    cache = EnrichmentDatabaseCache(wide)
    answer = _success("45.84.107.4")

    results, fetches = _fly_together(wide, cache, answer, 6)

    assert len(fetches) == 1
    assert sorted(source for _, source in results) == [Source.FETCHED] + [Source.SHARED] * 5
    assert {outcome.data["attacks"] for outcome, _ in results} == {3}
    with wide.connect() as conn:
        # A success leaves no flight row behind: the cache answers from now on.
        assert conn.scalar(select(func.count()).select_from(FLIGHTS)) == 0


def test_waiters_of_a_failed_flight_take_its_error_and_the_next_arrival_retries_once(
    wide: Engine,
) -> None:
    cache = EnrichmentDatabaseCache(wide)
    answer = _failure("45.84.107.5")

    results, fetches = _fly_together(wide, cache, answer, 6)

    assert len(fetches) == 1
    assert (
        sorted(source for _, source in results) == [Source.FETCHED] + [Source.SHARED_FAILURE] * 5
    )
    shared = [outcome for outcome, source in results if source == Source.SHARED_FAILURE]
    assert {(o.status, o.reason, o.message) for o in shared} == {
        (Status.ERROR, "timeout", "dshield: slow")
    }
    assert cache.get_cached("dshield", answer.key) is None

    # Later arrivals were not waiting when it failed: one of them asks again.
    results, fetches = _fly_together(wide, cache, answer, 3)
    assert len(fetches) == 1
    assert (
        sorted(source for _, source in results) == [Source.FETCHED] + [Source.SHARED_FAILURE] * 2
    )
