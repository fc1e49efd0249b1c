"""Diagnose thresholds from the config file: ``diag_<name>`` keys, with the precedence
option > COWRIEPROC_DIAG_<NAME> > config file > runbook default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cowrieprocessor.cli import enrich_diagnose
from cowrieprocessor.cli.enrich import app
from cowrieprocessor.config import load_settings
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.diagnostics import Thresholds
from tests.diagnostics.scenario import scenario_database

DIAG_VARIABLES = [f"COWRIEPROC_DIAG_{name.upper()}" for name in Thresholds().as_dict()]


@pytest.fixture(scope="module")
def scenario_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from scenario_database("sqlite", tmp_path_factory)


@pytest.fixture
def empty_url(tmp_path: Path) -> str:
    """A database with the schema and no rows (diagnose refuses one without a schema)."""
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    engine = create_engine(url)
    schema.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No threshold variable or config file of the machine running the tests counts."""
    for name in DIAG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COWRIEPROC_CONFIG", "")
    monkeypatch.chdir(tmp_path)  # no ./sensors.toml


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensors.toml"
    path.write_text(text)
    return path


def _diagnose(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["diagnose", *args], env=env)


def _thresholds(result: Result) -> dict[str, Any]:
    assert result.exit_code in (0, 1), result.output
    found: dict[str, Any] = json.loads(result.stdout)["thresholds"]
    return found


def test_thresholds_from_the_config_file(tmp_path: Path, empty_url: str) -> None:
    path = _config(
        tmp_path,
        f'db_url = "{empty_url}"\n'
        "diag_min_spur = 70\ndiag_goal_sessions = 97.5\ndiag_max_inconsistent = 3\n",
    )
    found = _thresholds(_diagnose("--config", str(path), "--only", "1", "--json"))
    assert (found["min_spur"], found["goal_sessions"], found["max_inconsistent"]) == (
        70.0,
        97.5,
        3,
    )
    assert (found["min_dshield"], found["min_sessions"]) == (95.0, 90.0)  # defaults
    # The other commands read the same file and ignore the diag_ keys.
    assert load_settings(path).db_url == empty_url


def test_option_over_variable_over_file_over_default(tmp_path: Path, empty_url: str) -> None:
    path = _config(tmp_path, "diag_min_spur = 70\ndiag_min_dshield = 91\ndiag_min_hibp = 50.5\n")
    result = _diagnose(
        "--db", empty_url, "--only", "1", "--json", "--min-spur", "77",
        env={
            "COWRIEPROC_CONFIG": str(path),  # found the way an operator's cron job finds it
            "COWRIEPROC_DIAG_MIN_SPUR": "75",
            "COWRIEPROC_DIAG_MIN_DSHIELD": "92",
            "COWRIEPROC_DIAG_MIN_HIBP": "  ",  # blank: unset, so the file's value counts
        },
    )  # fmt: skip
    found = _thresholds(result)
    assert found["min_spur"] == 77.0  # option
    assert found["min_dshield"] == 92.0  # variable over file
    assert found["min_hibp"] == 50.5  # file over default
    assert found["min_urlhaus"] == 90.0  # default


def test_file_thresholds_decide_the_exit_code(tmp_path: Path, scenario_url: str) -> None:
    args = ("--db", scenario_url, "--only", "1,2,10", "--json")
    assert _diagnose(*args).exit_code == 1  # the runbook's thresholds are missed
    path = _config(
        tmp_path,
        "diag_min_sessions = 60\ndiag_min_dshield = 60\ndiag_min_urlhaus = 85\n"
        "diag_min_spur = 70\n",
    )
    result = _diagnose(*args, "--config", str(path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["healthy"] is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('diag_min_spur = "abc"', "diag_min_spur: 'abc' is not a number"),
        ("diag_min_spur = true", "diag_min_spur: True is not a number"),
        ("diag_min_spur = 150", "diag_min_spur: min_spur is 150.0; a percentage lies in 0..100"),
        ("diag_max_inconsistent = 1.5", "diag_max_inconsistent: 1.5 is not a whole number"),
        ("diag_min_spurr = 70", "unknown key diag_min_spurr (known: diag_min_sessions,"),
        ("diag_min_spur = = 70", "is not valid TOML"),
    ],
)
def test_bad_file_values_exit_2_naming_file_and_key(
    tmp_path: Path, empty_url: str, text: str, message: str
) -> None:
    path = _config(tmp_path, text + "\n")
    result = _diagnose("--db", empty_url, "--config", str(path), "--json")
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith(f"error: config file {path}") and message in line, line
    assert "\n" not in line


def test_a_bad_file_value_is_refused_even_where_a_variable_overrides_it(
    tmp_path: Path, empty_url: str
) -> None:
    path = _config(tmp_path, "diag_min_spur = 150\n")
    result = _diagnose(
        "--db", empty_url, "--config", str(path), "--only", "1", "--json",
        env={"COWRIEPROC_DIAG_MIN_SPUR": "60"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "diag_min_spur: min_spur is 150.0" in result.stderr


def test_help_defaults_are_the_runbook_defaults() -> None:
    defaults = Thresholds().as_dict()
    assert {name: defaults[name] for name in enrich_diagnose._DEFAULTS} == (
        enrich_diagnose._DEFAULTS
    )
