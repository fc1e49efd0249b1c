"""A setting that cannot be used stops every command with exit code 2 and one line that
names the setting and what is wrong, never the value given (it may be a key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cowrieprocessor.cli import db, enrich, loader

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_machine_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COWRIEPROC_CONFIG", "")
    monkeypatch.chdir(tmp_path)


def _one_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bad_variables_are_named_on_one_line_without_their_values(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    result = CliRunner().invoke(
        loader.app,
        ["ingest", str(REPO / "samples"), "--db", url, "--json"],
        env={"COWRIEPROC_BATCH_SIZE": "Sup3r-secret", "COWRIEPROC_DB_POOL_SIZE": "Sup3r-2"},
    )
    line = _one_line(result)
    assert line.startswith("error: configuration: ")
    assert "batch_size: Input should be a valid integer" in line
    assert "db_pool_size: Input should be a valid integer" in line
    assert "Sup3r" not in result.stdout + result.stderr
    assert json.loads(result.stdout) == {"ok": False, "error": line.removeprefix("error: ")}


def test_a_validator_that_names_its_setting_is_not_named_twice(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        enrich.app,
        ["refresh", "--db", f"sqlite:///{tmp_path / 'x.sqlite'}"],
        env={"COWRIEPROC_VIRUSTOTAL_RATE_LIMIT": "often"},
    )
    line = _one_line(result)
    assert "configuration: virustotal_rate_limit: 'often' in 'often' is not COUNT/UNIT" in line


def test_a_config_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sensors.toml"
    path.write_text("db_url =\n")
    result = CliRunner().invoke(db.app, ["current", "--config", str(path)])
    line = _one_line(result)
    assert line.startswith(f"error: configuration: {path} is not valid TOML: Invalid value")
    missing = CliRunner().invoke(db.app, ["current", "--config", str(tmp_path / "none.toml")])
    assert "configuration: config file" in _one_line(missing)


KEY_VARIABLES = {
    "COWRIEPROC_VT_API_KEY": "vt_api_key",
    "COWRIEPROC_URLHAUS_API_KEY": "urlhaus_api_key",
    "COWRIEPROC_SPUR_API_KEY": "spur_api_key",
}


@pytest.mark.parametrize("variable", sorted(KEY_VARIABLES))
@pytest.mark.parametrize("key", ["VTKEY-SECRÉT-123", "VTKEY-SECRET\n-123"])
@pytest.mark.parametrize("command", ["refresh", "check-credentials"])
def test_a_key_no_header_can_carry_is_a_configuration_error_that_hides_it(
    tmp_path: Path, variable: str, key: str, command: str
) -> None:
    args = [command, "--json"]
    if command == "refresh":
        args += ["--db", f"sqlite:///{tmp_path / 'x.sqlite'}"]
    result = CliRunner().invoke(enrich.app, args, env={variable: key})
    line = _one_line(result)
    setting = KEY_VARIABLES[variable]
    assert line == (
        f"error: configuration: {setting} holds a character that cannot be sent in an HTTP "
        "header (only printable ASCII is allowed; the key is not shown)"
    )
    assert "SECR" not in result.stdout + result.stderr
    assert json.loads(result.stdout) == {"ok": False, "error": line.removeprefix("error: ")}
    assert not (tmp_path / "x.sqlite").exists()  # stopped before anything was opened


def test_a_dshield_email_no_user_agent_can_carry_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(
        enrich.app,
        ["refresh", "--db", f"sqlite:///{tmp_path / 'x.sqlite'}"],
        env={"COWRIEPROC_DSHIELD_EMAIL": "séc@example.org"},
    )
    assert _one_line(result) == (
        "error: configuration: dshield_email must be one e-mail address in printable ASCII "
        "(it is sent in the User-Agent header)"
    )


def test_a_misspelt_key_in_the_config_file_stops_the_command_before_any_work(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sensors.toml"
    path.write_text(
        'vt_apikey = "Sup3r-secret"\nsensor = "s1"\nuse_database_cache = true\n'
        "diag_min_coverage_pct = 50\nbogus_thing = 1\n"
    )
    database = tmp_path / "cowrie.sqlite"
    result = CliRunner().invoke(
        loader.app,
        ["ingest", str(REPO / "samples"), "--db", f"sqlite:///{database}", "--config", str(path)],
    )
    line = _one_line(result)
    assert line == (
        f"error: configuration: {path} has unknown settings: "
        "'vt_apikey' (did you mean vt_api_key?), 'bogus_thing'"
    )
    assert "Sup3r" not in result.stdout + result.stderr
    assert not database.exists()

    path.write_text('vt_api_key = "Sup3r-secret"\nsensor = "s1"\nUSE_DATABASE_CACHE = true\n')
    result = CliRunner().invoke(
        loader.app,
        ["ingest", str(REPO / "samples"), "--db", f"sqlite:///{database}", "--config", str(path)],
    )
    assert result.exit_code == 0, result.output
