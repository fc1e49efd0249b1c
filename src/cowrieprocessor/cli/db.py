"""`cowrie-db`: create, upgrade, downgrade and check the database schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cowrieprocessor.cli.common import (
    EXIT_FAILED,
    Command,
    ConfigOption,
    DbOption,
    Group,
    JsonOption,
    console,
    emit_json,
    fail,
    open_database,
    settings_or_exit,
)
from cowrieprocessor.db.errors import error_text

# SQLAlchemy and alembic are imported by the commands, so --help stays fast.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cowrieprocessor.db.schema import LockWait, SchemaState

#: ``schema.DEFAULT_LOCK_TIMEOUT_SECONDS`` and ``schema.MAX_LOCK_TIMEOUT_SECONDS`` (a test
#: keeps them equal), named here so that building --help does not import SQLAlchemy.
LOCK_TIMEOUT_SECONDS = 30
MAX_LOCK_TIMEOUT_SECONDS = 2_147_483

LockTimeoutOption = Annotated[
    int,
    typer.Option(
        "--lock-timeout",
        metavar="SECONDS",
        min=0,
        max=MAX_LOCK_TIMEOUT_SECONDS,
        help="PostgreSQL: how long to wait for a lock held by another session (or for "
        "another schema change) before giving up with nothing changed; 0 waits for ever.",
    ),
]

app = typer.Typer(
    cls=Group,
    help="Manage the cowrieprocessor database schema.",
    no_args_is_help=True,
    add_completion=False,
)


def _engine(
    db: str | None, config: Path | None, as_json: bool, *, create: bool
) -> tuple[str, Engine]:
    """The URL and an engine that has connected once; the schema is left as it is. Only
    ``upgrade`` (``create``) may make a SQLite file that does not exist yet."""
    settings = settings_or_exit(config, as_json=as_json, db_url=db)
    engine = open_database(settings.db_url, as_json=as_json, ensure_schema=False, create=create)
    return settings.db_url, engine


def _state(db: str | None, config: Path | None, as_json: bool) -> tuple[str, SchemaState]:
    """The URL and the schema state of its database, or exit saying why it cannot be read."""
    from sqlalchemy.exc import SQLAlchemyError

    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import redact_url

    url, engine = _engine(db, config, as_json, create=False)
    try:
        return url, schema.state(engine)
    except SQLAlchemyError as error:
        fail(f"reading the schema of {redact_url(url)}: {error_text(error, url)}", as_json=as_json)
    finally:
        engine.dispose()


def _migrate(
    action: str,
    db: str | None,
    revision: str,
    json: bool,
    config: Path | None,
    lock_timeout: int = LOCK_TIMEOUT_SECONDS,
) -> None:
    """Run ``schema.upgrade`` or ``schema.downgrade`` and report from where to where.

    On PostgreSQL each lock wait lasts at most ``lock_timeout`` seconds (0: no limit);
    a wait longer than a couple of seconds is announced on stderr with who blocks it.
    A lock not granted in time, like any failed migration, exits 1 saying which
    sessions held it and that nothing was changed.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import redact_url

    def waiting(wait: LockWait, seconds: float) -> None:
        limit = f"gives up after {lock_timeout} s" if lock_timeout else "no time limit"
        _notice(f"{action} waiting ({seconds:.0f} s so far, {limit}) for {wait.describe()}")

    url, engine = _engine(db, config, json, create=action == "upgrade")
    try:
        found = schema.state(engine)
        before = found.current
        if action == "downgrade" and before is None and found.empty:
            _at_base(url, json)
            return
        getattr(schema, action)(engine, revision, lock_timeout=lock_timeout, on_wait=waiting)
        after = schema.state(engine).current
    except schema.SchemaLockTimeout as error:
        fail(
            f"{action} of {redact_url(url)} stopped: {error}; --lock-timeout SECONDS "
            "waits longer (0: without limit)",
            as_json=json,
        )
    except (SQLAlchemyError, schema.SchemaVersionError) as error:
        fail(f"{action} of {redact_url(url)} failed: {error_text(error, url)}", as_json=json)
    finally:
        engine.dispose()
    if json:
        emit_json({"ok": True, "db": redact_url(url), "from": before, "to": after})
    else:
        console.print(f"schema of {redact_url(url)}: {before or 'empty'} -> {after or 'empty'}")


def _notice(message: str) -> None:
    """Print ``message`` (already printable) on stderr as one line, markup not read."""
    from rich.text import Text

    console.print(Text.assemble(("notice: ", "bold"), message), soft_wrap=True)


def _at_base(url: str, as_json: bool) -> None:
    """Report a downgrade with nothing to remove: the database has no schema (exit 0)."""
    from cowrieprocessor.db.engine import redact_url

    if as_json:
        emit_json({"ok": True, "db": redact_url(url), "from": None, "to": None})
    else:
        console.print(
            f"{redact_url(url)} is already at base (no schema to downgrade)", soft_wrap=True
        )


@app.command(cls=Command)
def upgrade(
    db: DbOption = None,
    revision: Annotated[str, typer.Option(metavar="REVISION", help="Target revision.")] = "head",
    lock_timeout: LockTimeoutOption = LOCK_TIMEOUT_SECONDS,
    json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Upgrade the schema (default: to the newest revision); creates a new database."""
    _migrate("upgrade", db, revision, json, config, lock_timeout)


@app.command(cls=Command)
def downgrade(
    db: DbOption = None,
    revision: Annotated[
        str,
        typer.Option(
            metavar="REVISION", help="Target revision: -1 for one step, base to remove all."
        ),
    ] = "-1",
    lock_timeout: LockTimeoutOption = LOCK_TIMEOUT_SECONDS,
    json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Roll the schema back (default: one migration); exit 0 when there is none."""
    _migrate("downgrade", db, revision, json, config, lock_timeout)


@app.command(cls=Command)
def current(db: DbOption = None, json: JsonOption = False, config: ConfigOption = None) -> None:
    """Print the database's schema revision and the code's newest one."""
    from cowrieprocessor.db.engine import redact_url

    url, found = _state(db, config, json)
    if json:
        emit_json(
            {
                "db": redact_url(url),
                "current": found.current,
                "head": found.head,
                "up_to_date": found.up_to_date,
            }
        )
    else:
        console.print(f"current: {found.current or 'none'}  head: {found.head}")


@app.command(cls=Command)
def check(db: DbOption = None, json: JsonOption = False, config: ConfigOption = None) -> None:
    """Exit 0 when the schema is at the newest revision, 1 otherwise."""
    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import redact_url

    url, found = _state(db, config, json)
    if json:
        emit_json(
            {
                "db": redact_url(url),
                "current": found.current,
                "head": found.head,
                "up_to_date": found.up_to_date,
            }
        )
    if not found.up_to_date:
        newer = found.current is not None and found.current not in schema.known_revisions()
        advice = "upgrade cowrieprocessor" if newer else "run `cowrie-db upgrade`"
        console.print(f"schema is {found.current or 'empty'}, code expects {found.head}: {advice}")
        raise typer.Exit(EXIT_FAILED)
    if not json:
        console.print(f"schema is up to date ({found.head})")


def main() -> None:
    app()
