"""The refresh job's counters and the status file it keeps up to date.

The status file (``{status_dir}/enrichment_refresh.json``) lets an operator or a
monitoring script see a long backfill from outside. It is rewritten atomically (a
temporary file in the same directory, then :func:`os.replace`), so a reader sees the
previous or the next version, never part of one; at most once per ``min_interval``
seconds while running, and always at the end. It holds counts and messages that were
already scrubbed of keys by the clients; no key is ever passed to it.

Shape (``v`` 1)::

    {"v": 1, "job": "enrichment_refresh", "state": "running" | "finished" | "interrupted"
       | "failed", "pid": 123, "started_at": "...Z", "updated_at": "...Z",
     "mode": "only_missing", "services": ["dshield", ...],
     "rows": {"sessions": {"total": 502, "scanned": 100, "enriched": 90}, ...},
     "outcomes": {"dshield": {"success": 40, "skipped/not_routable": 2, ...}, ...},
     "lookups": {"dshield": {"cache_hits": 3, "cache_misses": 55, "api_calls": 55, ...}},
     "cache": {"hits": 3, "misses": 55, "repeats_in_run": 12}, "api_calls": 55,
     "rate_rows_per_second": 120.5, "rate_api_calls_per_second": 9.8, "eta_seconds": 4.2,
     "last_errors": {"spur": "error/auth: spur: HTTP 401, ..."}}
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cowrieprocessor.enrichment.outcome import Outcome
from cowrieprocessor.enrichment.service import LookupStats

logger = logging.getLogger(__name__)

STATUS_FILE_NAME = "enrichment_refresh.json"
STATUS_VERSION = 1
ROW_KINDS = ("files", "sessions", "passwords")


def outcome_label(outcome: Outcome) -> str:
    """``success``, ``not_found``, or ``status/reason`` for skips and errors."""
    return f"{outcome.status}/{outcome.reason}" if outcome.reason else str(outcome.status)


def iso_utc(moment: datetime) -> str:
    """``moment`` as the status file writes times: UTC, whole seconds, with a Z."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class RowCounts:
    """Rows of one kind: how many the run may look at, has looked at, and has written."""

    total: int = 0
    scanned: int = 0
    enriched: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "scanned": self.scanned, "enriched": self.enriched}


@dataclass
class RunCounters:
    """Everything the status file and the summary report, for one run."""

    mode: str
    services: list[str]
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: str = "running"
    rows: dict[str, RowCounts] = field(default_factory=lambda: {k: RowCounts() for k in ROW_KINDS})
    #: Per service, outcomes written to rows, by :func:`outcome_label`.
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    started_monotonic: float = field(default_factory=time.monotonic)

    def count_outcome(self, outcome: Outcome) -> None:
        per_service = self.outcomes.setdefault(outcome.service, {})
        label = outcome_label(outcome)
        per_service[label] = per_service.get(label, 0) + 1

    def elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic

    def snapshot(self, lookups: dict[str, LookupStats]) -> dict[str, Any]:
        """The status document (see the module docstring)."""
        elapsed = max(self.elapsed(), 1e-6)
        scanned = sum(r.scanned for r in self.rows.values())
        total = sum(r.total for r in self.rows.values())
        rate = scanned / elapsed
        api_calls = sum(s.api_calls for s in lookups.values())
        remaining = max(total - scanned, 0)
        eta = round(remaining / rate, 1) if rate > 0 and self.state == "running" else None
        hits = sum(s.cache_hits for s in lookups.values())
        misses = sum(s.cache_misses for s in lookups.values())
        repeats = sum(s.memo_hits for s in lookups.values())
        return {
            "v": STATUS_VERSION,
            "job": "enrichment_refresh",
            "state": self.state,
            "pid": os.getpid(),
            "started_at": iso_utc(self.started_at),
            "updated_at": iso_utc(datetime.now(UTC)),
            "elapsed_seconds": round(elapsed, 3),
            "mode": self.mode,
            "services": list(self.services),
            "rows": {kind: counts.to_dict() for kind, counts in self.rows.items()},
            "outcomes": {
                name: dict(sorted(counts.items()))
                for name, counts in sorted(self.outcomes.items())
            },
            "lookups": {name: s.to_dict() for name, s in sorted(lookups.items())},
            "cache": {"hits": hits, "misses": misses, "repeats_in_run": repeats},
            "api_calls": api_calls,
            "rate_rows_per_second": round(rate, 2),
            "rate_api_calls_per_second": round(api_calls / elapsed, 2),
            "eta_seconds": eta,
            "last_errors": {
                name: s.last_error for name, s in sorted(lookups.items()) if s.last_error
            },
        }


class StatusFile:
    """Writes snapshots to ``path`` atomically, no more often than ``min_interval`` s.

    A status file that cannot be written is logged once as a warning; the run goes on.
    """

    def __init__(
        self,
        path: Path | None,
        snapshot: Callable[[], dict[str, Any]],
        *,
        min_interval: float = 1.0,
    ) -> None:
        self.path = path
        self._snapshot = snapshot
        self._min_interval = min_interval
        self._last = float("-inf")
        self._warned = False

    def maybe_write(self) -> None:
        """Write when ``min_interval`` has passed since the last write."""
        if time.monotonic() - self._last >= self._min_interval:
            self.write()

    def write(self) -> None:
        """Write now."""
        self._last = time.monotonic()
        if self.path is None:
            return
        document = orjson.dumps(self._snapshot(), option=orjson.OPT_INDENT_2)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(document + b"\n")
            os.replace(temp, self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            if not self._warned:
                logger.warning("cannot write the status file %s: %s", self.path, exc.strerror)
                self._warned = True
