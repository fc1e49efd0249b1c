"""What every command shares: options, the JSON summary, errors and exit codes.

Exit codes: 0 success (warnings allowed), 1 the work failed or, where a command says
so, the result is unhealthy, 2 bad usage, the command could not start (for example
the database schema does not match the code) or the database could no longer be used
while it ran (see :func:`database_loss_exits`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from cowrieprocessor.db.errors import error_text, lost_database

# SQLAlchemy, pydantic-settings and the schema code are imported inside the functions
# that use them: `--help` and a mistyped option then answer in a fraction of the time.
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from cowrieprocessor.config import Settings


class _Argument(TyperArgument):
    """An argument shown by its metavar alone (``PATH...``), not by its Python type.

    Overrides two methods of Typer's own argument class (the version is locked in
    uv.lock); tests/cli/test_help.py fails should an upgrade change them.
    """

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar else super().display_type_rich(ctx)

    def _usage_display_name(self) -> str:
        return self.metavar or super()._usage_display_name()


def _plain_help(params: list[Any]) -> None:
    """Make ``params`` read as an operator expects in --help: a flag shows no type, an
    argument shows its metavar instead of ``<list[str]>``. Options that take a value
    carry their metavar (URL, PATH, N) where they are declared."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.metavar:
            # Typer gives arguments no hook for their help text but their class.
            param.__class__ = _Argument


class Command(TyperCommand):
    """A command whose --help names values (URL, PATH, N) rather than Python types.

    Pass as ``cls=Command`` to every ``app.command``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self.params)

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _plain_help([option])
        return option


class Group(TyperGroup):
    """A group whose own --help option shows no type; pass as ``cls=Group`` to Typer."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:
        option = super().get_help_option(ctx)
        _plain_help([option])
        return option


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        help="Database URL (sqlite:///path or postgresql://...). "
        "Default: COWRIEPROC_DB_URL, the config file, or a SQLite file in the data dir.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one machine-readable summary object on stdout.")
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="PATH",
        help="TOML config file (default: COWRIEPROC_CONFIG, ./sensors.toml, or the user "
        "config dir).",
        show_default=False,
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")]

#: The enrichment services, the same as ``cowrieprocessor.enrichment.settings.SERVICE_NAMES``
#: (tests/cli/test_startup.py checks); named here so that building the commands' help
#: does not import the enrichment package.
SERVICE_NAMES = ("dshield", "virustotal", "urlhaus", "spur", "hibp")

#: Human output goes to stderr so that stdout carries only the --json object.
console = Console(stderr=True, highlight=False)


def open_database(
    url: str,
    *,
    as_json: bool,
    pool_size: int = 5,
    max_overflow: int = 5,
    ensure_schema: bool = True,
    create: bool = True,
) -> Engine:
    """Open the database at ``url`` at the code's schema, or exit 2 saying why in one line.

    An empty database gets the schema; a bad URL, an unreachable server or a schema
    older or newer than the code ends the command with a message and exit code 2. With
    ``ensure_schema`` false (the schema commands) the schema is left as it is and only
    the connection is tried. With ``create`` false (commands that read a database, or
    change rows of one, that must be there already) a SQLite file that does not exist is
    refused before anything is made, and an empty database is refused instead of given
    the schema: a mistyped ``--db`` must not look like a healthy, empty database. The
    message never holds the URL's password.
    """
    from cowrieprocessor.db import schema
    from cowrieprocessor.db.engine import check_url, create_engine, redact_url

    engine: Engine | None = None
    try:
        checked = check_url(url)
        if not create:
            _require_sqlite_file(checked)
        engine = create_engine(checked, pool_size=pool_size, max_overflow=max_overflow)
        if ensure_schema:
            schema.ensure_current(engine, create_if_empty=create)
        else:
            with engine.connect():
                pass
    except ValueError as error:
        _dispose(engine)
        fail(str(error), EXIT_USAGE, as_json=as_json)
    except schema.SchemaVersionError as error:
        _dispose(engine)
        fail(f"{redact_url(url)}: {error}", EXIT_USAGE, as_json=as_json)
    except Exception as error:  # connection refused, missing driver, permissions
        _dispose(engine)
        logging.getLogger(__name__).debug("opening the database failed", exc_info=True)
        fail(
            f"cannot open {redact_url(url)}: {error_text(error, url)}",
            EXIT_USAGE,
            as_json=as_json,
        )
    return engine


def _require_sqlite_file(url: str) -> None:
    """Raise ValueError when ``url`` names a SQLite file that does not exist (opening it
    would create it); PostgreSQL and SQLite ``file:`` URIs are left to the driver."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise ValueError(
            f"the SQLite database {database} does not exist (a mistyped --db?); "
            "`cowrie-loader ingest` or `cowrie-db upgrade` creates it"
        )


def _dispose(engine: Engine | None) -> None:
    if engine is not None:
        engine.dispose()


@contextmanager
def database_loss_exits(
    url: str, *, as_json: bool, during: str, kept: str | None = None
) -> Iterator[None]:
    """End the command with exit 2 and one line when the database at ``url`` stops being
    usable inside the block (see :func:`lost_database`); other errors pass through.

    The line names the database (no password), ``during`` (what was being done), the
    driver's message, and ``kept``: what stays committed and how a rerun goes on, for
    commands where that is true. The traceback is logged at debug level (``--verbose``).
    """
    from cowrieprocessor.db.engine import redact_url

    try:
        yield
    except Exception as error:
        found = lost_database(error)
        if found is None:
            raise
        logging.getLogger(__name__).debug("the database failed %s", during, exc_info=True)
        message = f"the database {redact_url(url)} failed {during}: {error_text(found, url)}"
        fail(message + (f"; {kept}" if kept else ""), EXIT_USAGE, as_json=as_json)


def settings_or_exit(config: Path | None, *, as_json: bool = False, **overrides: Any) -> Settings:
    """The settings (``overrides`` are the flags; None means not given), or exit 2 with
    every problem on one line: the setting's name and what is wrong, never the value
    given (it may be a key)."""
    from pydantic import ValidationError

    from cowrieprocessor.config import (
        find_config_file,
        load_settings,
        read_config_file,
        unknown_config_keys,
    )

    try:
        settings = load_settings(config, **overrides)
        path, table = read_config_file(config)
        unknown = unknown_config_keys(table)
        if unknown:
            # A misspelt key would otherwise be ignored and its default used in silence.
            fail(
                f"configuration: {path} has unknown settings: {', '.join(unknown)}",
                EXIT_USAGE,
                as_json=as_json,
            )
        return settings
    except ValidationError as error:
        problems = "; ".join(_problem(item) for item in error.errors())
        fail(f"configuration: {problems}", EXIT_USAGE, as_json=as_json)
    except FileNotFoundError as error:
        fail(f"configuration: {error}", EXIT_USAGE, as_json=as_json)
    except ValueError as error:  # the config file is not valid TOML
        fail(
            f"configuration: {find_config_file(config)} is not valid TOML: {error}",
            EXIT_USAGE,
            as_json=as_json,
        )


def _problem(item: Any) -> str:
    """One pydantic error as ``setting: what is wrong`` (our validators name it already)."""
    name = ".".join(str(part) for part in item["loc"])
    message = str(item["msg"]).removeprefix("Value error, ")
    return message if message.startswith(name) else f"{name}: {message}"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO; ours log one line per request at debug already.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def emit_json(summary: dict[str, Any]) -> None:
    """Print ``summary`` as one JSON object on stdout.

    Text that is not valid Unicode (a file name with undecodable bytes arrives as lone
    surrogates) is written as ``\\udcXX`` escapes, which stay valid JSON.
    """
    try:
        text = orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        text = json.dumps(summary, indent=2, ensure_ascii=True, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = EXIT_FAILED, *, as_json: bool = False) -> NoReturn:
    """Report an error the same way everywhere and exit with ``code``."""
    if as_json:
        emit_json({"ok": False, "error": message})
    # One line however long: an operator's log or grep should get the whole message.
    console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    raise typer.Exit(code)
