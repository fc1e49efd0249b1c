"""Many refresh workers on one database: eight processes against SQLite and PostgreSQL,
with the local fake providers counting every request and when it arrived.

Real databases, the real database cache, real worker processes (spawn), real HTTP.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner
from werkzeug import Request, Response

from cowrieprocessor.cli.enrich import app
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import (
    EnrichmentClaim,
    File,
    LoginAttempt,
    PasswordEnrichment,
    SessionSummary,
    table_of,
)
from cowrieprocessor.db.textrule import decode_json, encode_text
from cowrieprocessor.enrichment.budget import RowBudget
from cowrieprocessor.enrichment.refresh import RefreshOptions
from cowrieprocessor.enrichment.settings import SERVICE_NAMES
from cowrieprocessor.enrichment.workers import CONNECTIONS_PER_WORKER, refresh_with_workers
from tests.conftest import PG_ADMIN_URL, _pg_conninfo
from tests.enrichment.servers import (
    KEYS,
    FakeProviders,
    dshield_hit,
    make_settings,
    spur_hit,
    vt_file_hit,
)
from tests.enrichment.test_refresh import T0
from tests.enrichment.test_refresh_cli import _environment, _key_flags

SESSIONS = table_of(SessionSummary)
FILES = table_of(File)
LOGINS = table_of(LoginAttempt)
PASSWORDS = table_of(PasswordEnrichment)
CLAIMS = table_of(EnrichmentClaim)

WORKERS = 8
DSHIELD_RATE = 5  # per second, shared by all workers
ADDRESSES = [f"45.84.{107 + i // 200}.{1 + i % 200}" for i in range(24)]
HASHES = [hashlib.sha256(f"payload-{i}".encode()).hexdigest() for i in range(8)]
PASSWORDS_USED = [f"pw-{i}" for i in range(6)]


class TimedProviders(FakeProviders):
    """The fake providers, also noting when each request arrived."""

    def __init__(self, server: HTTPServer) -> None:
        self.arrivals: list[tuple[str, float]] = []
        super().__init__(server, keys=dict(KEYS))

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.arrivals.append((request.path, time.monotonic()))
        return super()._handle(request)

    def per_key(self) -> Counter[tuple[str, str]]:
        with self._lock:
            return Counter((s.service, s.key) for s in self.seen)

    def times(self, prefix: str) -> list[float]:
        with self._lock:
            return sorted(t for path, t in self.arrivals if path.startswith(prefix))


@pytest.fixture
def providers(httpserver: HTTPServer) -> TimedProviders:
    return TimedProviders(httpserver)


@pytest.fixture
def url(db_url: str) -> str:
    engine = create_engine(db_url)
    schema.upgrade(engine)
    _seed(engine)
    engine.dispose()
    return db_url


def _seed(engine: Engine) -> None:
    """72 sessions over 24 addresses (each address thrice, far apart), 16 files over 8
    hashes, 6 distinct passwords: workers meet the same keys at the same time."""
    _insert_rows(
        engine,
        "sess",
        [ADDRESSES[i % len(ADDRESSES)] for i in range(72)],
        [HASHES[i % len(HASHES)] for i in range(16)],
        PASSWORDS_USED * 2,
    )


def _insert_rows(
    engine: Engine, prefix: str, addresses: list[str], shasums: list[str], passwords: list[str]
) -> None:
    """One session per address (ids ``{prefix}000`` on), one uploaded file per hash and
    one failed login per password, in those sessions in order."""
    sessions = [
        {
            "sensor": "s1",
            "session_id": f"{prefix}{i:03d}",
            "src_ip": address,
            "src_ip_valid": True,
            "first_event_at": T0,
            "updated_at": T0,
        }
        for i, address in enumerate(addresses)
    ]
    files = [
        {
            "event_hash": hashlib.sha256(f"{prefix}-file{i}".encode()).hexdigest(),
            "sensor": "s1",
            "session_id": f"{prefix}{i:03d}",
            "direction": "upload",
            "transfer_ok": True,
            "shasum": shasum,
            "url": None,
            "first_seen": T0,
        }
        for i, shasum in enumerate(shasums)
    ]
    logins = [
        {
            "event_hash": hashlib.sha256(f"{prefix}-login{i}".encode()).hexdigest(),
            "sensor": "s1",
            "session_id": f"{prefix}{i:03d}",
            "event_time": T0,
            "src_ip": addresses[0],
            "username": "root",
            "password": encode_text(password),
            "password_sha256": hashlib.sha256(password.encode()).hexdigest(),
            "success": False,
        }
        for i, password in enumerate(passwords)
    ]
    with engine.begin() as conn:
        conn.execute(insert(SESSIONS), sessions)
        conn.execute(insert(FILES), files)
        conn.execute(insert(LOGINS), logins)


def _settings(providers: FakeProviders, tmp_path: Path, url: str) -> Any:
    return make_settings(
        providers.base_url,
        tmp_path,
        db_url=url,
        use_database_cache=True,
        disable_disk_cache=True,
        dshield_rate_limit=f"{DSHIELD_RATE}/second",
        enrichment_max_wait_seconds=30.0,
    )


def _status(envelope: Any) -> str:
    return str(decode_json(envelope)["status"])


def _assert_every_row_done(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            sessions = conn.execute(select(SESSIONS.c.src_ip, SESSIONS.c.enrichment)).all()
            files = conn.execute(select(FILES.c.shasum, FILES.c.vt_analysis)).all()
            passwords = conn.execute(select(PASSWORDS.c.hibp)).all()
            unfinished = conn.scalar(
                select(func.count()).where(CLAIMS.c.finished_at.is_(None), CLAIMS.c.run_id != "")
            )
    finally:
        engine.dispose()
    assert len(sessions) == 72
    for ip, enrichment in sessions:
        assert _status(enrichment["dshield"]) == ("success" if dshield_hit(ip) else "not_found")
        assert _status(enrichment["spur"]) == ("success" if spur_hit(ip) else "not_found")
        assert _status(enrichment["virustotal"]) == "success"
        assert _status(enrichment["urlhaus"]) in ("success", "not_found")
    assert len(files) == 16
    for shasum, vt in files:
        assert _status(vt) == ("success" if vt_file_hit(shasum) else "not_found")
    assert len(passwords) == len(PASSWORDS_USED)
    assert all(_status(row.hibp) == "not_found" for row in passwords)
    assert unfinished == 0


@contextmanager
def _peak_connections(url: str) -> Iterator[list[int]]:
    """On PostgreSQL, the most connections to the test database seen while inside."""
    peak = [0]
    if not url.startswith("postgresql"):
        yield peak
        return
    name = make_url(url).database
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
                ).fetchone()
                peak[0] = max(peak[0], int(row[0]) if row else 0)
                stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield peak
    finally:
        stop.set()
        watcher.join()


def _max_in_window(times: list[float], window: float) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_eight_workers_enrich_each_row_once_ask_each_key_once_and_share_the_rate(
    url: str, providers: TimedProviders, tmp_path: Path
) -> None:
    settings = _settings(providers, tmp_path, url)
    options = RefreshOptions(batch_size=4)

    with _peak_connections(url) as peak:
        result = refresh_with_workers(settings, options, WORKERS, lease=timedelta(seconds=30))

    if url.startswith("postgresql"):
        # The documented budget: CONNECTIONS_PER_WORKER per worker, all pools together.
        assert 0 < peak[0] <= WORKERS * CONNECTIONS_PER_WORKER

    assert result.died == []
    assert result.exit_code == 0
    summary = result.as_dict()
    # Each row was written by exactly one worker.
    assert summary["rows"]["sessions"]["enriched"] == 72
    assert summary["rows"]["files"]["enriched"] == 16
    assert summary["rows"]["passwords"]["enriched"] == len(PASSWORDS_USED)
    assert summary["lost_claims"] == 0
    _assert_every_row_done(url)

    # Each key was asked once, however many workers met it at the same time.
    counts = providers.per_key()
    assert set(counts.values()) == {1}
    by_service = Counter(service for service, _ in counts)
    assert by_service == {
        "dshield": 24,
        "spur": 24,
        "urlhaus": 24,
        "virustotal": 24 + 8,
        "hibp": len({hashlib.sha1(p.encode()).hexdigest()[:5] for p in PASSWORDS_USED}),
    }
    assert summary["api_calls"] == sum(by_service.values())

    # DShield's 5/second held for all workers together: never 6 within a second. The
    # 0.1 s margin covers the hop from a worker's limiter to the server's clock, which
    # on a loaded machine was seen to take up to 35 ms; eight separate limits would
    # put up to 40 requests in that window.
    dshield = providers.times("/api/ip/")
    assert len(dshield) == 24
    assert _max_in_window(dshield, 1.0 - 0.1) <= DSHIELD_RATE
    # ...and it was the limit that paced them: 24 requests need more than 4 seconds.
    assert dshield[-1] - dshield[0] > (24 / DSHIELD_RATE) - 1 - 0.1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_killed_worker_s_rows_are_taken_over_after_its_lease(
    url: str, providers: TimedProviders, tmp_path: Path
) -> None:
    settings = _settings(
        providers,
        tmp_path,
        url,
    )
    providers.delay = 0.05
    options = RefreshOptions(batch_size=4)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = refresh_with_workers(settings, options, 3, lease=timedelta(seconds=2))

    runner = threading.Thread(target=run)
    runner.start()
    victim = _kill_a_claim_holder(url)
    runner.join(timeout=120)
    assert not runner.is_alive()

    result = outcome["result"]
    assert len(result.died) == 1
    assert result.exit_code == 1
    _assert_every_row_done(url)
    counts = providers.per_key()
    # The victim may have asked for keys it never stored; nobody asked more than that.
    assert max(counts.values()) <= 2
    assert victim > 0


def _kill_a_claim_holder(url: str) -> int:
    """SIGKILL a worker while it holds live claims; return its pid."""
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                holder = conn.scalar(
                    select(CLAIMS.c.claimed_by).where(
                        CLAIMS.c.finished_at.is_(None), CLAIMS.c.claimed_by != ""
                    )
                )
            if holder:
                pid = int(holder.split(":")[1])
                os.kill(pid, signal.SIGKILL)
                return pid
            time.sleep(0.01)
    finally:
        engine.dispose()
    raise AssertionError("no worker ever held a claim")


def _three_worker_command(
    sqlite_url: str, providers: TimedProviders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], Path]:
    """Seed a SQLite database and return a ``refresh --workers 3`` command line (the
    database cache with the disk behind it) and its status folder."""
    engine = create_engine(sqlite_url)
    schema.upgrade(engine)
    _seed(engine)
    engine.dispose()
    for name, value in _environment(providers).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COWRIEPROC_USE_DATABASE_CACHE", "true")
    monkeypatch.delenv("COWRIEPROC_CONFIG", raising=False)
    status_dir = tmp_path / "status"
    args = ["refresh", "--db", sqlite_url, "--cache-dir", str(tmp_path / "c"), "--json"]
    args += ["--workers", "3", "--batch-size", "8", "--status-dir", str(status_dir)]
    return args, status_dir


def test_the_command_runs_workers_and_prints_the_merged_summary(
    sqlite_url: str,
    providers: TimedProviders,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, status_dir = _three_worker_command(sqlite_url, providers, tmp_path, monkeypatch)

    result = CliRunner().invoke(app, [*args, *_key_flags()])

    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["workers"] == 3
    assert summary["died"] == []
    assert summary["state"] == "finished"
    assert {kind: rows["enriched"] for kind, rows in summary["rows"].items()} == {
        "files": 16,
        "sessions": 72,
        "passwords": len(PASSWORDS_USED),
    }
    assert set(providers.per_key().values()) == {1}
    assert summary["api_calls"] == providers.requests()
    on_disk = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
    assert on_disk["state"] == "finished"
    assert on_disk["rows"] == summary["rows"]
    _assert_every_row_done(sqlite_url)


def test_workers_refuse_an_in_memory_database(
    providers: TimedProviders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _environment(providers).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COWRIEPROC_CONFIG", raising=False)
    args = ["refresh", "--db", "sqlite://", "--workers", "2", "--json", *_key_flags()]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert "in-memory" in result.output


LIMITED_ADDRESSES = [f"45.85.{1 + i // 200}.{1 + i % 200}" for i in range(30)]
LIMITED_HASHES = [hashlib.sha256(f"limited-{i}".encode()).hexdigest() for i in range(12)]


def _limited_passwords(count: int) -> list[str]:
    """Passwords whose HIBP ranges all differ: one request per password looked up."""
    found: dict[str, str] = {}
    n = 0
    while len(found) < count:
        password = f"limited-pw-{n}"
        found.setdefault(hashlib.sha1(password.encode()).hexdigest()[:5], password)
        n += 1
    return list(found.values())


LIMITED_PASSWORDS = _limited_passwords(9)


def _seed_distinct_keys(engine: Engine) -> None:
    """30 sessions, 12 files and 9 passwords, no two sharing a key: every row looked up
    costs exactly one request per service, so requests count rows."""
    _insert_rows(engine, "lim", LIMITED_ADDRESSES, LIMITED_HASHES, LIMITED_PASSWORDS)


@pytest.mark.timeout(60)
def test_row_limits_bound_the_whole_run_across_workers(
    db_url: str, providers: TimedProviders, tmp_path: Path
) -> None:
    engine = create_engine(db_url)
    schema.upgrade(engine)
    _seed_distinct_keys(engine)
    engine.dispose()
    settings = _settings(providers, tmp_path, db_url)
    # The passwords' limit is below the number of workers: no worker may read a share of
    # 0 as "no limit". Pages of 2 make the workers interleave on every kind.
    limits = {"sessions": 7, "files": 5, "passwords": 2}
    options = RefreshOptions(services=("dshield", "virustotal", "hibp"), batch_size=2, **limits)

    result = refresh_with_workers(settings, options, 3, lease=timedelta(seconds=30))

    assert result.died == []
    summary = result.as_dict()
    assert {kind: rows["enriched"] for kind, rows in summary["rows"].items()} == limits
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            written = {
                "sessions": conn.scalar(
                    select(func.count()).where(SESSIONS.c.enrichment.is_not(None))
                ),
                "files": conn.scalar(select(func.count()).where(FILES.c.vt_analysis.is_not(None))),
                "passwords": conn.scalar(select(func.count()).select_from(PASSWORDS)),
            }
    finally:
        engine.dispose()
    assert written == limits
    # One request per row looked up, no more: the limits bound what the run spends.
    seen = Counter((s.service, s.endpoint) for s in providers.seen)
    assert seen == {
        ("dshield", "ip"): 7,
        ("virustotal", "ip"): 7,
        ("virustotal", "file"): 5,
        ("hibp", "range"): 2,
    }
    assert summary["api_calls"] == 7 + 7 + 5 + 2


def test_the_merged_summary_and_status_show_hits_per_cache_tier(
    sqlite_url: str,
    providers: TimedProviders,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The database cache with the disk behind it: a hybrid cache, which counts per tier.
    args, status_dir = _three_worker_command(sqlite_url, providers, tmp_path, monkeypatch)

    first = CliRunner().invoke(app, [*args, *_key_flags()])
    assert first.exit_code == 0, first.output
    tiers = orjson.loads(first.stdout)["cache"]["tiers"]
    # The shape of the single-process summary (test_refresh.py).
    assert set(tiers) == {"memory", "database", "disk", "copied_to_database"}
    assert tiers["memory"] == {}  # no memory tier configured
    asked = providers.requests()

    # Every row again: every lookup is now answered by the database tier.
    second = CliRunner().invoke(app, [*args, "--all", *_key_flags()])
    assert second.exit_code == 0, second.output
    assert providers.requests() == asked
    summary = orjson.loads(second.stdout)
    tiers = summary["cache"]["tiers"]
    lookups = summary["lookups"]
    assert set(tiers["database"]) == set(lookups) == set(SERVICE_NAMES)
    for service, stats in lookups.items():
        assert stats["cache_misses"] == 0
        # 24 addresses, 8 hashes...: each worker looks up what its own rows hold.
        assert stats["cache_hits"] > 0
        assert tiers["database"][service] == {"hits": stats["cache_hits"], "misses": 0}
    assert sum(c["hits"] for c in tiers["database"].values()) == summary["cache"]["hits"]
    assert tiers["disk"] == {}  # the database answered everything
    assert tiers["copied_to_database"] == {"*": {"entries": 0}}
    on_disk = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
    assert on_disk["cache"]["tiers"] == tiers


def test_a_row_budget_grants_up_to_the_limit_and_takes_back_what_was_not_written() -> None:
    budget = RowBudget.for_options(RefreshOptions(sessions=5, passwords=1))
    assert budget.take("files", 100) is None  # 0: no limit
    assert not budget.spent("files")
    assert budget.take("sessions", 3) == 3
    assert budget.take("sessions", 3) == 2
    assert budget.spent("sessions")
    assert budget.take("sessions", 1) == 0
    budget.give_back("sessions", 1)  # one row of a page was taken over, not written
    assert not budget.spent("sessions")
    assert budget.take("sessions", 4) == 1
    assert budget.take("passwords", 0) == 0
    assert not budget.spent("passwords")


def test_a_row_budget_whose_lock_stays_held_takes_its_limit_as_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = multiprocessing.get_context("forkserver")
    lock = context.Lock()
    options = RefreshOptions(sessions=5)
    budget = RowBudget(context.RawArray("q", RowBudget.limits(options)), lock, lock_timeout=0.05)
    assert budget.take("sessions", 2) == 2
    lock.acquire()  # as if a worker had been killed inside take()
    try:
        assert budget.take("sessions", 2) == 0
        assert budget.spent("sessions")
        assert budget.take("files", 7) is None  # no limit: the lock is not needed
    finally:
        lock.release()
    assert "taking the limit as reached" in caplog.text
    assert budget.take("sessions", 5) == 3
