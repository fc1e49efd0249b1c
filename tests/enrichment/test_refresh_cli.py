"""`cowrie-enrich refresh` as a command: exit codes, the --json summary, the status file,
and that no key appears in anything a run writes (checked on a real subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import MetaData, func, select
from typer.testing import CliRunner
from werkzeug import Response

from cowrieprocessor.cli.enrich import app
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import SessionSummary, table_of
from cowrieprocessor.db.textrule import decode_json
from cowrieprocessor.ingest.loader import Loader
from tests.conftest import SHARED_LOGS
from tests.enrichment.servers import EMAIL, KEYS, FakeProviders, fast_settings

LOG = SHARED_LOGS / "pol-alvarezzz-cloud-cowrie-honeypot" / "cowrie.json.2026-03-19"
SESSIONS, FILES = 121, 2


@pytest.fixture
def db(sqlite_url: str) -> str:
    engine = create_engine(sqlite_url)
    schema.upgrade(engine)
    Loader(engine, default_sensor="pol").ingest([str(LOG)])
    engine.dispose()
    return sqlite_url


@pytest.fixture
def providers(httpserver: HTTPServer) -> FakeProviders:
    return FakeProviders(httpserver, keys=dict(KEYS))


def _environment(providers: FakeProviders, **changes: Any) -> dict[str, str]:
    """COWRIEPROC_* variables for every fast setting; keys left out (given per test)."""
    values = fast_settings(providers.base_url, **changes)
    for name in ("vt_api_key", "urlhaus_api_key", "spur_api_key", "dshield_email"):
        values.pop(name)
    return {f"COWRIEPROC_{name.upper()}": str(value) for name, value in values.items()}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, providers: FakeProviders, tmp_path: Path) -> Path:
    for name, value in _environment(providers).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COWRIEPROC_CONFIG", raising=False)
    return tmp_path


def _key_flags() -> list[str]:
    return [
        "--vt-api-key",
        KEYS["virustotal"],
        "--urlhaus-api-key",
        KEYS["urlhaus"],
        "--spur-api-key",
        KEYS["spur"],
        "--dshield-email",
        EMAIL,
    ]


def test_json_summary_and_status_file(db: str, cli_env: Path, providers: FakeProviders) -> None:
    status_dir = cli_env / "status"
    args = ["refresh", "--db", db, "--cache-dir", str(cli_env / "c"), "--json"]
    result = CliRunner().invoke(app, [*args, "--status-dir", str(status_dir), *_key_flags()])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["ok"] is True
    assert summary["state"] == "finished"
    assert summary["failed_services"] == []
    assert summary["db"] == db
    assert summary["rows"]["sessions"] == {
        "total": SESSIONS,
        "scanned": SESSIONS,
        "enriched": SESSIONS,
    }
    assert summary["rows"]["files"] == {"total": FILES, "scanned": FILES, "enriched": FILES}
    assert sum(summary["outcomes"]["dshield"].values()) == SESSIONS
    assert summary["outcomes"]["urlhaus"]["skipped/not_applicable"] == FILES  # uploads
    assert summary["api_calls"] == providers.requests()
    cache = summary["cache"]
    assert (cache["hits"], cache["misses"]) == (0, providers.requests())
    # Sessions share source IPs: each distinct key was asked once, the rest were repeats.
    assert cache["repeats_in_run"] == sum(
        stats["memo_hits"] for stats in summary["lookups"].values()
    )
    assert cache["repeats_in_run"] > 0
    assert summary["status_file"] == str(status_dir / "enrichment_refresh.json")

    status = orjson.loads((status_dir / "enrichment_refresh.json").read_bytes())
    for name in ("rows", "outcomes", "api_calls", "cache", "state", "mode"):
        assert status[name] == summary[name]

    again = CliRunner().invoke(app, [*args, "--status-dir", str(status_dir), *_key_flags()])
    assert again.exit_code == 0
    assert orjson.loads(again.stdout)["api_calls"] == 0
    assert orjson.loads(again.stdout)["rows"]["sessions"]["enriched"] == 0


def test_exit_1_when_a_service_fails_every_lookup(
    db: str, cli_env: Path, providers: FakeProviders
) -> None:
    flags = _key_flags()
    flags[flags.index("--spur-api-key") + 1] = "not-the-key"
    args = ["refresh", "--db", db, "--json", "--services", "spur,dshield"]
    args += ["--cache-dir", str(cli_env / "c"), "--status-dir", str(cli_env / "s")]
    result = CliRunner().invoke(app, [*args, *flags])
    assert result.exit_code == 1
    summary = orjson.loads(result.stdout)
    assert (summary["ok"], summary["failed_services"]) == (False, ["spur"])
    assert summary["outcomes"]["spur"] == {"error/auth": 1, "skipped/auth_failed": SESSIONS - 1}
    assert "not-the-key" not in result.output


@pytest.mark.parametrize(
    "extra",
    [["--stale", "--all"], ["--services", "dshield,nope"], ["--since", "yesterday"]],
    ids=["two-modes", "unknown-service", "bad-since"],
)
def test_usage_errors_exit_2(db: str, cli_env: Path, extra: list[str]) -> None:
    result = CliRunner().invoke(app, ["refresh", "--db", db, "--json", *extra])
    assert result.exit_code == 2
    assert orjson.loads(result.stdout)["ok"] is False


def _dump_database(url: str) -> bytes:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    chunks = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                chunks.append(repr(tuple(row)).encode("utf-8", "surrogatepass"))
    engine.dispose()
    return b"\n".join(chunks)


def test_keys_never_appear_in_anything_a_run_writes(
    db: str, providers: FakeProviders, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    key_file = tmp_path / "urlhaus.key"
    key_file.write_text(KEYS["urlhaus"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIEPROC_")}
    env |= _environment(providers)
    env |= {
        "HOME": str(home),
        "COWRIEPROC_VT_API_KEY": KEYS["virustotal"],
        "COWRIEPROC_URLHAUS_API_KEY": f"file:{key_file}",
        "COWRIEPROC_SPUR_API_KEY": "env:SPUR_TOKEN_FOR_TEST",
        "SPUR_TOKEN_FOR_TEST": KEYS["spur"],
        "COWRIEPROC_DSHIELD_EMAIL": EMAIL,
    }
    # Make one service fail so error paths write messages too.
    providers.override("dshield", Response("x", status=500))
    script = Path(sys.executable).parent / "cowrie-enrich"
    cache_dir = tmp_path / "cache"
    done = subprocess.run(
        [str(script), "refresh", "--db", db, "--cache-dir", str(cache_dir), "--verbose"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode()[-2000:]  # dshield failed every lookup
    assert b"dshield failed for every lookup" in done.stderr
    assert providers.requests("spur") > 0 and providers.requests("urlhaus") > 0
    # The keys did reach the providers (so they were really in play) ...
    assert any(h.get("X-Apikey") == KEYS["virustotal"] for h in providers.headers_seen)

    status_file = home / ".cache" / "cowrieprocessor" / "status" / "enrichment_refresh.json"
    written = {"stdout": done.stdout, "stderr": done.stderr, "status": status_file.read_bytes()}
    cache_files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert len(cache_files) > 100
    for path in cache_files:
        written[str(path)] = path.read_bytes()
    written["database"] = _dump_database(db)
    assert b"not_found" in written["database"] and b"http_status" in written["database"]

    # ... and none of them, nor the e-mail, is in anything the run wrote.
    for secret in [*KEYS.values(), EMAIL]:
        leaked = [name for name, data in written.items() if secret.encode() in data]
        assert leaked == [], f"{secret[:6]}... found in {leaked}"


@pytest.mark.slow  # two process starts: about 3 s on an idle machine
def test_sigkill_then_rerun_finishes_without_asking_twice(
    db: str, providers: FakeProviders, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COWRIEPROC_")}
    env |= _environment(providers)
    script = Path(sys.executable).parent / "cowrie-enrich"
    status_dir = tmp_path / "status"
    command = [str(script), "refresh", "--db", db, "--batch-size", "10"]
    command += ["--services", "dshield,spur", "--cache-dir", str(tmp_path / "cache")]
    command += ["--status-dir", str(status_dir), *_key_flags()]
    providers.delay = 0.05
    engine = create_engine(db)
    table = table_of(SessionSummary)
    written = select(func.count()).where(table.c.enrichment.is_not(None))

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 20:
        time.sleep(0.02)
        with engine.connect() as conn:
            done = conn.scalar(written) or 0
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        done = conn.scalar(written) or 0
    assert 20 <= done < SESSIONS
    first = providers.by_service()

    providers.delay = 0.0
    rerun = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.enrichment)).all()
    engine.dispose()
    assert len(rows) == SESSIONS
    assert all(sorted(row.enrichment) == ["dshield", "spur"] for row in rows)
    assert all(
        decode_json(row.enrichment[name])["status"] in ("success", "not_found")
        for row in rows
        for name in ("dshield", "spur")
    )
    # Each distinct address asked once over both runs; at most the one request in flight
    # when the first run was killed (its answer never reached the cache) is asked again.
    distinct = len({s.key for s in providers.seen if s.service == "dshield"})
    total = providers.by_service()
    assert first["dshield"] < distinct
    assert distinct <= total["dshield"] <= distinct + 1
    assert distinct <= total["spur"] <= distinct + 1
