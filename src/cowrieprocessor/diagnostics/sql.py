"""SQL expressions the diagnostics share, rendered the same way on SQLite and PostgreSQL.

Envelope fields are read with SQLAlchemy's JSON path operators (``#>>`` on PostgreSQL,
``JSON_EXTRACT`` on SQLite), which both give SQL NULL for a missing path. Two things
SQLAlchemy has no portable operator for get a small construct each: the JSON type at a
path (to tell an empty or null ``data`` from a filled one) and the UTC calendar day of a
timestamp (PostgreSQL's ``date_trunc`` follows the session time zone; SQLite stores
naive UTC text).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, String, and_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement

from cowrieprocessor.enrichment.outcome import FINAL_SKIP_REASONS, Status

#: Skip reasons that take a row out of the coverage denominator, as SQL literals.
FINAL_REASONS = tuple(sorted(str(reason) for reason in FINAL_SKIP_REASONS))
DEFINITIVE = (str(Status.SUCCESS), str(Status.NOT_FOUND))


def field(column: Any, *path: str) -> ColumnElement[str]:
    """The text at ``path`` inside a JSON column (numbers as their text), NULL if absent."""
    return column[path].as_string()  # type: ignore[no-any-return]


def status_of(column: Any, service: str | None = None) -> ColumnElement[str]:
    """The ``status`` of an envelope: ``column[service]`` or the column itself."""
    return field(column, *((service,) if service else ()), "status")


def reason_of(column: Any, service: str | None = None) -> ColumnElement[str]:
    return field(column, *((service,) if service else ()), "reason")


def is_definitive(column: Any, service: str | None = None) -> ColumnElement[bool]:
    return status_of(column, service).in_(DEFINITIVE)


def is_final_skip(column: Any, service: str | None = None) -> ColumnElement[bool]:
    return and_(
        status_of(column, service) == str(Status.SKIPPED),
        reason_of(column, service).in_(FINAL_REASONS),
    )


def is_gap(column: Any, service: str | None = None) -> ColumnElement[bool]:
    """Neither covered nor finally skipped: never attempted, changeable skip, or error."""
    status = status_of(column, service)
    return or_(
        status.is_(None),
        and_(
            status.not_in(DEFINITIVE),
            or_(
                status != str(Status.SKIPPED),
                reason_of(column, service).is_(None),
                reason_of(column, service).not_in(FINAL_REASONS),
            ),
        ),
    )


class json_kind(FunctionElement[str]):
    """The JSON type at a path: ``object``, ``array``, ``null``, ``text``/``string``...

    Only ``'object'`` and ``'null'`` are compared, whose names both databases share.
    NULL when the path is absent.
    """

    type = String()
    # The path is written into the SQL text, so a cached statement for one path must not
    # be reused for another: no statement caching for this construct.
    inherit_cache = False
    name = "json_kind"


@compiles(json_kind, "postgresql")
def _json_kind_pg(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    column, *path = list(element.clauses)
    keys = ",".join(_path_literal(part) for part in path)
    return f"jsonb_typeof({compiler.process(column, **kw)} #> '{{{keys}}}')"


@compiles(json_kind, "sqlite")
def _json_kind_sqlite(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    column, *path = list(element.clauses)
    keys = "".join(f'."{_path_literal(part)}"' for part in path)
    return f"json_type({compiler.process(column, **kw)}, '${keys}')"


def _path_literal(part: Any) -> str:
    value = str(part.value)
    # Paths are our own service and field names; refuse anything that could break quoting.
    if not value.replace("_", "").isalnum():
        raise ValueError(f"JSON path part {value!r} must be letters, digits or underscores")
    return value


def data_is_empty(column: Any, service: str | None = None) -> ColumnElement[bool]:
    """``data`` of the envelope is missing, JSON null, or an empty object."""
    path = (*((service,) if service else ()), "data")
    kind = json_kind(column, *path)
    return or_(
        kind.is_(None),
        kind == "null",
        and_(kind == "object", field(column, *path).in_(["{}"])),
    )


class utc_day(FunctionElement[str]):
    """The UTC calendar day of an aware timestamp column as ``YYYY-MM-DD`` text."""

    type = String()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "postgresql")
def _utc_day_pg(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"to_char({compiler.process(column, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    # UTCDateTime stores naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]" on SQLite.
    return f"substr({compiler.process(column, **kw)}, 1, 10)"
