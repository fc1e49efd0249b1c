"""What a batch of newly stored events adds to each session summary.

A :class:`SessionDelta` is the contribution of some events to one session: counters add
up, times take the earliest and latest, and single-valued attributes (protocol, client
version, HASSH, duration) take the first value known. Deltas are only built from events
that the same transaction inserted, so every stored event counts exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cowrieprocessor.ingest.events import EventKind

if TYPE_CHECKING:
    from cowrieprocessor.ingest.writer import LoadedEvent


@dataclass(slots=True)
class SessionDelta:
    sensor: str
    session_id: str
    event_count: int = 0
    login_attempts: int = 0
    login_successes: int = 0
    command_count: int = 0
    download_count: int = 0
    upload_count: int = 0
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    protocol: str | None = None
    client_version: str | None = None
    hassh: str | None = None
    duration_seconds: float | None = None
    has_connect: bool = False
    has_close: bool = False
    has_src_ip: bool = False

    def add(self, item: LoadedEvent) -> None:
        ev = item.event
        self.event_count += 1
        when = ev.event_time
        if when is not None:
            if self.first_event_at is None or when < self.first_event_at:
                self.first_event_at = when
            if self.last_event_at is None or when > self.last_event_at:
                self.last_event_at = when
        kind = ev.kind
        if kind is EventKind.LOGIN_SUCCESS:
            self.login_attempts += 1
            self.login_successes += 1
        elif kind is EventKind.LOGIN_FAILED:
            self.login_attempts += 1
        elif kind is EventKind.COMMAND_INPUT:
            self.command_count += 1
        elif kind is EventKind.SESSION_CONNECT:
            self.has_connect = True
        elif kind is EventKind.SESSION_CLOSED:
            self.has_close = True
        if ev.file_direction == "download":
            self.download_count += 1
        elif ev.file_direction == "upload":
            self.upload_count += 1
        if ev.src_ip is not None:
            self.has_src_ip = True
        if self.protocol is None and ev.protocol is not None:
            self.protocol = ev.protocol
        if self.client_version is None and ev.client_version is not None:
            self.client_version = ev.client_version
        if self.hassh is None and ev.hassh is not None:
            self.hassh = ev.hassh
        if self.duration_seconds is None and ev.duration_seconds is not None:
            self.duration_seconds = ev.duration_seconds

    def as_row(self, now: datetime) -> dict[str, Any]:
        """The insert row for a session first seen in this batch (also the upsert input)."""
        return {
            "sensor": self.sensor,
            "session_id": self.session_id,
            "src_ip": None,
            "src_ip_valid": None,
            "first_event_at": self.first_event_at,
            "last_event_at": self.last_event_at,
            "protocol": self.protocol,
            "event_count": self.event_count,
            "login_attempts": self.login_attempts,
            "login_successes": self.login_successes,
            "success_username": None,
            "success_password": None,
            "command_count": self.command_count,
            "download_count": self.download_count,
            "upload_count": self.upload_count,
            "client_version": self.client_version,
            "hassh": self.hassh,
            "duration_seconds": self.duration_seconds,
            "has_connect": self.has_connect,
            "has_close": self.has_close,
            "enrichment": None,
            "updated_at": now,
        }


def deltas_for(events: Iterable[LoadedEvent]) -> dict[tuple[str, str], SessionDelta]:
    """Group events by (sensor, session id) in time order; events without a session are
    left out (they stay in ``raw_events``)."""
    ordered = sorted(
        (item for item in events if item.event.session_id is not None),
        key=lambda item: (
            item.event.event_time is None,
            item.event.event_time or 0,
            item.event.event_hash,
        ),
    )
    deltas: dict[tuple[str, str], SessionDelta] = {}
    for item in ordered:
        session_id = item.event.session_id
        assert session_id is not None
        key = (item.sensor, session_id)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = SessionDelta(sensor=item.sensor, session_id=session_id)
        delta.add(item)
    return deltas
