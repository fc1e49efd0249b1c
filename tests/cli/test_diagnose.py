"""`cowrie-enrich diagnose` as a user runs it: exit codes, JSON, Markdown, the terminal
tables with attacker text escaped, advice, and the priority export.

One test starts the real console script; the others call the same Typer app in this
process (starting Python with every dependency takes seconds on a busy machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cowrieprocessor.cli import common
from cowrieprocessor.cli.enrich import app
from cowrieprocessor.db.textrule import encode_text
from cowrieprocessor.enrichment.targets import IdFilter
from tests.diagnostics.scenario import EVIL_ID, H, scenario_database

BIN = Path(sys.executable).parent


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def scenario_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from scenario_database(request.param, tmp_path_factory)


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``invoke(*args, env=...)``: run `cowrie-enrich` in this process, wide console."""
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setenv("COWRIEPROC_CONFIG", "")
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, list(args), env=env)

    return run


def test_json_summary_and_exit_code(scenario_url: str, invoke: Any) -> None:
    result = invoke("diagnose", "--db", scenario_url, "--json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert out["healthy"] is False
    assert [key for key in out if key.isdigit()] == [str(n) for n in range(1, 11)]
    assert (out["1"]["sessions"], out["1"]["complete"], out["1"]["coverage_pct"]) == (
        371,
        250,
        69.06,
    )
    assert out["2"]["checks"][0]["advice"][1]["text"].startswith(
        "50 sessions: the key was refused (HTTP 401); this is a key problem"
    )
    assert out["3"]["fell_since"]["sessions"] == "2026-03-22"
    assert out["10"]["hibp"]["coverage_pct"] == 91.46


def test_console_script_exit_code(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The installed script, as cron and systemd run it (SQLite; slow to start)."""
    for url in scenario_database("sqlite", tmp_path_factory):
        result = subprocess.run(
            [str(BIN / "cowrie-enrich"), "diagnose", "--db", url, "--only", "1,10", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COWRIEPROC_CONFIG": ""},
            check=False,
        )
        assert result.returncode == 1, result.stderr
        out = json.loads(result.stdout)
        assert (out["healthy"], out["1"]["coverage_pct"], out["10"]["hibp"]["coverage_pct"]) == (
            False,
            69.06,
            91.46,
        )


def test_thresholds_from_options_and_environment_make_it_healthy(
    scenario_url: str, invoke: Any
) -> None:
    result = invoke(
        "diagnose", "--db", scenario_url, "--only", "1,2,10", "--min-sessions", "60",
        "--min-dshield", "60", "--min-urlhaus", "85", "--json",
        env={"COWRIEPROC_DIAG_MIN_SPUR": "70"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["healthy"] is True
    assert sorted(key for key in out if key.isdigit()) == ["1", "10", "2"]
    assert out["thresholds"]["min_spur"] == 70.0


def test_terminal_tables_escape_attacker_text_and_print_advice(
    scenario_url: str, invoke: Any
) -> None:
    result = invoke("diagnose", "--db", scenario_url, "--only", "2,6,9", "--samples", "60")
    assert result.exit_code == 1
    text = result.stderr
    assert "\x1b" not in text and "\x00" not in text
    assert "evil\\x1b[2J\\x00" in text  # the hand-made session id, escaped
    assert "dshield: no answer \\x1b[31m in time" in text  # its error message
    assert "FAIL dshield: 69.06 (needs >= 95)" in text
    assert "50 sessions: the key was refused (HTTP 401); this is a key problem" in text
    assert "run: cowrie-enrich check-credentials" in text
    assert "41 sessions: rate limited (HTTP 429)" in text
    assert "UNHEALTHY" in text
    assert result.stdout == ""


def test_markdown_report(scenario_url: str, invoke: Any) -> None:
    result = invoke("diagnose", "--db", scenario_url, "--only", "1,3", "--format", "markdown")
    assert result.exit_code == 1
    md = result.stdout
    assert md.startswith("# Enrichment diagnosis\n\n**Unhealthy: a threshold was missed**")
    assert "## 1. Session enrichment completeness" in md
    assert "| 371 | 9 | 309 (85.36 %) | 250 | 69.06 % | 95.00 % |" in md
    assert "| 2026-03-22 | 4 | 0.00 % | 0.00 % | 0.00 % | 0.00 % |" in md
    assert "- **FAIL** trend sessions: 0 (needs >= 90)" in md
    assert "`cowrie-enrich refresh --sessions 0 --since 2026-03-22`" in md


def test_export_priority_sessions(scenario_url: str, invoke: Any, tmp_path: Path) -> None:
    target = tmp_path / "priority.tsv"
    result = invoke("diagnose", "--db", scenario_url, "--only", "8", "--export", str(target))
    assert result.exit_code == 0, result.output  # no check belongs to diagnostic 8
    lines = target.read_text("utf-8").splitlines()
    assert len(lines) == 44
    # Two transfers, then one upload; the real sessions with logins come in between.
    assert lines[:2] == [f"{H}\th220", f"{H}\th230"]
    assert {f"{H}\th221", f"{H}\th222"} <= set(lines)
    assert all(line.count("\t") == 1 for line in lines)
    assert "exported 44 session(s)" in result.stderr
    # The id with an escape sequence and a NUL goes out as its original text, and
    # refresh --ids-from reads it back as naming the stored session.
    assert f"{H}\tevil\x1b[2J\x00" in lines
    ids = IdFilter.from_file(target)
    assert len(ids) == 44
    assert ids.matches(H, encode_text(EVIL_ID))
    assert ids.matches(H, "h220") and not ids.matches(H, "h240")


def test_diagnosis_failures_exit_2(tmp_path: Path, invoke: Any) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    bad = invoke("diagnose", "--db", url, "--only", "0,11")
    assert bad.exit_code == 2
    assert "numbered 1 to 10" in bad.stderr
    nowhere = invoke("diagnose", "--db", "postgresql://postgres@127.0.0.1:1/none", "--json")
    assert nowhere.exit_code == 2
    assert json.loads(nowhere.stdout)["ok"] is False
    assert invoke("diagnose", "--db", url, "--period", "month").exit_code == 2
    assert invoke("diagnose", "--db", url, "--since", "yesterday").exit_code == 2


def test_sensor_names_in_checks_are_escaped(tmp_path: Path, invoke: Any) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import create_engine
    from tests.diagnostics.scenario import SESSIONS

    url = f"sqlite:///{tmp_path / 'evil.sqlite'}"
    engine = create_engine(url)
    schema.upgrade(engine)
    now = datetime(2026, 12, 3, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(SESSIONS).values(
                sensor=encode_text("s\x1b]0;owned\x07\x00"), session_id="a", updated_at=now,
                first_event_at=now, command_count=1,
            )
        )  # fmt: skip
    engine.dispose()
    result = invoke("diagnose", "--db", url, "--only", "7,8")
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "FAIL sensor s\\x1b]0;owned\\x07\\x00: 0 (needs >= 90)" in result.stderr
    md = invoke("diagnose", "--db", url, "--only", "7", "--format", "markdown").stdout
    assert "| s\\x1b]0;owned\\x07\\x00 | 1 | 0.00 % |" in md
