"""Parsing one line of a Cowrie JSON log into a normalised :class:`ParsedEvent`.

Pure functions, no I/O and no database. :func:`parse_line` either returns an event or
raises :class:`EventError` with a short machine-readable reason; it never raises anything
else, whatever the bytes. An event that parses but has odd fields (a bad timestamp, an
address that is not one) is still returned, with ``None`` in the field concerned and a
flag in ``problems`` saying why, so no value is dropped and no null is unexplained.

The stored ``payload`` is the event exactly as written, with only the text rule of
:mod:`cowrieprocessor.db.textrule` applied. Every text field of :class:`ParsedEvent` is
taken from that encoded payload, so it can be stored as is; only ``password_sha256`` is
computed from the original password.

JSON integers outside the signed/unsigned 64-bit range (which orjson reads as floats) are
kept exact: a line holding a run of 19 digits whose orjson reading holds a float is read
again by the standard library, so the payload, its hash and the stored row hold the
integer as written, on SQLite as on PostgreSQL. Other lines never take that path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from datetime import datetime
from typing import Any, cast

import orjson

from cowrieprocessor.db.textrule import encode_json, line_may_need_rule
from cowrieprocessor.ingest.eventids import SESSIONLESS_KINDS, EventKind, kind_of
from cowrieprocessor.ingest.normalise import (
    is_url,
    normalise_ip,
    parse_duration,
    parse_timestamp,
    protocol_of,
    sha256_hex,
)
from cowrieprocessor.jsonnumbers import has_long_number, holds_float

__all__ = [
    "MAX_LINE_BYTES",
    "EventError",
    "EventKind",
    "ParsedEvent",
    "canonical_hash",
    "parse_line",
]

MAX_LINE_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
_FLOAT_DIGITS = 300  # integers of fewer digits are well inside a float's range

# Problem flags (strings, stored by the loader next to the event).
BAD_TIMESTAMP = "bad_timestamp"
MISSING_TIMESTAMP = "missing_timestamp"
MISSING_EVENTID = "missing_eventid"
BAD_EVENTID = "bad_eventid"
MISSING_SESSION = "missing_session"
BAD_SENSOR = "bad_sensor"
INVALID_SRC_IP = "invalid_src_ip"
BAD_DURATION = "bad_duration"
MISSING_DURATION = "missing_duration"
BAD_SHASUM = "bad_shasum"
NOT_A_URL = "not_a_url"

_COMMAND_KINDS = frozenset(
    {EventKind.COMMAND_INPUT, EventKind.COMMAND_FAILED, EventKind.COMMAND_SUCCESS}
)
_LOGIN_KINDS = frozenset({EventKind.LOGIN_SUCCESS, EventKind.LOGIN_FAILED})
_TRANSFERS: dict[EventKind, tuple[str, bool]] = {
    EventKind.FILE_DOWNLOAD: ("download", True),
    EventKind.FILE_DOWNLOAD_FAILED: ("download", False),
    EventKind.FILE_UPLOAD: ("upload", True),
}
# Where each Cowrie version put the transferred file's name, most telling first:
# ``filename`` (SFTP/SCP uploads, the attacker's name), ``destfile`` (SCP target),
# ``outfile`` (the sensor's storage path, ``dl/<sha256>`` or ``…/downloads/<sha256>``).
_FILE_NAME_FIELDS = ("filename", "destfile", "outfile")


class EventError(ValueError):
    """A line that is not a Cowrie event; the loader dead-letters it.

    Attributes:
        reason: machine code: ``invalid_json``, ``not_an_object``, ``invalid_utf8``,
            ``line_too_long`` or ``empty_line``.
        detail: human-readable explanation, safe to print (holds no attacker text).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[EventError], tuple[str, str]]:
        # Keeps the error intact across process boundaries (multiprocessing pools).
        return (EventError, (self.reason, self.detail))


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedEvent:
    """One Cowrie event: the stored payload plus the normalised fields the loader needs.

    Text fields hold the text-rule encoded form. ``None`` means absent, not applicable to
    the kind, or, when a flag in ``problems`` names the field, present but unusable (the
    original stays in ``payload``). Which kinds fill which fields:

    - ``username``/``password``/``password_sha256``: ``login.*`` only (a public-key
      attempt has no password). The hash is of the original password's UTF-8 bytes,
      lone surrogates included via ``surrogatepass``; tabs and NUL are kept.
    - ``command``: ``command.input``/``failed``/``success`` (the ``input`` field).
    - ``file_*``/``transfer_ok``: downloads (``transfer_ok`` False for
      ``file_download.failed``) and uploads; never ``log.closed``, whose ``shasum`` is
      a tty-log hash. ``file_url`` only when ``url`` has a ``scheme://`` (flag
      ``not_a_url`` on a download otherwise). ``file_name`` is the first non-empty of
      ``filename``, ``destfile``, ``outfile``, as written (no basename taken).
    - ``client_version``: ``client.version``; ``hassh``: any event carrying one.
    - ``duration_seconds``: ``session.closed`` only.

    ``problems`` flags: ``missing_eventid``, ``bad_eventid``, ``bad_sensor``,
    ``missing_session`` (not raised for session-less plugin events),
    ``missing_timestamp``, ``bad_timestamp``, ``invalid_src_ip``, ``missing_duration``,
    ``bad_duration``, ``bad_shasum``, ``not_a_url``.
    """

    event_hash: str
    payload: dict[str, Any]
    eventid: str | None
    kind: EventKind
    sensor: str | None
    session_id: str | None
    event_time: datetime | None
    src_ip: str | None
    src_ip_valid: bool | None
    protocol: str | None
    username: str | None
    password: str | None
    password_sha256: str | None
    command: str | None
    file_direction: str | None
    file_shasum: str | None
    file_url: str | None
    file_name: str | None
    transfer_ok: bool | None
    client_version: str | None
    hassh: str | None
    duration_seconds: float | None
    problems: tuple[str, ...]
    #: ``payload`` as canonical JSON text (sorted keys, compact): what is hashed, and
    #: what the writer stores, so the payload is serialised once per event.
    payload_json: str


# The frozen dataclass __init__ sets each of the 23 fields through object.__setattr__,
# which measured about 4 us per event, a third of the whole parse. A plain slots twin
# with the same fields (so the same memory layout) is filled by ordinary attribute
# stores and then relabelled as ParsedEvent; the result is a genuine, frozen ParsedEvent.
# CPython allows that __class__ assignment only between layout-compatible classes, which
# deriving the twin from fields(ParsedEvent) guarantees (tested by the pickling tests).
_ParsedEventTwin = dataclasses.make_dataclass(
    "_ParsedEventTwin",
    [(field.name, field.type) for field in dataclasses.fields(ParsedEvent)],
    slots=True,
)


def _new_event(*values: Any) -> ParsedEvent:
    event = _ParsedEventTwin(*values)
    event.__class__ = ParsedEvent
    return cast(ParsedEvent, event)


def canonical_hash(encoded_payload: dict[str, Any]) -> str:
    """SHA-256 hex of a payload's canonical JSON (sorted keys, compact, UTF-8)."""
    return hashlib.sha256(canonical_json(encoded_payload)).hexdigest()


def canonical_json(encoded_payload: Any) -> bytes:
    """A payload's canonical JSON (sorted keys, compact, UTF-8).

    The same event written with other spacing, key order or escaping hashes the same,
    which is how a renamed or recompressed copy of a log is recognised. Payloads orjson
    cannot serialise (integers beyond 64 bits) fall back to the standard library's
    sorted, compact form, which writes such an integer with all its digits.
    """
    try:
        canonical = orjson.dumps(encoded_payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        canonical = json.dumps(
            encoded_payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8", "surrogatepass")
    return canonical


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _exact_int(text: str) -> int:
    # Kept exact; refused, as orjson refuses it, beyond a float's range (about 1.8e308),
    # so the lines taken are the same whichever decoder reads them.
    try:
        value = int(text)
        if len(text) > _FLOAT_DIGITS:
            float(value)
    except (ValueError, OverflowError):
        raise ValueError("number out of range") from None
    return value


def _decode(line: bytes) -> Any:
    """JSON value of ``line``: orjson first, the standard library only when orjson
    refuses (it rejects the lone surrogate escapes Cowrie can write) or may have read an
    integer beyond 64 bits as a float."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        first_error = str(exc)
    else:
        # Such an integer has at least 19 digits; one translate finds a run that long (a
        # few hundred nanoseconds), and only then is orjson's reading searched for floats.
        if not has_long_number(line) or not holds_float(value):
            return value
        # orjson took the line, so it is UTF-8 without a byte order mark.
        return _stdlib_decode(line.decode("utf-8"), "")
    if not line.strip():
        raise EventError("empty_line", "the line is empty or holds only whitespace")
    if line.startswith(_BOM):
        line = line[len(_BOM) :]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventError(
            "invalid_utf8",
            f"byte 0x{line[exc.start]:02x} at offset {exc.start} is not valid UTF-8",
        ) from None
    return _stdlib_decode(text, first_error)


def _stdlib_decode(text: str, first_error: str) -> Any:
    """JSON value of ``text`` by the standard library, numbers read as orjson reads them
    except that integers stay exact whatever their size."""
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_exact_int,
        )
    except (ValueError, RecursionError) as exc:
        # The fallback read the whole line, so its complaint is the one that stands
        # (orjson may have stopped at a lone surrogate before the real defect).
        raise EventError("invalid_json", str(exc) or first_error) from None


def parse_line(line: bytes) -> ParsedEvent:
    """Parse one log line (with or without its line ending) into a :class:`ParsedEvent`.

    Raises:
        EventError: the line is too long, empty, not UTF-8, not JSON, or not a JSON
            object. Nothing else is raised.
    """
    if len(line) > MAX_LINE_BYTES:
        raise EventError(
            "line_too_long", f"{len(line)} bytes, more than the limit of {MAX_LINE_BYTES}"
        )
    original = _decode(line)
    if not isinstance(original, dict):
        raise EventError("not_an_object", f"the JSON value is {_json_type(original)}")
    try:
        return _build(line, original)
    except RecursionError:
        raise EventError("invalid_json", "objects nested too deeply") from None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _build(line: bytes, original: dict[str, Any]) -> ParsedEvent:
    # Integer membership on bytes is a memchr; a line with no backslash, NUL or 0xEE lead
    # byte cannot need the text rule, and that skips the (much slower) substring search.
    needs_rule = (92 in line or 0 in line or 0xEE in line) and line_may_need_rule(line)
    payload: dict[str, Any] = encode_json(original) if needs_rule else original
    get = payload.get
    problems: list[str] = []

    # Identity: what happened, where and when.
    eventid = get("eventid")
    if isinstance(eventid, str):
        kind = kind_of(eventid, payload)
    else:
        kind = EventKind.OTHER
        problems.append(MISSING_EVENTID if eventid is None else BAD_EVENTID)
        eventid = None

    sensor = get("sensor")
    if not isinstance(sensor, str) or not sensor:
        if sensor is not None and not isinstance(sensor, str):
            problems.append(BAD_SENSOR)
        sensor = None

    session_id = get("session")
    if not isinstance(session_id, str) or not session_id:
        session_id = None
        if kind not in SESSIONLESS_KINDS:
            problems.append(MISSING_SESSION)

    raw_time = get("timestamp")
    event_time = parse_timestamp(raw_time)
    if event_time is None:
        problems.append(MISSING_TIMESTAMP if raw_time is None else BAD_TIMESTAMP)

    # Source address: normalised when it is one, kept as text when it is not.
    src_ip = get("src_ip")
    src_ip_valid: bool | None = None
    if isinstance(src_ip, str):
        src_ip, src_ip_valid = normalise_ip(src_ip)
    elif src_ip is not None:
        raw_text = canonical_json(src_ip).decode("utf-8")  # orjson fails on 2**64 and up
        src_ip, src_ip_valid = raw_text, False
    if src_ip_valid is False:
        problems.append(INVALID_SRC_IP)

    protocol = protocol_of(get("protocol"), get("system"))

    # Kind-specific fields.
    username = password = password_sha256 = command = client_version = None
    duration_seconds = None
    if kind in _LOGIN_KINDS:
        username = _text(get("username"))
        password = _text(get("password"))
        original_password = original.get("password")
        if isinstance(original_password, str):
            password_sha256 = hashlib.sha256(
                original_password.encode("utf-8", "surrogatepass")
            ).hexdigest()
    elif kind in _COMMAND_KINDS:
        command = _text(get("input"))
    elif kind is EventKind.CLIENT_VERSION:
        client_version = _text(get("version"))
    elif kind is EventKind.SESSION_CLOSED:
        raw_duration, raw_ms = get("duration"), get("duration_ms")
        duration_seconds = parse_duration(raw_duration, raw_ms)
        if duration_seconds is None:
            missing = raw_duration is None and raw_ms is None
            problems.append(MISSING_DURATION if missing else BAD_DURATION)

    file_direction = file_shasum = file_url = file_name = None
    transfer_ok = None
    transfer = _TRANSFERS.get(kind)
    if transfer is not None:
        file_direction, transfer_ok = transfer
        raw_shasum = get("shasum")
        file_shasum = sha256_hex(raw_shasum)
        if file_shasum is None and raw_shasum is not None:
            problems.append(BAD_SHASUM)
        url = _text(get("url"))
        if url is not None and is_url(url):
            file_url = url
        elif url is not None and file_direction == "download":
            problems.append(NOT_A_URL)
        names = (get(field) for field in _FILE_NAME_FIELDS)
        file_name = next((name for name in names if isinstance(name, str) and name), None)

    canonical = canonical_json(payload)
    # Positional, in ParsedEvent's field order (see _new_event).
    return _new_event(
        hashlib.sha256(canonical).hexdigest(),
        payload,
        eventid,
        kind,
        sensor,
        session_id,
        event_time,
        src_ip,
        src_ip_valid,
        protocol,
        username,
        password,
        password_sha256,
        command,
        file_direction,
        file_shasum,
        file_url,
        file_name,
        transfer_ok,
        client_version,
        _text(get("hassh")),
        duration_seconds,
        tuple(problems),
        canonical.decode("utf-8"),
    )
