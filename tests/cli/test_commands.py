"""The console commands as a user runs them: real processes, exit codes, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import SessionSummary

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SAMPLES = REPO / "samples"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COWRIEPROC_CONFIG": "", **(env or {})},
        check=False,
    )


def test_loader_on_the_shipped_samples(db_url: str) -> None:
    result = run("cowrie-loader", "ingest", str(SAMPLES), "--db", db_url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == 2
    assert (summary["events_read"], summary["events_loaded"], summary["sessions"]) == (31, 31, 5)
    assert (summary["dead_letters"], summary["duplicates_skipped"]) == (0, 0)
    engine = create_engine(db_url)
    with Session(engine) as conn:
        late = conn.execute(
            select(SessionSummary).where(SessionSummary.session_id == "1a7e1a7e1a7e")
        ).scalar_one()
    engine.dispose()
    # The session that started on 2026-11-30 and ended in the next day's .gz file.
    assert (late.event_count, late.login_attempts, late.success_password) == (4, 2, "oracle123")
    again = run("cowrie-loader", "ingest", str(SAMPLES), "--db", db_url, "--json")
    assert json.loads(again.stdout)["events_loaded"] == 0


def test_loader_human_summary_and_db_from_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.sqlite'}"
    result = run("cowrie-loader", "ingest", str(SAMPLES), env={"COWRIEPROC_DB_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # human output goes to stderr
    assert "events loaded" in result.stderr
    assert "31" in result.stderr
    assert (tmp_path / "env.sqlite").exists()


def test_loader_exit_codes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json\nstill not json\n")
    result = run("cowrie-loader", "ingest", str(garbage), "--db", url, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["dead_letters"] == 2
    missing = run("cowrie-loader", "ingest", str(tmp_path / "nope*"), "--db", url)
    assert missing.returncode == 1
    assert "no input files" in missing.stderr
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    mixed = run("cowrie-loader", "ingest", str(garbage), str(SAMPLES), "--db", fresh)
    assert mixed.returncode == 0
    assert "2 line(s) could not be loaded" in mixed.stderr
    assert "warning: " in mixed.stderr


def test_schema_commands_and_version_check(db_url: str) -> None:
    # A SQLite file that does not exist is refused (exit 2); an empty database is not
    # at the newest revision (exit 1).
    missing = db_url.startswith("sqlite")
    assert run("cowrie-db", "check", "--db", db_url).returncode == (2 if missing else 1)
    up = run("cowrie-db", "upgrade", "--db", db_url, "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["to"] == schema.head_revision()
    current = json.loads(run("cowrie-db", "current", "--db", db_url, "--json").stdout)
    assert current["up_to_date"] is True
    assert run("cowrie-db", "check", "--db", db_url).returncode == 0
    down = run("cowrie-db", "downgrade", "--db", db_url, "--revision", "base", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["to"] is None
    engine = create_engine(db_url)
    assert schema.state(engine).empty
    engine.dispose()


def test_loader_refuses_an_older_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffffffff'")
    engine.dispose()
    result = run("cowrie-loader", "ingest", str(SAMPLES), "--db", url)
    assert result.returncode == 2
    assert "newer than this cowrieprocessor" in result.stderr


def test_database_url_password_is_never_printed() -> None:
    url = "postgresql://postgres:sup3rsecret@127.0.0.1:1/nothing"
    result = run("cowrie-loader", "ingest", str(SAMPLES), "--db", url, "--json")
    assert result.returncode == 2
    assert "sup3rsecret" not in result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_installs_and_every_command_answers_help(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(dist), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheel = next(dist.glob("cowrieprocessor-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", str(venv)], check=True, timeout=120)
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    for command in ("cowrie-loader", "cowrie-db", "cowrie-enrich"):
        result = subprocess.run(
            [str(venv / "bin" / command), "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
    # The migrations ship inside the wheel: a plain install can create a database.
    db = tmp_path / "wheel.sqlite"
    result = subprocess.run(
        [str(venv / "bin" / "cowrie-db"), "upgrade", "--db", f"sqlite:///{db}", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["to"] == schema.head_revision()


def test_rerun_with_nothing_new_beside_a_non_log_file_succeeds(tmp_path: Path) -> None:
    logs = tmp_path / "var-log-cowrie"
    logs.mkdir()
    (logs / "cowrie.json").write_bytes((SAMPLES / "cowrie.json.2026-11-30").read_bytes())
    (logs / "cowrie.log").write_text("2026-11-30T23:50:01 [HoneyPotSSHTransport] text log\n")
    (logs / "empty.json").write_text("")  # truncated by copytruncate rotation
    url = f"sqlite:///{tmp_path / 'rerun.sqlite'}"
    first = run("cowrie-loader", "ingest", str(logs), "--db", url, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["events_loaded"] == 25
    again = run("cowrie-loader", "ingest", str(logs), "--db", url, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["events_loaded"] == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("garbage", "cannot be parsed"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_bad_database_urls_exit_2_with_a_message(url: str, message: str) -> None:
    result = run("cowrie-loader", "ingest", str(SAMPLES), "--db", url, "--json")
    assert result.returncode == 2
    assert message in result.stderr
    assert json.loads(result.stdout)["ok"] is False
    assert "Traceback" not in result.stderr


def test_json_summary_with_an_undecodable_file_name(tmp_path: Path) -> None:
    name = os.fsdecode(b"cowrie_\xff.json")
    (tmp_path / name).write_bytes((SAMPLES / "cowrie.json.2026-11-30").read_bytes())
    url = f"sqlite:///{tmp_path / 'names.sqlite'}"
    result = run("cowrie-loader", "ingest", str(tmp_path / name), "--db", url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["events_loaded"] == 25
    assert summary["per_file"][0]["path"].endswith("cowrie_\udcff.json")


@pytest.mark.postgres
def test_two_loaders_at_once_on_an_empty_postgresql_database(pg_url: str) -> None:
    command = [str(BIN / "cowrie-loader"), "ingest", str(SAMPLES), "--db", pg_url, "--json"]
    env = {**os.environ, "COWRIEPROC_CONFIG": ""}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    results = [(*p.communicate(timeout=120), p.returncode) for p in (first, second)]
    assert [rc for _, _, rc in results] == [0, 0], [err for _, err, _ in results]
    loaded = sorted(json.loads(out)["events_loaded"] for out, _, _ in results)
    assert sum(loaded) == 31
