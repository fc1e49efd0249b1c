"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: JSON everywhere, stored as JSONB on PostgreSQL. Python None is SQL NULL, never JSON null.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

# SQLAlchemy's SQLite DATETIME storage format (sqlalchemy.dialects.sqlite.DATETIME).
# strftime("%Y") is not used: glibc writes year 999 as "999", which SQLAlchemy cannot
# read back and which sorts after "2026".
_SQLITE_DATETIME = "%04d-%02d-%02d %02d:%02d:%02d.%06d"


def sqlite_datetime_text(value: datetime) -> str:
    """The text a :class:`UTCDateTime` column holds on SQLite for the aware ``value``.

    That is what SQLAlchemy's SQLite ``DateTime`` writes for the naive UTC time:
    ``YYYY-MM-DD HH:MM:SS.ffffff``, year zero-padded to four digits, always with
    microseconds. Code that writes or compares timestamps below the ORM (bulk loads, the
    cache's raw SQL) uses it so its text equals, and sorts with, what the ORM wrote.

    Raises:
        ValueError: ``value`` is naive (as :class:`UTCDateTime` refuses it on write).
        OverflowError: converting to UTC leaves datetime's range (year 1 to 9999).
    """
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} cannot be stored; attach a zone")
    utc = value.astimezone(UTC)
    # One %-format of the fields: about twice as fast as strftime on the bulk load path.
    return _SQLITE_DATETIME % (
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
    )


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp on both databases.

    PostgreSQL stores ``timestamptz``. SQLite has no time zone type, so values are
    converted to UTC before they are written and marked UTC when read. Naive values are
    refused on write: the ingest layer decides what a naive Cowrie timestamp means.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; attach a zone")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
