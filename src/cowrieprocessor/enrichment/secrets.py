"""API keys: resolving ``env:``/``file:`` references, and keeping keys out of text.

A key setting holds either the key itself or a reference to where it lives:

* ``env:NAME`` reads the environment variable ``NAME``;
* ``file:/path/to/key`` reads the file (``~`` is expanded; surrounding whitespace, such
  as the trailing newline of ``echo KEY > file``, is dropped).

References are resolved once, when the settings are built, and the result is a
:class:`pydantic.SecretStr`, whose ``repr`` and ``str`` show only asterisks. A key
that really begins with ``env:`` or ``file:`` has to be given through a reference.

Errors raised here name the setting and the reference, never a key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

ENV_REFERENCE = "env:"
FILE_REFERENCE = "file:"
MASK = "***"

#: Fingerprint of "no key", so keyless services still get a limiter of their own.
ANONYMOUS = "anonymous"


class SecretReferenceError(ValueError):
    """A key reference that cannot be resolved. The message names setting and reference."""


def resolve_secret(value: object, *, setting: str) -> SecretStr | None:
    """Turn a key setting's raw value into a :class:`SecretStr`, or None when unset.

    Args:
        value: None, a string (key or reference), or a SecretStr (already resolved or
            itself holding a reference).
        setting: the setting's name, used in error messages.

    Raises:
        SecretReferenceError: an ``env:`` variable that is unset or empty, a ``file:``
            that cannot be read or is empty, or a value that is not a string.
    """
    if value is None:
        return None
    if isinstance(value, SecretStr):
        text = value.get_secret_value()
    elif isinstance(value, str):
        text = value
    else:
        # The value may be a key typed as a bare number or list: never show it.
        raise SecretReferenceError(f"{setting} must be a string, not {type(value).__name__}")

    text = text.strip()
    if not text:
        return None
    if text.startswith(ENV_REFERENCE):
        return SecretStr(_read_env(text[len(ENV_REFERENCE) :].strip(), setting))
    if text.startswith(FILE_REFERENCE):
        return SecretStr(_read_file(text[len(FILE_REFERENCE) :].strip(), setting))
    return SecretStr(text)


def _read_env(name: str, setting: str) -> str:
    if not name:
        raise SecretReferenceError(f"{setting}: 'env:' must be followed by a variable name")
    found = os.environ.get(name, "").strip()
    if not found:
        raise SecretReferenceError(
            f"{setting} refers to environment variable {name}, which is not set or empty"
        )
    return found


def _read_file(path_text: str, setting: str) -> str:
    if not path_text:
        raise SecretReferenceError(f"{setting}: 'file:' must be followed by a path")
    path = Path(path_text).expanduser()
    try:
        found = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        # exc names only the path and the OS reason; the file's content is never in it.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise SecretReferenceError(
            f"{setting} refers to file {path}, which cannot be read: {reason}"
        ) from None
    if not found:
        raise SecretReferenceError(f"{setting} refers to file {path}, which is empty")
    return found


def fingerprint(secret: SecretStr | None) -> str:
    """A short, stable, one-way name for a key (for limiter buckets, never for display)."""
    if secret is None:
        return ANONYMOUS
    digest = hashlib.sha256(secret.get_secret_value().encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def scrub(text: str, secrets: Iterable[SecretStr | None]) -> str:
    """``text`` with every occurrence of each key replaced by ``***``.

    Defence in depth for text that came from elsewhere (a server's error message), in
    case a service ever echoes the key back.
    """
    for secret in secrets:
        if secret is None:
            continue
        raw = secret.get_secret_value()
        if raw and raw in text:
            text = text.replace(raw, MASK)
    return text
