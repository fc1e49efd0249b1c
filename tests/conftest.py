"""Shared fixtures: a fresh SQLite file and a fresh PostgreSQL database per test.

PostgreSQL is the real server on 127.0.0.1:5432 (override with COWRIEPROC_TEST_PG_URL,
a URL to an administrative database). Outside CI a missing server skips those tests;
with CI=true it fails them, so CI can never pass without PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine

PG_ADMIN_URL = os.environ.get(
    "COWRIEPROC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The project's shared material (real Cowrie logs, API samples) lies beside the checkout;
# COWRIEPROC_SHARED_DIR points elsewhere.
SHARED = Path(
    os.environ.get("COWRIEPROC_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared"
)
SHARED_LOGS = SHARED / "data" / "cowrie-logs"
API_SAMPLES = SHARED / "data" / "api-samples"


def pytest_configure(config: pytest.Config) -> None:
    """Stop at once, with the fix, when the shared test data is missing."""
    if not SHARED_LOGS.is_dir() or not API_SAMPLES.is_dir():
        raise pytest.UsageError(
            f"the shared test data is not at {SHARED} (expected data/cowrie-logs and "
            "data/api-samples there): clone beside the project's shared/ folder or set "
            "COWRIEPROC_SHARED_DIR"
        )


def _pg_conninfo(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_available() -> bool:
    try:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _require_pg() -> None:
    if not _pg_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} and CI=true")
        pytest.skip("PostgreSQL is not reachable (set CI=true to make this a failure)")


def create_pg_database() -> str:
    """Create an empty PostgreSQL database and return its URL."""
    _require_pg()
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file that does not exist yet."""
    return f"sqlite:///{tmp_path / 'cowrie.sqlite'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cowrie.sqlite'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def _engine_at_head(url: str) -> Iterator[Engine]:
    eng = create_engine(url)
    schema.upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL database at the newest schema."""
    yield from _engine_at_head(pg_url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database of each kind, at the newest schema."""
    yield from _engine_at_head(db_url)
