"""A database lost while a command runs (after it opened fine) ends the command with exit
code 2 and one line, no traceback (unless --verbose), and what was committed stays: a
rerun goes on from there and doubles nothing.

The loss is real: the test ends the command's server processes with
``pg_terminate_backend``. To make it land while the command is inside a statement (and
not between two, where the pool would quietly reconnect), the test first takes an
exclusive lock on a table the command is about to use, waits until the command waits
for it, then ends every other backend of the database and lets the lock go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import LoginAttempt, RawEvent, SessionSummary
from cowrieprocessor.enrichment.cache.database import TABLE as CACHE_TABLE
from cowrieprocessor.ingest.loader import Loader
from tests.cache.diskfixture import make_disk_cache
from tests.conftest import SHARED_LOGS, _pg_conninfo
from tests.enrichment.servers import FakeProviders, fast_settings
from tests.helpers import count
from tests.ingest.factory import lines, session_events, write

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent
LOG = SHARED_LOGS / "pol-alvarezzz-cloud-cowrie-honeypot" / "cowrie.json.2026-03-19"
LOG_SESSIONS = 121


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIEPROC_")}
    return env | {"COWRIEPROC_CONFIG": ""} | extra


def _scalar(url: str, sql: str) -> Any:
    """One value from ``url``'s database, or None while the table does not exist."""
    try:
        with psycopg.connect(_pg_conninfo(url), connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            return row[0] if row else None
    except psycopg.errors.UndefinedTable:
        return None


@contextmanager
def _lock(url: str, table: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold an exclusive lock on ``table`` until the block ends."""
    with psycopg.connect(_pg_conninfo(url)) as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # type: ignore[arg-type]
        try:
            yield conn
        finally:
            conn.rollback()


def _cut_off(url: str, table: str, process: subprocess.Popen[str]) -> int:
    """End the command's connections while one of them waits for ``table``; the number
    of backends ended."""
    name = make_url(url).database
    with _lock(url, table) as locker:
        locker_pid = locker.info.backend_pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            waiting = _scalar(
                url,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                f"AND datname = '{name}'",
            )
            if waiting:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the command ended before it reached the lock"
        with psycopg.connect(_pg_conninfo(url), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid NOT IN (%s, pg_backend_pid())",
                (name, locker_pid),
            ).fetchone()
    assert ended is not None
    return int(ended[0])


def _assert_lost(
    done: tuple[int, str, str], during: str, kept: str | None, *, warnings: bool = False
) -> str:
    """The command ended with exit 2, one line naming the loss, and no traceback.

    ``warnings``: the command's own warnings about its input may come before the line.
    """
    code, stdout, stderr = done
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    lines_ = stderr.strip().splitlines()
    if warnings:
        lines_ = [line for line in lines_ if not line.startswith("WARNING cowrieprocessor.")]
    assert len(lines_) == 1, stderr
    line = lines_[0]
    assert line.startswith("error: the database postgresql://postgres@")
    # The server's notice, or psycopg's own words when the socket closed first.
    said = ("terminating connection due to administrator command", "the connection is lost")
    assert any(f"failed {during}: {words}" in line for words in said), line
    if kept is not None:
        assert line.endswith(kept), line
    assert json.loads(stdout) == {"ok": False, "error": line.removeprefix("error: ")}
    return line


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


# -- cowrie-loader ingest ---------------------------------------------------------------

SESSIONS = 800  # 4,000 events


def test_loader_loses_the_database_then_a_rerun_completes(pg_url: str, tmp_path: Path) -> None:
    events = [e for i in range(SESSIONS) for e in session_events(f"s{i:05d}", i * 7.0)]
    path = write(tmp_path / "cowrie.json", lines(events))
    command = [str(BIN / "cowrie-loader"), "ingest", str(path), "--db", pg_url, "--json"]
    env = _environment()
    process = subprocess.Popen(
        [*command, "--batch-size", "1"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    checkpoint_sql = "SELECT coalesce(max(checkpoint_line), 0) FROM ingested_files"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _scalar(pg_url, checkpoint_sql):
        time.sleep(0.02)
    assert _cut_off(pg_url, "raw_events", process) >= 1
    done = _finish(process)

    engine = create_engine(pg_url)
    before = count(engine, RawEvent)
    if done[0] == 0:  # the pool reconnected and the load went on: it must be whole
        assert json.loads(done[1])["events_loaded"] == len(events)
    else:
        _assert_lost(
            done,
            "during the load",
            "the batches committed until then are kept with their files' checkpoints, "
            "and a rerun goes on from there",
        )
        assert 1 <= before < len(events)
        checkpoint = _scalar(pg_url, checkpoint_sql)
        assert checkpoint == before  # one event a line, one line a batch

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["events_loaded"] == len(events) - before
    assert summary["per_file"][0]["action"] in ("resumed", "unchanged")
    assert count(engine, RawEvent) == len(events)
    assert count(engine, LoginAttempt) == 2 * SESSIONS
    assert count(engine, SessionSummary) == SESSIONS
    with engine.connect() as conn:
        counters = set(
            conn.execute(
                select(
                    SessionSummary.event_count,
                    SessionSummary.login_attempts,
                    SessionSummary.command_count,
                )
            ).all()
        )
    engine.dispose()
    assert counters == {(5, 2, 1)}


# -- cowrie-enrich refresh --------------------------------------------------------------


@pytest.fixture
def loaded_pg(pg_url: str) -> str:
    engine = create_engine(pg_url)
    schema.upgrade(engine)
    Loader(engine, default_sensor="pol").ingest([str(LOG)])
    engine.dispose()
    return pg_url


def _refresh_env(providers: FakeProviders, tmp_path: Path) -> dict[str, str]:
    values = fast_settings(providers.base_url)
    values |= {"cache_dir": tmp_path / "cache", "status_dir": tmp_path / "status"}
    return _environment(**{f"COWRIEPROC_{k.upper()}": str(v) for k, v in values.items()})


def _enriched(url: str) -> int:
    return int(
        _scalar(url, "SELECT count(*) FROM session_summaries WHERE enrichment IS NOT NULL") or 0
    )


@pytest.mark.parametrize(
    "workers",
    [1, 2],
)
def test_refresh_loses_the_database_then_a_rerun_completes(
    loaded_pg: str, httpserver: HTTPServer, tmp_path: Path, workers: int
) -> None:
    providers = FakeProviders(httpserver)
    env = _refresh_env(providers, tmp_path)
    command = [str(BIN / "cowrie-enrich"), "refresh", "--db", loaded_pg, "--json"]
    command += ["--services", "dshield,spur", "--batch-size", "10", "--workers", str(workers)]
    # The workers of the cut-off run hold claims; the rerun waits for their leases to end
    # and takes their rows over.
    command += ["--lease-seconds", "3"]
    providers.delay = 0.05
    process = subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _enriched(loaded_pg) < 20:
        time.sleep(0.02)
    assert _cut_off(loaded_pg, "session_summaries", process) >= 1
    done = _finish(process)
    stored = _enriched(loaded_pg)
    if done[0] == 0:
        assert stored == LOG_SESSIONS
    else:
        _assert_lost(
            done,
            "during the refresh",
            "the outcomes stored until then are kept, and a rerun goes on from there",
        )
        assert 20 <= stored < LOG_SESSIONS

    providers.delay = 0.0
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _enriched(loaded_pg) == LOG_SESSIONS
    summary = json.loads(rerun.stdout)
    assert summary["rows"]["sessions"]["enriched"] == LOG_SESSIONS - stored


# -- diagnose, cache, migrate-cache ----------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_diagnose_loses_the_database(loaded_pg: str, verbose: bool) -> None:
    command = [str(BIN / "cowrie-enrich"), "diagnose", "--db", loaded_pg, "--json"]
    process = subprocess.Popen(
        command + (["--verbose"] if verbose else []),
        env=_environment(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert _cut_off(loaded_pg, "session_summaries", process) >= 1
    done = _finish(process)
    if not verbose:
        _assert_lost(done, "during the diagnosis", None)
        return
    # --verbose: the same last line, after the traceback that led to it.
    code, stdout, stderr = done
    assert code == 2
    assert "Traceback" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: the database postgresql://")
    assert json.loads(stdout)["ok"] is False


def test_cache_stats_loses_the_database(pg_url: str, tmp_path: Path) -> None:
    engine = create_engine(pg_url)
    schema.upgrade(engine)
    engine.dispose()
    command = [str(BIN / "cowrie-enrich"), "cache", "stats", "--tier", "database"]
    process = subprocess.Popen(
        [*command, "--db", pg_url, "--json"], env=_environment(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert _cut_off(pg_url, "enrichment_cache", process) >= 1
    _assert_lost(_finish(process), "reading the cache", None)


def test_migrate_cache_loses_the_database_then_a_rerun_completes(
    pg_url: str, tmp_path: Path
) -> None:
    fixture = make_disk_cache(tmp_path / "disk")
    env = _environment(COWRIEPROC_STATUS_DIR=str(tmp_path / "status"))
    command = [str(BIN / "cowrie-enrich"), "migrate-cache", "--from-disk", str(fixture.root)]
    command += ["--to-database", "--db", pg_url, "--json", "--workers", "1"]
    engine = create_engine(pg_url)
    schema.upgrade(engine)
    process = subprocess.Popen(
        [*command, "--batch-size", "5"], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert _cut_off(pg_url, "enrichment_cache", process) >= 1
    _assert_lost(
        _finish(process),
        "during the migration",
        "the batches committed until then are kept, and a rerun goes on from there",
        warnings=True,  # the fixture's damaged files
    )
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    with engine.connect() as conn:
        rows = conn.scalar(select(func.count()).select_from(CACHE_TABLE))
    engine.dispose()
    assert summary["migrated"] + summary["already_present"] == rows == 38
