"""A loader killed with SIGKILL in the middle of a file loses nothing and doubles nothing
when run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from cowrieprocessor.db.models import IngestedFile, LoginAttempt, RawEvent, SessionSummary
from tests.helpers import count, table_rows
from tests.ingest.factory import lines, session_events, write

BIN = Path(sys.executable).parent
SESSIONS = 4000  # 20,000 events


def _checkpoint_line(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(IngestedFile.checkpoint_line)) or 0)


@pytest.mark.slow
def test_sigkill_mid_file_then_rerun(engine: Engine, db_url: str, tmp_path: Path) -> None:
    events = [e for i in range(SESSIONS) for e in session_events(f"k{i:05d}", i * 7.0)]
    path = write(tmp_path / "cowrie.json", lines(events))
    command = [
        str(BIN / "cowrie-loader"), "ingest", str(path), "--db", db_url,
        "--batch-size", "200", "--json",
    ]  # fmt: skip
    env = {**os.environ, "COWRIEPROC_CONFIG": ""}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while _checkpoint_line(engine) < 2000 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    killed_at = count(engine, RawEvent)
    assert 2000 <= killed_at < len(events), "the kill must land in the middle of the file"

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["per_file"][0]["action"] == "resumed"
    assert summary["events_loaded"] == len(events) - killed_at
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
    assert counters == {(5, 2, 1)}
    # Identical to what one uninterrupted run stores.
    clean_url = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    clean = subprocess.run(
        [*command[:4], clean_url, *command[5:]], capture_output=True, env=env, timeout=300
    )
    assert clean.returncode == 0
    from cowrieprocessor.db.engine import create_engine

    clean_engine = create_engine(clean_url)
    skip = ("ingested_at", "updated_at")
    assert table_rows(engine, SessionSummary, skip) == table_rows(
        clean_engine, SessionSummary, skip
    )
    clean_engine.dispose()
