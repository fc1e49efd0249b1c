"""Schema versions: upgrade, downgrade, and the check every command runs first.

Alembic is driven programmatically on an existing engine, so no ``alembic.ini`` is
needed at run time and the revisions ship inside the package. Alembic is imported only
to change the schema: the version check every command runs reads ``alembic_version``
directly and compares it with :data:`HEAD`, which a test keeps equal to Alembic's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).with_name("migrations")

#: The newest revision under ``migrations/versions`` (kept in step by a test).
HEAD = "0007"


class SchemaVersionError(RuntimeError):
    """The database schema is not the one this code was written for."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision, the code's head, and whether it is empty."""

    current: str | None
    head: str
    empty: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    return HEAD


def alembic_head() -> str:
    """The newest revision as Alembic finds it in the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    """Every revision this code knows."""
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def state(engine: Engine) -> SchemaState:
    """Read the database's revision without changing anything."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        current = None
        if "alembic_version" in tables:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return SchemaState(current=current, head=HEAD, empty=not (tables - {"alembic_version"}))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (default: the newest)."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "-1") -> None:
    """Downgrade the schema to ``revision`` (``-1``: one step; ``base``: remove all)."""
    _run(engine, "downgrade", revision)


# Any fixed 64-bit number: the advisory lock that serialises schema changes.
_SCHEMA_LOCK_KEY = 0x636F77726965_01


def _run(engine: Engine, action: str, revision: str) -> None:
    """Run an Alembic command in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so two processes that
    both find an empty database (two loaders started at once) create the schema once:
    the second waits, then finds it at the target revision and does nothing. SQLite
    needs no lock: its transactions begin with BEGIN IMMEDIATE.
    """
    from alembic import command
    from alembic.util import CommandError

    config = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        config.attributes["connection"] = conn
        try:
            getattr(command, action)(config, revision)
        except CommandError as error:
            raise SchemaVersionError(f"cannot {action} to {revision!r}: {error}") from error


def ensure_current(engine: Engine, *, create_if_empty: bool = True) -> SchemaState:
    """Refuse to work on a database whose schema is older or newer than the code.

    An empty database (a first run) is brought to the newest revision when
    ``create_if_empty`` is set. Raises :class:`SchemaVersionError` with the command to
    run otherwise (an empty database included).
    """
    found = state(engine)
    if found.up_to_date:
        return found
    if found.current is None and found.empty and create_if_empty:
        upgrade(engine)
        return state(engine)
    if found.current is None and found.empty:
        raise SchemaVersionError(
            "the database is empty (no cowrieprocessor schema); `cowrie-loader ingest` "
            "or `cowrie-db upgrade --db URL` creates the schema"
        )
    if found.current is None:
        raise SchemaVersionError(
            "the database has tables but no cowrieprocessor schema version; "
            "point --db at a cowrieprocessor database or an empty one"
        )
    if found.current not in known_revisions():
        raise SchemaVersionError(
            f"the database schema ({found.current}) is newer than this cowrieprocessor "
            f"(head {found.head}); upgrade cowrieprocessor"
        )
    raise SchemaVersionError(
        f"the database schema ({found.current}) is older than this cowrieprocessor "
        f"(head {found.head}); run `cowrie-db upgrade --db URL` first"
    )
