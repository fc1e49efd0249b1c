"""Builders for small Cowrie logs written by the tests themselves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SENSOR = "test-sensor"
BASE_TIME = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def event(session: str, second: float, eventid: str, **fields: Any) -> dict[str, Any]:
    """One Cowrie event ``second`` seconds after BASE_TIME."""
    when = BASE_TIME + timedelta(seconds=second)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"eventid": eventid, "timestamp": stamp, "session": session, "sensor": SENSOR} | fields


def session_events(session: str, start: float = 0.0, ip: str = "8.8.4.4") -> list[dict[str, Any]]:
    """A complete small SSH session: connect, failed and good login, a command, close."""
    return [
        event(session, start, "cowrie.session.connect", src_ip=ip, src_port=4000, protocol="ssh"),
        event(session, start + 1, "cowrie.login.failed", username="root", password="root"),
        event(session, start + 2, "cowrie.login.success", username="root", password="toor"),
        event(session, start + 3, "cowrie.command.input", input="uname -a"),
        event(session, start + 4, "cowrie.session.closed", duration=4.0),
    ]


def lines(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path
