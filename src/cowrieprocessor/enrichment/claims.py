"""Row claims with leases: how many refresh workers split one database's rows.

Every worker (a process on this host or on another host pointed at the same database)
walks the same pages of rows. Before it looks a page up it *claims* the rows that need
work: it writes its name and a lease end into ``enrichment_claims`` for each of them, in
one short transaction, and then works without holding any lock. The transaction that
writes a row's outcomes also marks its claim finished (:meth:`RowClaims.finish`), so a
claim is finished exactly when its row is written.

Concurrency:

* PostgreSQL: the claim rows are read ``FOR UPDATE SKIP LOCKED``; a claim row another
  worker is claiming at this very moment is skipped (that worker takes it), never
  waited for. A placeholder claim row is first inserted with ``ON CONFLICT DO NOTHING``
  in sorted key order, so two workers inserting the same keys cannot deadlock.
* SQLite: the engine opens every transaction with ``BEGIN IMMEDIATE``, so claim
  transactions are serialised by the write lock (waiting at most the busy timeout);
  ``SKIP LOCKED`` is neither available nor needed.

A claim can be taken when its row has no claim, when its lease has ended without the
row being written (the worker died or hung: its work is taken over), or when it was
finished by another run (the row's own state then decides). A claim finished in the
same run keeps the row from being done twice. Rows another run holds are not skipped
for good: at the end of its walk a worker waits for their leases and takes over those
left unfinished, so a rerun after a run that died (or lost its database) completes. A
worker whose lease ended and whose row was taken over does not write that row:
:meth:`RowClaims.finish` tells it which rows are still its own.

Leases are timed by this host's clock; hosts sharing a database must keep their clocks
in step (NTP), within a small part of the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cowrieprocessor.db.engine import is_postgres
from cowrieprocessor.db.models import EnrichmentClaim, table_of

logger = logging.getLogger(__name__)

CLAIMS = table_of(EnrichmentClaim)

#: Lease of a claim unless told otherwise: long enough for a page of lookups at the
#: default rates; leases are renewed while a page is worked on.
DEFAULT_LEASE = timedelta(minutes=5)
#: Finished claims whose lease ended this long ago are removed when a run starts.
CLAIM_RETENTION = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def worker_name() -> str:
    """A name that tells this process apart from every other: host, pid, random part."""
    host = socket.gethostname()[:32]
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_run_id() -> str:
    """A fresh run id, for a run whose workers all start here."""
    return uuid.uuid4().hex


class RowClaims:
    """One worker's claims in one run.

    Args:
        engine: the database being refreshed (its pool is shared with the refresh job).
        run_id: the run all cooperating workers share.
        worker: this worker's name (default :func:`worker_name`).
        lease: how long a claim stays the worker's without being renewed.
        now: the clock (aware UTC).
    """

    def __init__(
        self,
        engine: Engine,
        run_id: str,
        *,
        worker: str | None = None,
        lease: timedelta = DEFAULT_LEASE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        self.engine = engine
        self.run_id = run_id
        self.worker = worker or worker_name()
        self.lease = lease
        self.now = now
        self._pg = is_postgres(engine)
        #: Claims whose rows this worker lost to another after its lease ended.
        self.lost = 0
        #: Per kind, keys this worker wanted that another run held (or was claiming):
        #: the end of the walk waits for them (:meth:`unfinished`), so rows held by a
        #: run that died are taken over rather than left undone.
        self.elsewhere: dict[str, set[str]] = {}

    # Taking claims ---------------------------------------------------------------------

    def claim(self, kind: str, keys: Iterable[str]) -> set[str]:
        """Claim the rows ``keys`` of ``kind`` that are free; return those now ours.

        Never waits for another worker's claim (PostgreSQL skips rows being claimed;
        SQLite waits only for the write lock, at most the busy timeout).
        """
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        self._ensure_rows(kind, wanted)
        moment = self.now()
        c = CLAIMS.c
        query = select(c.row_key, c.run_id, c.lease_until, c.finished_at).where(
            c.kind == kind, c.row_key.in_(wanted)
        )
        if self._pg:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            found = conn.execute(query).all()
            free = [r.row_key for r in found if self._free(r, moment)]
            # Not taken and not this run's: another run's claim, or a row locked by a
            # claimer at this moment (skipped, so of unknown run).
            ours = {r.row_key for r in found if r.run_id == self.run_id}
            held = set(wanted) - set(free) - ours
            if held:
                self.elsewhere.setdefault(kind, set()).update(held)
            if free:
                conn.execute(
                    update(CLAIMS)
                    .where(c.kind == kind, c.row_key.in_(free))
                    .values(
                        run_id=self.run_id,
                        claimed_by=self.worker,
                        lease_until=moment + self.lease,
                        finished_at=None,
                    )
                )
        self.elsewhere.get(kind, set()).difference_update(free)
        logger.debug("%s: claimed %d of %d %s", self.worker, len(free), len(wanted), kind)
        return set(free)

    def _free(self, row: Row[Any, Any, Any, Any], moment: datetime) -> bool:
        if row.finished_at is not None:
            return bool(row.run_id != self.run_id)
        return bool(row.lease_until <= moment)

    def _ensure_rows(self, kind: str, keys: Sequence[str]) -> None:
        # A placeholder (lease long over, nobody's) so the claim itself is one UPDATE of
        # rows that exist: SKIP LOCKED can only skip rows, not keys that are missing.
        insert = (postgresql.insert if self._pg else sqlite.insert)(CLAIMS)
        values = [
            {
                "kind": kind,
                "row_key": key,
                "run_id": "",
                "claimed_by": "",
                "lease_until": _EPOCH,
                "finished_at": None,
            }
            for key in keys
        ]
        with self.engine.begin() as conn:
            conn.execute(insert.on_conflict_do_nothing(index_elements=["kind", "row_key"]), values)

    # Keeping and ending claims -----------------------------------------------------------

    def renew(self, kind: str, keys: Iterable[str]) -> None:
        """Push the lease of our unfinished claims on ``keys`` forward by a full lease."""
        wanted = sorted(set(keys))
        if not wanted:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(CLAIMS)
                .where(self._ours(kind, wanted))
                .values(lease_until=self.now() + self.lease)
            )

    def finish(self, conn: Connection, kind: str, keys: Iterable[str]) -> set[str]:
        """Inside the transaction that writes the rows: mark our claims on ``keys`` done.

        Returns the keys that were still ours; rows whose lease ended and were taken by
        another worker are not ours to write (counted in :attr:`lost`).
        """
        wanted = sorted(set(keys))
        if not wanted:
            return set()
        c = CLAIMS.c
        done = conn.execute(
            update(CLAIMS)
            .where(self._ours(kind, wanted))
            .values(finished_at=self.now())
            .returning(c.row_key)
        ).scalars()
        owned = set(done)
        if len(owned) < len(wanted):
            self.lost += len(wanted) - len(owned)
            logger.warning(
                "%s: %d %s were taken over after the lease ended; not writing them",
                self.worker,
                len(wanted) - len(owned),
                kind,
            )
        return owned

    def release(self, kind: str, keys: Iterable[str]) -> None:
        """Mark our claims on ``keys`` finished without writing (nothing left to do)."""
        with self.engine.begin() as conn:
            self.finish(conn, kind, keys)

    def give_back(self, kind: str, keys: Iterable[str]) -> None:
        """Free our unfinished claims on ``keys`` at once (rows left for another worker or
        run: a row limit was reached, or the row is gone)."""
        wanted = sorted(set(keys))
        if wanted:
            self._unclaim(self._ours(kind, wanted))

    def give_back_all(self) -> int:
        """Free every unfinished claim of this worker at once (a worker told to stop:
        rows it claimed and never wrote); return how many."""
        return self._unclaim(self._mine())

    def _unclaim(self, which: ColumnElement[bool]) -> int:
        with self.engine.begin() as conn:
            freed = conn.execute(
                update(CLAIMS).where(which).values(run_id="", claimed_by="", lease_until=_EPOCH)
            )
        return int(freed.rowcount or 0)

    def _ours(self, kind: str, keys: Sequence[str]) -> ColumnElement[bool]:
        c = CLAIMS.c
        return and_(c.kind == kind, c.row_key.in_(keys), self._mine())

    def _mine(self) -> ColumnElement[bool]:
        """Unfinished claims of this worker in this run."""
        c = CLAIMS.c
        return and_(
            c.claimed_by == self.worker,
            c.run_id == self.run_id,
            c.finished_at.is_(None),
        )

    # The end of a walk -----------------------------------------------------------------

    def unfinished(self, kind: str) -> tuple[list[str], datetime | None]:
        """Claims of ``kind`` not yet finished, of this run and of the rows another run
        held when this worker wanted them (:attr:`elsewhere`): (keys whose lease ended,
        the earliest end of a live lease held by another worker or None).

        A row whose claim was finished since is dropped from :attr:`elsewhere`: its run
        wrote it, or found nothing to do.
        """
        c = CLAIMS.c
        moment = self.now()
        query = select(c.row_key, c.run_id, c.lease_until, c.finished_at).where(
            c.kind == kind,
            or_(
                and_(c.run_id == self.run_id, c.finished_at.is_(None)),
                c.row_key.in_(sorted(self.elsewhere.get(kind, ()))),
            ),
        )
        with self.engine.begin() as conn:
            rows = conn.execute(query.order_by(c.row_key)).all()
        held = self.elsewhere.get(kind, set())
        held.difference_update(r.row_key for r in rows if r.finished_at is not None)
        rows = [r for r in rows if r.finished_at is None]
        expired = [r.row_key for r in rows if r.lease_until <= moment]
        live = [r.lease_until for r in rows if r.lease_until > moment]
        return expired, min(live) if live else None

    def remove_old(self) -> int:
        """Remove claims finished, or whose lease ended, over a day ago; return how many.

        Placeholders (never claimed) are kept: a worker may be about to claim them.
        """
        cutoff = self.now() - CLAIM_RETENTION
        c = CLAIMS.c
        old = or_(c.finished_at < cutoff, and_(c.claimed_by != "", c.lease_until < cutoff))
        with self.engine.begin() as conn:
            removed = conn.execute(delete(CLAIMS).where(old).returning(c.row_key)).all()
        return len(removed)


class PageClaims:
    """The refresh job's side of claims: claim a page, keep the leases, settle it, and
    take over a run's abandoned rows at the end of a walk.

    One page is held at a time; its leases are renewed (at most every third of a lease)
    as the job reports progress.
    """

    def __init__(self, claims: RowClaims) -> None:
        self.claims = claims
        self._held: tuple[str, set[str]] | None = None
        self._renewed = 0.0

    def claim(
        self,
        kind: str,
        page: list[Any],
        key_of: Callable[[Any], str],
        needs: Callable[[Any], bool],
        fresh: Callable[[set[str]], list[Any]],
    ) -> tuple[list[Any], set[str]]:
        """Claim the rows of ``page`` that need work; return them as they are now, and
        the keys claimed."""
        claimed = self.claims.claim(kind, [key_of(row) for row in page if needs(row)])
        if not claimed:
            return [], claimed
        self._held, self._renewed = (kind, claimed), time.monotonic()
        # Read again after claiming: another run may have written a row since the page
        # was read, and a row it finished needs no second lookup.
        return fresh(claimed), claimed

    def renew_if_due(self) -> None:
        """Renew the held page's leases when a third of the lease has passed."""
        if self._held is None:
            return
        if time.monotonic() - self._renewed < self.claims.lease.total_seconds() / 3:
            return
        kind, keys = self._held
        self.claims.renew(kind, keys)
        self._renewed = time.monotonic()

    def settle(self, kind: str, claimed: set[str], written: set[str], idle: set[str]) -> None:
        """After a page: finish the claims of rows that needed nothing (``idle``) and give
        back those neither written nor idle (a row limit was reached, the row is gone)."""
        self._held = None
        if not claimed:
            return
        if idle:
            self.claims.release(kind, idle)
        left = claimed - written - idle
        if left:
            self.claims.give_back(kind, left)

    def sweep(
        self,
        kind: str,
        rows_of: Callable[[list[str]], list[Any]],
        key_of: Callable[[Any], str],
        do_page: Callable[[list[Any], bool], bool],
    ) -> None:
        """Take over rows of this run, and rows another run held when this worker wanted
        them, whose leases ended; wait while others hold live ones (a run that died
        renews nothing, so that is at most one lease).

        ``do_page(rows, True)`` works a page of taken-over rows and returns True when the
        job's row limit is reached (the sweep then stops). A claimed row that no longer
        exists (``rows_of`` does not return it) is taken and finished with nothing to
        write; left unfinished, its ended lease would bring the sweep back to it forever.
        """
        while True:
            expired, live_until = self.claims.unfinished(kind)
            if expired:
                logger.info(
                    "%s: taking over %d %s after their lease",
                    self.claims.worker,
                    len(expired),
                    kind,
                )
                # Claiming them again records those still held elsewhere; a row that is
                # gone is not, so the sweep cannot wait on it forever.
                self.claims.elsewhere.get(kind, set()).difference_update(expired)
                rows = rows_of(expired)
                gone = set(expired) - {key_of(row) for row in rows}
                if gone:
                    self.claims.release(kind, self.claims.claim(kind, gone))
                if do_page(rows, True):
                    return
                continue
            if live_until is None:
                return
            remaining = (live_until - self.claims.now()).total_seconds()
            logger.debug(
                "%s: waiting %.1f s for a lease on %s", self.claims.worker, remaining, kind
            )
            time.sleep(min(max(remaining, 0.05), 1.0))
