"""PostgreSQL connection attempts give up after a timeout instead of hanging.

The "silent server" below stands for a host that drops packets: it listens on loopback
and never answers, so the kernel completes the TCP handshake and psycopg then waits for
the server's reply, as it would for a lost SYN. No traffic leaves the machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import PG_CONNECT_TIMEOUT_SECONDS, create_engine
from cowrieprocessor.db.models import RawEvent
from cowrieprocessor.ingest.loader import Loader

BIN = Path(sys.executable).parent


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def _timeout_in_use(url: str) -> str:
    """The connect_timeout psycopg was given for a real connection to ``url``."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
            return str(params.get("connect_timeout", "default"))
    finally:
        engine.dispose()


def _cowrie_db_current(url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `cowrie-db current` on ``url`` without PGCONNECT_TIMEOUT; result and seconds."""
    env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "cowrie-db"), "current", "--db", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "COWRIEPROC_CONFIG": ""},
        check=False,
    )
    return done, time.monotonic() - started


@pytest.mark.postgres
def test_connections_get_the_default_timeout(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert _timeout_in_use(pg_url) == str(PG_CONNECT_TIMEOUT_SECONDS) == "10"


@pytest.mark.postgres
def test_the_urls_own_timeout_and_the_variable_win(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with_query = make_url(pg_url).update_query_dict({"connect_timeout": "4"})
    assert _timeout_in_use(with_query.render_as_string(hide_password=False)) == "4"
    # libpq's variable is left to libpq, not overridden by our default.
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "7")
    assert _timeout_in_use(pg_url) == "7"


def test_a_silent_server_fails_after_the_urls_timeout(silent_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/cowrie?connect_timeout=2"
    done, elapsed = _cowrie_db_current(url)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("error: cannot open ")
    assert "connection timeout expired" in lines[0]
    # 2 s of waiting plus the start of the command; nowhere near libpq's 130 s.
    assert 2 <= elapsed < 15


@pytest.mark.slow  # waits the full default timeout
def test_a_silent_server_fails_after_the_default_timeout(silent_port: int) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/cowrie"
    done, elapsed = _cowrie_db_current(url)
    assert done.returncode == 2, done.stderr
    assert "connection timeout expired" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert PG_CONNECT_TIMEOUT_SECONDS <= elapsed < PG_CONNECT_TIMEOUT_SECONDS + 15


@pytest.mark.postgres
def test_sessions_are_utc_whatever_the_database_zone(pg_url: str, tmp_path: Path) -> None:
    # A server or database set to another zone prints timestamps in it; near year 9999
    # (or year 1) that text leaves the range the driver can read, and every query over
    # such a row failed. Our sessions set UTC for themselves.
    database = make_url(pg_url).database
    admin = create_engine(pg_url)
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{database}\" SET timezone = 'Asia/Tokyo'"))
        conn.commit()
    admin.dispose()
    engine = create_engine(pg_url)
    schema.upgrade(engine)
    late = {"eventid": "cowrie.session.connect", "session": "z1", "src_ip": "192.0.2.7"}
    stamps = ["9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z"]
    path = tmp_path / "cowrie.json"
    path.write_bytes(
        b"\n".join(orjson.dumps(late | {"timestamp": stamp}) for stamp in stamps) + b"\n"
    )
    assert Loader(engine, default_sensor="s").ingest([str(path)]).as_dict()["events_loaded"] == 2

    with Session(engine) as session:
        times = session.scalars(select(RawEvent.event_time).order_by(RawEvent.event_time))
        assert list(times) == [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
    with engine.connect() as conn:
        zone, name = conn.execute(
            text("SELECT current_setting('TimeZone'), current_setting('application_name')")
        ).one()
    assert zone == "UTC"
    assert name == Path(sys.argv[0]).name
    engine.dispose()
