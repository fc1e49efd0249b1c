"""A schema change that waits for a lock gives up after the lock timeout and says why.

Another session holding a lock on a table (a ``psql`` left in ``BEGIN`` after a SELECT)
makes the ACCESS EXCLUSIVE locks of a migration wait. ``cowrie-db upgrade|downgrade``
waits ``--lock-timeout`` seconds, then exits 1 naming that session, having changed
nothing. The commands run as real processes, each bounded by a subprocess timeout, so
a command that would block for ever fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine

from cowrieprocessor.cli import db as db_cli
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from tests.conftest import _pg_conninfo

BIN = os.path.dirname(sys.executable)
# An escape sequence (clear screen) in the blocking session's last query: the message
# must show it, not send it to the terminal.
HOSTILE_QUERY = "SELECT 1 /* \x1b[2J */"


def cowrie_db(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(BIN, "cowrie-db"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COWRIEPROC_CONFIG": ""},
        check=False,
    )


@pytest.fixture
def holder(pg_engine: Engine, pg_url: str) -> Iterator[psycopg.Connection]:
    """A session in an open transaction that has read raw_events (ACCESS SHARE)."""
    conn = psycopg.connect(_pg_conninfo(pg_url), application_name="psql-tester")
    try:
        conn.execute("LOCK TABLE raw_events IN ACCESS SHARE MODE")
        conn.execute(HOSTILE_QUERY)
        yield conn
    finally:
        conn.close()


def _wait_until_blocked(pg_url: str, deadline: float = 30) -> None:
    """Return once some session waits for a lock on raw_events (fail after ``deadline``)."""
    with psycopg.connect(_pg_conninfo(pg_url), autocommit=True) as conn:
        until = time.monotonic() + deadline
        while time.monotonic() < until:
            row = conn.execute(
                "SELECT 1 FROM pg_locks WHERE NOT granted "
                "AND relation = 'raw_events'::regclass AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.1)
    pytest.fail("the schema change never waited for the lock on raw_events")


@pytest.mark.postgres
def test_a_held_table_lock_stops_the_downgrade_naming_the_session(
    pg_engine: Engine, pg_url: str, holder: psycopg.Connection
) -> None:
    started = time.monotonic()
    blocked = cowrie_db(
        "downgrade", "--db", pg_url, "--revision", "0004", "--lock-timeout", "1", "--json"
    )
    assert time.monotonic() - started < 30
    assert blocked.returncode == 1, blocked.stderr
    message = blocked.stderr
    assert message.startswith("error: downgrade of ")
    assert "waited 1 s for a lock on raw_events" in message
    assert f"pid {holder.info.backend_pid} (application 'psql-tester'" in message
    assert "idle in transaction" in message
    assert "nothing was changed (the transaction rolled back)" in message
    assert "--lock-timeout" in message
    # The blocking session's query is shown, its escape sequence as text.
    assert "\x1b" not in message
    assert "SELECT 1 /* \\x1b[2J */" in message
    summary = json.loads(blocked.stdout)
    assert summary["ok"] is False
    assert f"pid {holder.info.backend_pid}" in summary["error"]
    assert schema.state(pg_engine).current == schema.HEAD  # later steps rolled back

    holder.rollback()
    done = cowrie_db("downgrade", "--db", pg_url, "--revision", "0004", "--lock-timeout", "1")
    assert done.returncode == 0, done.stderr
    # (The success line is wrapped at the terminal width: compare it unwrapped.)
    assert f"{schema.HEAD} -> 0004" in " ".join(done.stderr.split())
    assert schema.state(pg_engine).current == "0004"


@pytest.mark.postgres
def test_lock_timeout_0_waits_for_ever_and_says_for_whom(
    pg_engine: Engine, pg_url: str, holder: psycopg.Connection
) -> None:
    command = [os.path.join(BIN, "cowrie-db"), "upgrade", "--db", pg_url, "--lock-timeout", "0"]
    holder.rollback()
    schema.downgrade(pg_engine, "0004")
    holder.execute("LOCK TABLE raw_events IN ACCESS SHARE MODE")
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COWRIEPROC_CONFIG": ""},
    ) as process:
        try:
            _wait_until_blocked(pg_url)
            time.sleep(schema.WAIT_NOTICE_SECONDS + 1.5)
            assert process.poll() is None  # still waiting, past the default's notice
            holder.rollback()
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr
    notice, *result = stderr.strip().splitlines()
    assert notice.startswith("notice: upgrade waiting (")
    assert "no time limit) for a lock on raw_events held by " in notice
    assert f"pid {holder.info.backend_pid} (application 'psql-tester'" in notice
    assert f"0004 -> {schema.HEAD}" in " ".join(" ".join(result).split())
    assert schema.state(pg_engine).current == schema.HEAD


@pytest.mark.postgres
def test_the_schema_lock_of_another_schema_change_is_named(pg_engine: Engine, pg_url: str) -> None:
    with psycopg.connect(_pg_conninfo(pg_url), application_name="other-upgrade") as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (schema._SCHEMA_LOCK_KEY,))
        with pytest.raises(schema.SchemaLockTimeout) as raised:
            schema.downgrade(pg_engine, "0004", lock_timeout=0.5)
        wait = raised.value.wait
        assert wait is not None and wait.schema_lock
        assert [h.pid for h in wait.holders] == [other.info.backend_pid]
        assert "waited 0.5 s for another schema change to finish" in str(raised.value)
        assert "nothing was changed" in str(raised.value)
        assert schema.state(pg_engine).current == schema.HEAD
    # The other change ended: this one gets the schema lock at once.
    schema.downgrade(pg_engine, "0004", lock_timeout=0.5)
    assert schema.state(pg_engine).current == "0004"


def test_sqlite_takes_the_option_and_bad_values_are_refused(sqlite_url: str) -> None:
    assert cowrie_db("upgrade", "--db", sqlite_url, "--lock-timeout", "5").returncode == 0
    for bad in ("-1", "x", str(db_cli.MAX_LOCK_TIMEOUT_SECONDS + 1)):
        refused = cowrie_db("downgrade", "--db", sqlite_url, "--lock-timeout", bad)
        assert refused.returncode == 2, bad
        assert "--lock-timeout" in refused.stderr
    for value in (-1.0, float("nan"), schema.MAX_LOCK_TIMEOUT_SECONDS + 1):
        with pytest.raises(ValueError, match="lock timeout"):
            schema.upgrade(create_engine(sqlite_url), lock_timeout=value)


def test_the_commands_defaults_are_the_schema_modules() -> None:
    assert db_cli.LOCK_TIMEOUT_SECONDS == schema.DEFAULT_LOCK_TIMEOUT_SECONDS
    assert db_cli.MAX_LOCK_TIMEOUT_SECONDS == schema.MAX_LOCK_TIMEOUT_SECONDS


def test_the_message_names_a_relative_target_in_words() -> None:
    one = str(schema.SchemaLockTimeout("downgrade", "-1", 3.0, None))
    assert one.startswith("downgrade one revision back waited 3 s for a lock held by other")
    two = str(schema.SchemaLockTimeout("downgrade", "-2", 3.0, None))
    assert two.startswith("downgrade 2 revisions back waited 3 s")
    named = str(schema.SchemaLockTimeout("upgrade", "head", 0.5, None))
    assert named.startswith("upgrade to 'head' waited 0.5 s")
