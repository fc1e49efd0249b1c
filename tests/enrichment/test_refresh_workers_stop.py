"""Stopping ``cowrie-enrich refresh --workers 2``: SIGINT, SIGTERM or SIGKILL sent to the
parent alone (not its process group) stops its workers too, as does Ctrl-C (SIGINT to
the whole group).

The real command in a subprocess, real worker processes from its forkserver, a real
database and slow local fake providers counting every request by key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import func, insert, select

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import EnrichmentClaim, SessionSummary, table_of
from cowrieprocessor.db.textrule import decode_json
from tests.enrichment.servers import KEYS, FakeProviders, dshield_hit
from tests.enrichment.test_refresh import T0
from tests.enrichment.test_refresh_cli import _environment, _key_flags

SESSIONS = table_of(SessionSummary)
CLAIMS = table_of(EnrichmentClaim)

ROWS = 80
ADDRESSES = [f"45.85.{i // 200}.{1 + i % 200}" for i in range(ROWS)]
INTERRUPTED = "interrupted; committed rows are kept, run again to go on"
#: Requests that may still arrive after the signal: each of the two workers finishes the
#: lookup it is in (already sent, or about to be) before it stops.
IN_HAND = 4


@pytest.fixture
def providers(httpserver: HTTPServer) -> FakeProviders:
    return FakeProviders(httpserver, keys=dict(KEYS))


@pytest.fixture
def url(db_url: str) -> str:
    """``ROWS`` sessions, each from its own address (one DShield key per row)."""
    engine = create_engine(db_url)
    schema.upgrade(engine)
    rows = [
        {
            "sensor": "s1",
            "session_id": f"stop{i:03d}",
            "src_ip": address,
            "src_ip_valid": True,
            "first_event_at": T0,
            "updated_at": T0,
        }
        for i, address in enumerate(ADDRESSES)
    ]
    with engine.begin() as conn:
        conn.execute(insert(SESSIONS), rows)
    engine.dispose()
    return db_url


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers_running(process: subprocess.Popen[str], url: str) -> set[int]:
    """Wait until both workers run and pages were written; return every process of the
    run (the forkserver, the workers, the resource tracker)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        family = _descendants(process.pid)
        servers = [p for p in family if b"forkserver" in _cmdline(p)]
        workers = [p for s in servers for p in _descendants(s)]
        if len(workers) == 2 and _written(url) >= 10:
            return family
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("the two workers never started asking")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _written(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(select(func.count()).where(SESSIONS.c.enrichment.is_not(None))) or 0
            )
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("sent", "group", "code"),
    [
        pytest.param(signal.SIGINT, False, 130, id="SIGINT"),
        pytest.param(signal.SIGTERM, False, 143, id="SIGTERM"),
        pytest.param(signal.SIGKILL, False, -signal.SIGKILL, id="SIGKILL"),
        pytest.param(signal.SIGINT, True, 130, id="Ctrl-C"),
    ],
)
def test_a_signal_to_the_parent_stops_its_workers_and_a_rerun_asks_no_key_twice(
    url: str,
    providers: FakeProviders,
    tmp_path: Path,
    sent: signal.Signals,
    group: bool,
    code: int,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIEPROC_")}
    env |= _environment(providers) | {"COWRIEPROC_USE_DATABASE_CACHE": "true"}
    script = Path(sys.executable).parent / "cowrie-enrich"
    status_dir = tmp_path / "status"
    command = [str(script), "refresh", "--db", url, "--workers", "2", "--batch-size", "5"]
    command += ["--services", "dshield", "--cache-dir", str(tmp_path / "cache"), "--json"]
    command += ["--status-dir", str(status_dir), *_key_flags()]
    providers.delay = 0.1  # one request at a time: about 10 a second for both workers

    process = subprocess.Popen(
        command,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    family: set[int] = set()
    try:
        family = _workers_running(process, url)
        asked = providers.requests()
        if group:
            os.killpg(process.pid, sent)
        else:
            process.send_signal(sent)
        process.wait(timeout=15)

        # Every process of the run (forkserver, workers) ends within a few seconds...
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in family if _alive(p)] == []
        # (the workers held the parent's stdout and stderr: both end with them)
        stdout, stderr = process.communicate(timeout=5)
    finally:
        for pid in [process.pid, *family]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)

    # ... after finishing at most the lookup each worker had in hand: no more requests.
    stopped = providers.requests()
    assert asked <= stopped <= asked + IN_HAND
    time.sleep(1.0)
    assert providers.requests() == stopped
    assert process.returncode == code
    if sent != signal.SIGKILL:
        # As the single-process refresh does: the line on stderr, and one object on stdout.
        assert orjson.loads(stdout) == {"ok": False, "interrupted": True, "error": INTERRUPTED}
        assert stderr.splitlines()[-1] == INTERRUPTED
        merged = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
        assert merged["state"] == "interrupted"
    # Each worker stopped as told (its status says so), committed its pages and gave back
    # the claims of the page it abandoned.
    first = _written(url)
    parts = [
        orjson.loads((status_dir / "workers" / str(i) / "enrichment_refresh.json").read_bytes())
        for i in range(2)
    ]
    assert [part["state"] for part in parts] == ["interrupted", "interrupted"]
    assert sum(part["rows"]["sessions"]["enriched"] for part in parts) == first
    assert 0 < first < ROWS
    engine = create_engine(url)
    with engine.connect() as conn:
        held = conn.scalar(
            select(func.count()).where(CLAIMS.c.finished_at.is_(None), CLAIMS.c.run_id != "")
        )
    assert held == 0

    # The rerun (the default 300 s lease: nothing left claimed to wait for) does the rest,
    # each row once, and asks no key a second time; except that Ctrl-C, which reaches the
    # workers too, abandons the request each had on the wire (its answer never stored).
    again = 2 if group else 0
    providers.delay = 0.0
    rerun_command = [*command, "--batch-size", "40"]  # the last one counts
    rerun = subprocess.run(rerun_command, env=env, capture_output=True, text=True, timeout=40)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = orjson.loads(rerun.stdout)
    assert summary["rows"]["sessions"]["enriched"] == ROWS - first
    assert ROWS - stopped <= summary["api_calls"] <= ROWS - stopped + again
    with engine.connect() as conn:
        rows = conn.execute(select(SESSIONS.c.src_ip, SESSIONS.c.enrichment)).all()
    engine.dispose()
    assert len(rows) == ROWS
    for address, enrichment in rows:
        expected = "success" if dshield_hit(address) else "not_found"
        assert decode_json(enrichment["dshield"])["status"] == expected
    asked_per_key = Counter(s.key for s in providers.seen if s.service == "dshield")
    assert sorted(asked_per_key) == sorted(ADDRESSES)
    assert sum(asked_per_key.values()) - ROWS == summary["api_calls"] - (ROWS - stopped)
    assert max(asked_per_key.values()) <= 1 + (again > 0)


def _start(
    url: str, providers: FakeProviders, tmp_path: Path, *extra: str
) -> subprocess.Popen[str]:
    """``cowrie-enrich refresh --json`` of DShield in pages of 5, status under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIEPROC_")}
    env |= _environment(providers)
    script = Path(sys.executable).parent / "cowrie-enrich"
    command = [str(script), "refresh", "--db", url, "--batch-size", "5", "--json", *extra]
    command += ["--services", "dshield", "--cache-dir", str(tmp_path / "cache")]
    command += ["--status-dir", str(tmp_path / "status"), *_key_flags()]
    return subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _ended_as_terminated(
    process: subprocess.Popen[str], stdout: str, stderr: str, status_dir: Path, url: str
) -> dict[str, Any]:
    """Assert a refresh ended by SIGTERM as it should (exit 143, the line, one JSON object,
    the status interrupted and counting the rows written); return its status."""
    assert process.returncode == 143
    assert orjson.loads(stdout) == {"ok": False, "interrupted": True, "error": INTERRUPTED}
    assert stderr.splitlines()[-1] == INTERRUPTED
    status: dict[str, Any] = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
    assert status["state"] == "interrupted"
    assert status["rows"]["sessions"]["enriched"] == _written(url)
    return status


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_ends_a_refresh_without_workers_as_interrupted(
    url: str, providers: FakeProviders, tmp_path: Path
) -> None:
    status_dir = tmp_path / "status"
    providers.delay = 0.05
    process = _start(url, providers, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while _written(url) < 10:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    _ended_as_terminated(process, stdout, stderr, status_dir, url)
    assert 10 <= _written(url) < ROWS


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_second_signal_while_the_workers_stop_still_leaves_the_status_interrupted(
    url: str, providers: FakeProviders, tmp_path: Path
) -> None:
    status_dir = tmp_path / "status"
    providers.delay = 0.3  # slow enough that the workers are still stopping at the second
    process = _start(url, providers, tmp_path, "--workers", "2")
    family: set[int] = set()
    try:
        family = _workers_running(process, url)
        status = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
        # While running, the merged file carries what a monitor needs to spot a dead run.
        assert status["state"] == "running"
        assert status["pid"] == process.pid
        assert status["started_at"] <= status["updated_at"]
        assert (status["mode"], status["services"]) == ("only_missing", ["dshield"])
        process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        for pid in [process.pid, *family]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)

    status = _ended_as_terminated(process, stdout, stderr, status_dir, url)
    assert status["pid"] == process.pid
