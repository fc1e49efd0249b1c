"""Normalising the fields Cowrie versions wrote differently: times, addresses, durations.

Each function takes one raw JSON value and returns the normalised value, or ``None`` when
the value cannot be understood; none of them raises. The caller decides which problem
flag a ``None`` deserves. All results are independent of the host's time zone and locale.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from datetime import UTC, datetime
from typing import Any

_SHA256_HEX_LEN = 64
_HEX_DIGITS = frozenset("0123456789abcdef")


def parse_timestamp(value: Any) -> datetime | None:
    """An aware UTC datetime from a Cowrie ``timestamp``, or ``None`` if unparseable.

    Accepted: ``YYYY-MM-DD``, then ``T`` or a space, then ``HH:MM:SS``, optionally a
    fraction of any length (digits beyond microseconds are cut off), optionally ``Z`` or
    an offset ``+HH:MM`` / ``+HHMM``. A time without zone is taken as UTC, which is what
    Cowrie means by it. Date-only values, ISO week dates and the basic format without
    separators are refused: Cowrie never writes them, so they mark a damaged line rather
    than a format to support.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # fromisoformat is lenient; this cheap shape check (no regex) keeps the extended
    # calendar date-time form only.
    if (
        len(value) < 19
        or value[4] != "-"
        or value[7] != "-"
        or value[10] not in "Tt "
        or value[13] != ":"
        or value[16] != ":"
    ):
        return None
    tzinfo = parsed.tzinfo
    if tzinfo is UTC:
        return parsed
    if tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # An offset that pushes year 1 or year 9999 beyond datetime's range.
        return None


@functools.lru_cache(maxsize=65536)
def normalise_ip(text: str) -> tuple[str, bool]:
    """``(address, valid)`` for a source address given as text.

    IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes the plain IPv4, other IPv6 its
    compressed form. Text that is not an address comes back unchanged with ``False``.
    Cached, because a few thousand sources send almost every event.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text, False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped), True
    return str(address), True


def protocol_of(protocol: Any, system: Any) -> str | None:
    """``"ssh"``/``"telnet"`` from the ``protocol`` field, else guessed from ``system``.

    Cowrie before 1.1 wrote no ``protocol``; its Twisted ``system`` string names the
    transport (``CowrieTelnetTransport,…``, ``HoneyPotSSHTransport,…``,
    ``cowrie.telnet.transport.HoneyPotTelnetFactory``). Any other non-empty ``protocol``
    value is returned lower-cased.
    """
    if isinstance(protocol, str) and protocol:
        return protocol.lower()
    if isinstance(system, str):
        # Cowrie's own spellings first; lower-casing every line costs more than this.
        if "Telnet" in system:
            return "telnet"
        if "SSH" in system:
            return "ssh"
        lowered = system.lower()
        if "telnet" in lowered:
            return "telnet"
        if "ssh" in lowered:
            return "ssh"
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def parse_duration(duration: Any, duration_ms: Any) -> float | None:
    """Session length in seconds from ``duration`` (float or numeric string, Cowrie up to
    3.0.3) or ``duration_ms`` (integer milliseconds, Cowrie 3.0.4 on); ``duration_ms``
    wins when both are present. ``None`` if the value is missing, negative, not finite or
    not a number."""
    if duration_ms is not None:
        millis = _seconds(duration_ms)
        return None if millis is None else millis / 1000.0
    return _seconds(duration)


def sha256_hex(value: Any) -> str | None:
    """The lower-case form of a 64-digit hex SHA-256, or ``None`` for anything else."""
    if not isinstance(value, str) or len(value) != _SHA256_HEX_LEN:
        return None
    lowered = value.lower()
    if not _HEX_DIGITS.issuperset(lowered):
        return None
    return lowered


def is_url(value: str) -> bool:
    """True if ``value`` starts with ``scheme://`` (RFC 3986 scheme characters).

    Cowrie also writes file paths into ``url``: ``/dev/null`` or ``/etc/rc.local`` for
    saved shell redirects, ``stdin`` for piped input. Those are not URLs and must not be
    looked up as such.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not rest or not scheme or not scheme[0].isascii() or not scheme[0].isalpha():
        return False
    return all(ch.isascii() and (ch.isalnum() or ch in "+.-") for ch in scheme)
