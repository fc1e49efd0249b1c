"""The rows a refresh may still write: its row limits (``--sessions``, ``--files``,
``--passwords``), shared by every worker of one command.

A single-process refresh keeps its own :class:`RowBudget`; ``refresh --workers N`` puts
one in shared memory (:func:`cowrieprocessor.enrichment.workers.shared_budget`) so that
the limits bound all the workers together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from cowrieprocessor.enrichment.status import ROW_KINDS

if TYPE_CHECKING:
    from cowrieprocessor.enrichment.refresh import RefreshOptions

logger = logging.getLogger(__name__)


class _Counts(Protocol):
    """What a :class:`RowBudget` keeps its counts in: a list, or a shared-memory array."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


class _Lock(Protocol):
    """A lock shared by the holders of a :class:`RowBudget` (``multiprocessing.Lock``)."""

    def acquire(self, block: bool = ..., timeout: float | None = ..., /) -> bool: ...
    def release(self) -> None: ...


#: How long a :class:`RowBudget` waits for its lock before taking its limit as reached.
BUDGET_LOCK_SECONDS = 10.0


class RowBudget:
    """The rows of each kind a run may still write: its row limits, as they are spent.

    A job takes from the budget the rows of a page it is about to look up (before any
    request), and gives back those it did not write (another worker took the row over,
    the row is gone), so rows taken and not given back are rows written. Whoever shares
    one budget shares the limits: :meth:`for_options` serves one process; the workers of
    ``refresh --workers`` share one in shared memory (:mod:`.workers`), so ``--sessions
    600`` writes 600 sessions in all, not 600 per worker.

    ``left`` holds, per kind in :data:`~.status.ROW_KINDS` order, the rows still allowed
    (-1: no limit, which never changes, so it is read without the lock); ``lock`` (None:
    one holder, no lock) guards every read-modify-write of a limited count.

    Concurrency and failure: a take is atomic, so the rows taken by all holders never
    exceed the limit. A holder that finds the budget spent stops that kind of row; one
    that gives rows back goes on (the budget is no longer spent) and uses them itself.
    The run writes fewer rows than the limit, never more, only when rows stay taken:
    a holder died or was interrupted between a take and its give back, or gave rows
    back after the others had stopped and its own walk had ended. A holder killed while
    holding the lock (a few instructions long) would leave it held for good: whoever
    then waits ``lock_timeout`` seconds for it logs a warning and takes the limit as
    reached, so the run ends short of it rather than hanging or passing it.
    """

    def __init__(
        self,
        left: _Counts,
        lock: _Lock | None = None,
        *,
        lock_timeout: float = BUDGET_LOCK_SECONDS,
    ) -> None:
        if len(left) != len(ROW_KINDS):
            raise ValueError(f"a row budget needs {len(ROW_KINDS)} counts, got {len(left)}")
        self.left = left
        self.lock = lock
        self.lock_timeout = lock_timeout

    @staticmethod
    def limits(options: RefreshOptions) -> list[int]:
        """The initial counts of ``options``' row limits (-1 for 0, no limit)."""
        return [getattr(options, kind) or -1 for kind in ROW_KINDS]

    @classmethod
    def for_options(cls, options: RefreshOptions) -> RowBudget:
        """A budget of ``options``' limits for one process (not shared)."""
        return cls(cls.limits(options))

    def take(self, kind: str, wanted: int) -> int | None:
        """Take up to ``wanted`` rows of ``kind``; return how many were granted (None: no
        limit, every row is granted; 0 also when the lock could not be had)."""
        index = ROW_KINDS.index(kind)
        if self.left[index] < 0:
            return None
        with self._held() as held:
            if not held:
                return 0
            left = self.left[index]
            granted = min(left, max(wanted, 0))
            self.left[index] = left - granted
        return granted

    def give_back(self, kind: str, count: int) -> None:
        """Return ``count`` rows taken but not written (lost if the lock cannot be had)."""
        index = ROW_KINDS.index(kind)
        if count <= 0 or self.left[index] < 0:
            return
        with self._held() as held:
            if held:
                self.left[index] += count

    def spent(self, kind: str) -> bool:
        """Whether the limit of ``kind`` is reached (never, without a limit; always, when
        the lock cannot be had)."""
        index = ROW_KINDS.index(kind)
        if self.left[index] < 0:
            return False
        with self._held() as held:
            return not held or self.left[index] == 0

    @contextlib.contextmanager
    def _held(self) -> Iterator[bool]:
        """Hold the lock inside; yields False (not held) after ``lock_timeout`` s."""
        if self.lock is None:
            yield True
            return
        if not self.lock.acquire(True, self.lock_timeout):
            logger.warning(
                "the row limits' lock was not free for %.0f s (a worker killed while "
                "holding it?); taking the limit as reached",
                self.lock_timeout,
            )
            yield False
            return
        try:
            yield True
        finally:
            self.lock.release()
