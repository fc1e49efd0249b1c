"""Database errors as an operator reads them, and which of them mean the database is gone.

Both are used by the commands (one line, exit 2) and by refresh worker processes, which
report a lost database to their parent instead of dying with a traceback. Imports of the
drivers and SQLAlchemy happen inside the functions, so importing this module is cheap.
"""

from __future__ import annotations


def error_text(error: BaseException, url: str | None = None) -> str:
    """``error`` as one line for an operator: the driver's own message when SQLAlchemy
    wraps one (without the statement and the link to SQLAlchemy's error pages), line
    breaks folded, and the password of ``url`` replaced by ``***`` should it appear."""
    # DBAPIError keeps the driver's exception in .orig; its str() adds SQL and a link.
    original = getattr(error, "orig", None)
    text = str(original if isinstance(original, BaseException) else error)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("(Background")]
    text = " ".join(" ".join(lines).split())
    text = text or type(error).__name__
    password = _password(url) if url else None
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:  # not a URL at all: then it holds no password we could find
        return None


def lost_database(error: BaseException) -> BaseException | None:
    """The error in ``error``'s chain (itself, what it was raised from or while handling)
    that says the database cannot be used any more, or None.

    Such errors are the driver's "operational" and "interface" kinds, wrapped by
    SQLAlchemy or not (the cache runs raw cursors): a connection lost or refused, the
    server shutting down, a full disk, a lock not granted in time. A statement the
    database refuses (a constraint, a missing table in a schema that changed) is not one:
    that is a failure of the work, not of the database.
    """
    import sqlite3

    import psycopg
    from sqlalchemy import exc

    kinds = (
        exc.OperationalError,
        exc.InterfaceError,
        exc.DisconnectionError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        sqlite3.OperationalError,
        sqlite3.InterfaceError,
    )
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return current
        current = current.__cause__ or current.__context__
    return None
