"""Commands that read a database refuse one that is not there instead of creating it.

A mistyped ``--db`` used to create a new SQLite file (with the schema) that diagnose then
called healthy. Now the reading commands exit 2 naming the file and what creates it,
and leave nothing behind; an empty database is refused, not given the schema; diagnose
calls a database without sessions unhealthy. Also: option values checked before any
work (``--export``, ``--service``, ``--ids-from``) and a downgrade with nothing to remove.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cowrieprocessor.cli import common
from cowrieprocessor.cli.db import app as db_app
from cowrieprocessor.cli.enrich import app as enrich_app
from cowrieprocessor.cli.loader import app as loader_app
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine, redact_url
from cowrieprocessor.enrichment.targets import IdFilter

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

#: The reading commands, and the app each belongs to.
READERS: list[tuple[Any, tuple[str, ...]]] = [
    (enrich_app, ("diagnose",)),
    (enrich_app, ("cache", "stats")),
    (enrich_app, ("cache", "cleanup")),
    (enrich_app, ("cache", "invalidate", "--service", "dshield")),
    (enrich_app, ("migrate-cache", "--rollback", "--migration-id", "m1")),
    (enrich_app, ("migrate-cache", "--from-disk", str(SAMPLES), "--to-database", "--dry-run")),
    (db_app, ("current",)),
    (db_app, ("check",)),
    (db_app, ("downgrade",)),
]
_IDS = [" ".join(args) for _, args in READERS]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(common.console, "width", 400)
    monkeypatch.setenv("COWRIEPROC_CONFIG", "")
    monkeypatch.setenv("COWRIEPROC_STATUS_DIR", str(tmp_path / "status"))
    monkeypatch.setenv("COWRIEPROC_CACHE_DIR", str(tmp_path / "disk"))
    monkeypatch.delenv("COWRIEPROC_DB_URL", raising=False)


def run(app: Any, *args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def schema_only(url: str) -> str:
    """``url`` after `cowrie-db upgrade`: the schema and no rows."""
    assert run(db_app, "upgrade", "--db", url).exit_code == 0
    return url


@pytest.mark.parametrize(("app", "args"), READERS, ids=_IDS)
def test_a_missing_sqlite_file_is_refused_and_not_created(
    app: Any, args: tuple[str, ...], tmp_path: Path
) -> None:
    path = tmp_path / "typo" / "cowrie.sqlite"
    result = run(app, *args, "--db", f"sqlite:///{path}")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: the SQLite database {path} does not exist (a mistyped --db?); "
        "`cowrie-loader ingest` or `cowrie-db upgrade` creates it\n"
    )
    assert not path.parent.exists()
    as_json = run(app, *args, "--db", f"sqlite:///{path}", "--json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout)["ok"] is False
    assert not path.parent.exists()


def test_writing_commands_create_the_database_reading_ones_do_not(tmp_path: Path) -> None:
    upgraded = tmp_path / "new" / "a.sqlite"
    loaded = tmp_path / "other" / "b.sqlite"
    assert run(db_app, "upgrade", "--db", f"sqlite:///{upgraded}").exit_code == 0
    ingest = run(loader_app, "ingest", str(SAMPLES), "--db", f"sqlite:///{loaded}")
    assert ingest.exit_code == 0, ingest.output
    assert upgraded.is_file() and loaded.is_file()
    # A reading command opens them, and refuses a file beside them that is not there.
    assert run(db_app, "check", "--db", f"sqlite:///{upgraded}").exit_code == 0
    typo = upgraded.with_name("a.sqlit")
    assert run(enrich_app, "diagnose", "--db", f"sqlite:///{typo}").exit_code == 2
    assert sorted(p.name for p in upgraded.parent.iterdir()) == ["a.sqlite"]


@pytest.mark.parametrize(
    "args",
    [
        ("diagnose",),
        ("cache", "stats"),
        ("cache", "cleanup"),
        ("cache", "invalidate", "--service", "spur"),
    ],
    ids=lambda args: " ".join(args),
)
def test_an_empty_database_is_refused_not_given_the_schema(
    args: tuple[str, ...], db_url: str
) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # exists, holds nothing
    tier = ("--tier", "database") if args[0] == "cache" else ()
    result = run(enrich_app, *args, *tier, "--db", db_url)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {redact_url(db_url)}: the database is empty (no cowrieprocessor schema); "
        "`cowrie-loader ingest` or `cowrie-db upgrade --db URL` creates the schema\n"
    )
    engine = create_engine(db_url)
    found = schema.state(engine)
    engine.dispose()
    assert (found.current, found.empty) == (None, True)


def test_diagnose_without_sessions_is_unhealthy(db_url: str) -> None:
    url = schema_only(db_url)
    result = run(enrich_app, "diagnose", "--db", url, "--only", "1", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["healthy"] is False
    assert report["checks"][0] == {
        "diagnostic": 0,
        "name": "sessions loaded",
        "value": 0,
        "threshold": 1,
        "kind": "min",
        "ok": False,
        "advice": [
            {
                "text": "no sessions are loaded: load the logs, or point --db at the database "
                "they were loaded into",
                "command": "cowrie-loader ingest /var/log/cowrie/",
            }
        ],
    }
    assert result.stderr == (
        f"warning: no sessions loaded in {redact_url(url)}; unhealthy until "
        "`cowrie-loader ingest` loads some (is --db the right database?)\n"
    )
    terminal = run(enrich_app, "diagnose", "--db", url, "--only", "1")
    assert terminal.exit_code == 1
    lines = terminal.stderr.splitlines()
    assert lines[1] == "FAIL sessions loaded: 0 (needs >= 1)"
    assert lines[-1] == "UNHEALTHY: no sessions loaded"
    markdown = run(enrich_app, "diagnose", "--db", url, "--only", "1", "--format", "markdown")
    assert markdown.stdout.startswith(
        "# Enrichment diagnosis\n\n**Unhealthy: no sessions loaded**\n\n"
        "- **FAIL** sessions loaded: 0 (needs >= 1)\n"
    )


def test_diagnose_counts_sessions_since(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'loaded.sqlite'}"
    assert run(loader_app, "ingest", str(SAMPLES), "--db", url).exit_code == 0
    loaded = json.loads(run(enrich_app, "diagnose", "--db", url, "--json").stdout)
    assert [c for c in loaded["checks"] if c["diagnostic"] == 0] == []
    later = run(enrich_app, "diagnose", "--db", url, "--since", "2100-01-01", "--json")
    assert later.exit_code == 1
    assert json.loads(later.stdout)["checks"][0]["name"] == "sessions loaded"
    assert "warning: no sessions loaded since 2100-01-01 in" in later.stderr


def test_export_to_a_path_that_cannot_be_written_exits_2_before_the_work(
    tmp_path: Path,
) -> None:
    url = schema_only(f"sqlite:///{tmp_path / 'c.sqlite'}")
    missing = tmp_path / "nowhere" / "p.tsv"
    cases = {
        missing: f"error: --export {missing}: the directory {missing.parent} does not exist\n",
        tmp_path: f"error: --export {tmp_path}: is a directory; give a file name\n",
    }
    for target, message in cases.items():
        result = run(enrich_app, "diagnose", "--db", url, "--only", "8", "--export", str(target))
        assert result.exit_code == 2, result.output
        assert result.stderr == message
        assert result.stdout == ""  # no report: nothing was diagnosed
    assert not missing.parent.exists()


def test_invalidate_refuses_an_unknown_service(tmp_path: Path) -> None:
    url = schema_only(f"sqlite:///{tmp_path / 'c.sqlite'}")
    result = run(enrich_app, "cache", "invalidate", "--service", "nosuch", "--db", url)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: --service 'nosuch' is not a service; use one of "
        "dshield, virustotal, urlhaus, spur, hibp\n"
    )
    known = run(enrich_app, "cache", "invalidate", "--service", "hibp", "--db", url, "--json")
    assert known.exit_code == 0, known.output
    assert json.loads(known.stdout)["removed"] == {"database": 0}


def test_ids_from_reports_lines_that_name_no_session(tmp_path: Path) -> None:
    ids = tmp_path / "ids.tsv"
    ids.write_bytes(
        b"# wanted\n"
        b"s1\ta1b2c3\n"
        b"s1 a1b2c3\n"  # a blank instead of the tab
        b"s1,d4e5f6\n"
        b"s1\t\n"
        b"\n"
        b"a\tb\tc\n"
        b"e7f8a9\r\n"
        b"s2\tid\xc2\x85with NEL\n"
        b"x y\n"
    )
    found, skipped = IdFilter.read(ids)
    assert found.pairs == {("s1", "a1b2c3"), ("s2", "id\x85with NEL")}
    assert found.bare == {"e7f8a9"}
    assert skipped == [
        (3, "s1 a1b2c3"),
        (4, "s1,d4e5f6"),
        (5, "s1\t"),
        (7, "a\tb\tc"),
        (10, "x y"),
    ]

    url = schema_only(f"sqlite:///{tmp_path / 'c.sqlite'}")
    result = run(enrich_app, "refresh", "--db", url, "--ids-from", str(ids), "--sessions", "1")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"warning: --ids-from {ids}: 5 line(s) skipped, not 'sensor<TAB>session_id' or "
        "'session_id': line 3 's1 a1b2c3', line 4 's1,d4e5f6', line 5 's1\\x09' and 2 more; "
        "3 session(s) named"
    )


def test_ids_from_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    url = schema_only(f"sqlite:///{tmp_path / 'c.sqlite'}")
    for path, why in ((tmp_path / "nope.tsv", "No such file or directory"),
                      (tmp_path, "Is a directory")):  # fmt: skip
        result = run(enrich_app, "refresh", "--db", url, "--ids-from", str(path))
        assert result.exit_code == 2, result.output
        assert result.stderr == f"error: --ids-from {path}: {why}\n"


def test_downgrade_at_base_says_so_and_exits_0(db_url: str) -> None:
    url = schema_only(db_url)
    assert run(db_app, "downgrade", "--db", url, "--revision", "base").exit_code == 0
    again = run(db_app, "downgrade", "--db", url)
    assert again.exit_code == 0, again.output
    assert again.stderr == f"{redact_url(url)} is already at base (no schema to downgrade)\n"
    as_json = run(db_app, "downgrade", "--db", url, "--json")
    assert json.loads(as_json.stdout) == {
        "ok": True,
        "db": redact_url(url),
        "from": None,
        "to": None,
    }
