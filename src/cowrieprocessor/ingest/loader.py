"""The ingest job: files in, rows out, one checkpointed batch at a time.

For each input file the job decides where to start from its stored checkpoint:

* unknown path: from the beginning;
* same size and head bytes, and the last run read it to its end: nothing to do (even if
  that run ended on a problem such as a cut-off line; the same bytes give the same);
* the old bytes unchanged at its start and larger: read on from the checkpoint (a live
  file that grew);
* otherwise the file was replaced or truncated; read it again
  from the beginning (events already stored are recognised by content and skipped).

A final line without a newline that is not yet valid JSON (a live file caught while Cowrie
writes it) becomes a dead letter and the checkpoint stays before it, so the next run reads
it again; once it loads, its dead letter is marked resolved.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cowrieprocessor.db.models import DeadLetterEvent, IngestedFile, SessionSummary
from cowrieprocessor.db.textrule import encode_text
from cowrieprocessor.ingest.discovery import discover
from cowrieprocessor.ingest.events import EventError, parse_line
from cowrieprocessor.ingest.files import SourceFile, grew_from, tail_sha256
from cowrieprocessor.ingest.pipeline import run_ahead
from cowrieprocessor.ingest.reader import Line, ReadProblem, read_lines
from cowrieprocessor.ingest.writer import (
    BatchWriter,
    Checkpoint,
    DeadLetter,
    LoadedEvent,
    reset_checkpoint,
)
from cowrieprocessor.safetext import printable

log = logging.getLogger(__name__)

#: Progress callback: (bytes done in the current file, its size or 0 if unknown, path).
Progress = Callable[[int, int, str], None]


@dataclass
class FileSummary:
    path: str
    action: str  # "new", "resumed", "reread", "unchanged"
    lines: int = 0
    events_read: int = 0
    events_loaded: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    blank_lines: int = 0
    #: Events loaded with a flagged field (``bad_timestamp``, ``invalid_src_ip``, ...),
    #: by flag: the event is kept whole in ``raw_events``; the flagged column is empty.
    problems: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestSummary:
    files: list[FileSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sessions_touched: int = 0
    elapsed_seconds: float = 0.0

    def total(self, name: str) -> int:
        return sum(int(getattr(item, name)) for item in self.files)

    @property
    def events_per_second(self) -> float:
        if self.elapsed_seconds <= 0:
            return 0.0
        return self.total("events_read") / self.elapsed_seconds

    @property
    def nothing_readable(self) -> bool:
        """True when this run read input but every line of it failed to load.

        Files unchanged since the last run, empty files and skipped non-log files (say
        Cowrie's own ``cowrie.log`` beside its JSON) are not failures: a rerun with
        nothing new is a success.
        """
        return self.total("events_read") == 0 and self.total("dead_letters") > 0

    def problems(self) -> dict[str, int]:
        """Events loaded with a flagged field, by flag, over all files."""
        found: Counter[str] = Counter()
        for item in self.files:
            found.update(item.problems)
        return dict(sorted(found.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "files_unchanged": sum(1 for f in self.files if f.action == "unchanged"),
            "lines": self.total("lines"),
            "events_read": self.total("events_read"),
            "events_loaded": self.total("events_loaded"),
            "duplicates_skipped": self.total("duplicates"),
            "dead_letters": self.total("dead_letters"),
            "blank_lines": self.total("blank_lines"),
            "event_problems": self.problems(),
            "sessions": self.sessions_touched,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "events_per_second": round(self.events_per_second, 1),
            "warnings": self.warnings,
            "per_file": [vars(item) for item in self.files],
        }


class Loader:
    """Loads Cowrie logs into one database. See the module docstring for resumption."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_sensor: str,
        batch_size: int = 5000,
        progress: Progress | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.engine = engine
        self.default_sensor = default_sensor
        self.batch_size = batch_size
        self.progress = progress
        self.writer = BatchWriter(engine)

    def ingest(self, inputs: Sequence[str]) -> IngestSummary:
        started = time.perf_counter()
        run_started = datetime.now(UTC)
        summary = IngestSummary()
        files, messages = discover(inputs)
        summary.warnings.extend(messages)
        with _rare_collections():
            for source in files:
                summary.files.append(self._ingest_file(source, summary))
        summary.sessions_touched = _sessions_updated_since(self.engine, run_started)
        summary.elapsed_seconds = time.perf_counter() - started
        return summary

    # One file -----------------------------------------------------------------------------

    def _ingest_file(self, source: SourceFile, summary: IngestSummary) -> FileSummary:
        path = str(source.path)
        stored = self._stored(path)
        start_offset, start_line, action = 0, 0, "new"
        if stored is not None:
            # The bytes before the checkpoint must still be those read (a plain file
            # rewritten with the same first 4 KiB is not one that grew).
            tail_ok = stored.tail_sha256 is None or stored.tail_sha256 == tail_sha256(
                source.path, stored.checkpoint_offset
            )
            same = source.size == stored.size_bytes and source.head_sha256 == stored.head_sha256
            if same and tail_ok and stored.finished:
                return FileSummary(path=path, action="unchanged")
            if tail_ok and grew_from(source, stored.size_bytes, stored.head_sha256):
                start_offset, start_line = stored.checkpoint_offset, stored.checkpoint_line
                action = "resumed"
            else:
                log.warning("%s was truncated or replaced; reading it again", path)
                summary.warnings.append(f"{path}: truncated or replaced, read again")
                reset_checkpoint(self.engine, path)
                action = "reread"
        result = FileSummary(path=path, action=action)
        self.writer.prefer_safe = action != "new"
        run = _FileRun(self, source, result, start_offset, start_line)
        run.read(summary)
        return result

    def _stored(self, path: str) -> IngestedFile | None:
        with Session(self.engine) as session:
            return session.scalars(
                select(IngestedFile).where(IngestedFile.path == encode_text(path))
            ).first()


class _FileRun:
    """The state of reading one file: the open batch and the last safe checkpoint."""

    def __init__(
        self,
        loader: Loader,
        source: SourceFile,
        result: FileSummary,
        start_offset: int,
        start_line: int,
    ) -> None:
        self.loader = loader
        self.source = source
        self.result = result
        self.path = str(source.path)
        self.offset = start_offset
        self.line_no = start_line
        self.events: list[LoadedEvent] = []
        self.letters: list[DeadLetter] = []
        self.resolved: list[tuple[str, int]] = []
        self.batch_read = 0
        self.pending_lines = _pending_truncated_lines(loader.engine, self.path)

    def read(self, summary: IngestSummary) -> None:
        """Read, parse and write the file, one checkpointed batch at a time.

        On PostgreSQL the next batches are read and parsed in a background thread while
        the server works on the current one (see :mod:`.pipeline`): the server's share
        of a batch (JSONB, indexes, WAL) is as large as ours, and the driver lets go of
        the GIL while it waits for it. On SQLite the database work is ours too and the
        thread only costs: measured slower there.
        """
        # Offsets count decompressed bytes: only a plain file's size is a total.
        total = self.source.size if self.source.compression == "none" else 0
        produced = self._batches(summary)
        batches = run_ahead(produced) if self.loader.writer.postgres else produced
        for batch in batches:
            self._write(batch)
            if self.loader.progress is not None:
                self.loader.progress(batch.checkpoint.offset, total, self.path)

    def _batches(self, summary: IngestSummary) -> Generator[_Batch, None, None]:
        for item in read_lines(self.source, self.offset, self.line_no):
            if isinstance(item, ReadProblem):
                self._problem(item, summary)
                continue
            self.result.lines += 1
            if not item.terminated and not self._final_line(item):
                continue
            self._line(item)
            if len(self.events) + len(self.letters) >= self.loader.batch_size:
                yield self._take(finished=False)
        yield self._take(finished=True)

    def _line(self, line: Line) -> None:
        try:
            event = parse_line(line.data)
        except EventError as error:
            if error.reason == "empty_line":
                self.result.blank_lines += 1
            else:
                self._dead(line.number, error.reason, _detail(self.path, line, error), line)
        else:
            sensor = event.sensor or self.loader.default_sensor
            self.events.append(LoadedEvent(event, sensor, self.path, line.number))
            self.batch_read += 1
            for problem in event.problems:
                self.result.problems[problem] = self.result.problems.get(problem, 0) + 1
            if line.number in self.pending_lines:
                self.resolved.append((self.path, line.number))
        self.offset, self.line_no = line.end, line.number

    def _final_line(self, line: Line) -> bool:
        """A last line without a newline: load it if it parses, else keep it for later."""
        try:
            parse_line(line.data)
        except EventError as error:
            if error.reason == "empty_line":
                return False
            later = (
                "it will be read again when the file grows"
                if self.source.compression == "none"
                else "the archive ends inside it"
            )
            detail = (
                f"{self.path}:{line.number}: last line has no newline and is not valid "
                f"JSON ({error.detail}); {later}"
            )
            self._dead(line.number, "truncated_line", detail, line)
            return False
        return True

    def _dead(self, number: int, reason: str, detail: str, line: Line | None) -> None:
        raw = "" if line is None else line.data.decode("utf-8", errors="surrogateescape")
        self.letters.append(DeadLetter(self.path, number, reason, detail, raw))
        log.warning("%s", printable(detail, stored=False))

    def _problem(self, problem: ReadProblem, summary: IngestSummary) -> None:
        self.letters.append(
            DeadLetter(self.path, problem.number, problem.reason, problem.detail, "")
        )
        summary.warnings.append(problem.detail)
        log.warning("%s", printable(problem.detail, stored=False))

    def _take(self, *, finished: bool) -> _Batch:
        """Hand over what was parsed since the last batch, with its checkpoint."""
        checkpoint = Checkpoint(
            path=self.path,
            compression=self.source.compression,
            size_bytes=self.source.size,
            head_sha256=self.source.head_sha256,
            tail_sha256=(
                tail_sha256(self.source.path, self.offset)
                if self.source.compression == "none"
                else None
            ),
            offset=self.offset,
            line=self.line_no,
            finished=finished,
        )
        batch = _Batch(self.events, self.letters, self.resolved, self.batch_read, checkpoint)
        self.events, self.letters, self.resolved = [], [], []
        self.batch_read = 0
        return batch

    def _write(self, batch: _Batch) -> None:
        outcome = self.loader.writer.write(
            batch.events,
            batch.letters,
            batch.checkpoint,
            resolved=batch.resolved,
            events_read=batch.events_read,
        )
        self.result.events_read += batch.events_read
        self.result.events_loaded += outcome.inserted
        self.result.duplicates += outcome.duplicates
        self.result.dead_letters += len(batch.letters)


@dataclass(frozen=True)
class _Batch:
    """What one transaction writes: parsed events, dead letters, and where the file stands
    after them."""

    events: list[LoadedEvent]
    letters: list[DeadLetter]
    resolved: list[tuple[str, int]]
    events_read: int
    checkpoint: Checkpoint


#: Allocations between youngest-generation collections while loading (CPython's default
#: is 700). See :func:`_rare_collections`.
_GC_GEN0_THRESHOLD = 50_000


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Run the cyclic garbage collector rarely while a load is under way.

    A batch keeps thousands of parsed events alive until it is written, and every one
    allocates a dozen container objects; with the default thresholds the collector ran
    every few events and rescanned the growing batch each time, which measured as a third
    of the parse time (7.3 against 11.4 us per event). The events hold no reference
    cycles, so collecting rarely frees the same memory. The thresholds are process-wide:
    they are restored on exit, also on error.
    """
    saved = gc.get_threshold()
    gc.set_threshold(_GC_GEN0_THRESHOLD, saved[1], saved[2])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def _sessions_updated_since(engine: Engine, since: datetime) -> int:
    """Sessions this run added to: counted in the database, so that memory stays flat
    however many sessions a run touches (a set of keys would grow with the input)."""
    with engine.connect() as conn:
        found = conn.scalar(select(func.count()).where(SessionSummary.updated_at >= since))
    return int(found or 0)


def _pending_truncated_lines(engine: Engine, path: str) -> set[int]:
    """Lines of ``path`` left as cut-off last lines by earlier runs and not loaded since."""
    with engine.connect() as conn:
        return set(
            conn.scalars(
                select(DeadLetterEvent.source_line).where(
                    DeadLetterEvent.source_file == encode_text(path),
                    DeadLetterEvent.reason == "truncated_line",
                    DeadLetterEvent.resolved_at.is_(None),
                )
            )
        )


def _detail(path: str, line: Line, error: EventError) -> str:
    hint = ""
    stripped = line.data.strip()
    if stripped in (b"{", b"}", b"},", b"[", b"]") or stripped.startswith(b'"'):
        hint = " (looks like part of pretty-printed, multi-line JSON)"
    return f"{path}:{line.number}: {error.reason}: {error.detail}{hint}"
