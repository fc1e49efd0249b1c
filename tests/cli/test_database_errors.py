"""Every command that opens the database fails the same way when it cannot: exit code 2,
one line on stderr (and ``{"ok": false, "error": ...}`` with --json), no traceback, and
never the password of the URL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from cowrieprocessor.cli import db as db_cli
from cowrieprocessor.cli import enrich, loader
from cowrieprocessor.db.errors import error_text
from tests.conftest import PG_ADMIN_URL
from tests.conftest import _require_pg as require_pg

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "Sup3r-secret-pw"

COMMANDS: dict[str, tuple[typer.Typer, list[str]]] = {
    "cowrie-loader ingest": (loader.app, ["ingest", str(REPO / "samples")]),
    "cowrie-db upgrade": (db_cli.app, ["upgrade"]),
    "cowrie-db downgrade": (db_cli.app, ["downgrade"]),
    "cowrie-db current": (db_cli.app, ["current"]),
    "cowrie-db check": (db_cli.app, ["check"]),
    "cowrie-enrich refresh": (enrich.app, ["refresh"]),
    "cowrie-enrich refresh --workers 2": (enrich.app, ["refresh", "--workers", "2"]),
    "cowrie-enrich diagnose": (enrich.app, ["diagnose"]),
    "cowrie-enrich cache stats": (enrich.app, ["cache", "stats"]),
    "cowrie-enrich cache cleanup": (enrich.app, ["cache", "cleanup"]),
    "cowrie-enrich cache invalidate": (enrich.app, ["cache", "invalidate", "--service", "spur"]),
    "cowrie-enrich migrate-cache --rollback": (
        enrich.app,
        ["migrate-cache", "--rollback", "--migration-id", "m1"],
    ),
}


def _closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _bad_urls() -> dict[str, tuple[str, str]]:
    """Kind -> (URL, a piece of the message an operator must see)."""
    return {
        "nonsense scheme": ("nonsense://x", "unsupported database 'nonsense'"),
        "nothing listening": (
            f"postgresql://postgres:{SECRET}@127.0.0.1:{_closed_port()}/none",
            "Connection refused",
        ),
        "no such database": (
            make_url(PG_ADMIN_URL)
            .set(password=SECRET, database="cp_no_such_database")
            .render_as_string(hide_password=False),
            'database "cp_no_such_database" does not exist',
        ),
    }


def _assert_one_clean_line(stderr: str, stdout: str, expected: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr
    assert SECRET not in stderr + stdout
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize(
    "kind",
    [
        "nonsense scheme",
        "nothing listening",
        pytest.param("no such database", marks=pytest.mark.postgres),
    ],
)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_exits_2_with_one_line(
    command: str, kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if kind == "no such database":
        require_pg()  # the server must answer for it to say the database is missing
    url, expected = _bad_urls()[kind]
    monkeypatch.setenv("COWRIEPROC_CONFIG", "")
    monkeypatch.setenv("COWRIEPROC_STATUS_DIR", str(tmp_path / "status"))
    monkeypatch.setenv("COWRIEPROC_CACHE_DIR", str(tmp_path / "cache"))
    app, args = COMMANDS[command]
    result = CliRunner().invoke(app, [*args, "--db", url, "--json"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no crash
    message = _assert_one_clean_line(result.stderr, result.stdout, expected)
    assert json.loads(result.stdout) == {"ok": False, "error": message}


@pytest.mark.parametrize("kind", ["nonsense scheme", "nothing listening"])
def test_refresh_console_script_on_a_bad_database(kind: str, tmp_path: Path) -> None:
    """The installed script, where an uncaught error would print Typer's traceback."""
    url, expected = _bad_urls()[kind]
    result = subprocess.run(
        [str(BIN / "cowrie-enrich"), "refresh", "--db", url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COWRIEPROC_CONFIG": "", "COWRIEPROC_STATUS_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    _assert_one_clean_line(result.stderr, result.stdout, expected)


def test_error_text_is_the_driver_message_on_one_line_without_the_password() -> None:
    url = f"postgresql://postgres:{SECRET}@db.example:5432/cowrie"
    wrapped = OperationalError(
        "SELECT 1", {}, Exception(f"password {SECRET} refused\n\tcheck  pg_hba.conf")
    )
    assert error_text(wrapped, url) == "password *** refused check pg_hba.conf"
    assert error_text(ValueError("plain"), "not a url") == "plain"
    assert error_text(RuntimeError()) == "RuntimeError"
