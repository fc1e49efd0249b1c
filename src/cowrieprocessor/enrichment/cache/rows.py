"""How a cache entry becomes a row of ``enrichment_cache`` and back.

Shared by the database cache and the disk migration, so both write identical rows.

The ``payload`` column holds the entry's record (see
:func:`~cowrieprocessor.enrichment.cache.base.entry_to_record`), with every string under
the text rule (:mod:`cowrieprocessor.db.textrule`). It is serialised here rather than by
the driver because PostgreSQL's JSONB changes three things a cache must not change:

- Object keys come back sorted (shorter keys first, then by bytes). When an object inside
  the outcome's ``data`` had its keys in another order, the record gets a ``key_order``
  list: for each such object, its index in a pre-order walk of ``data`` that visits keys
  in JSONB's order, and the permutation back to the original order. The record's own
  fields are read by name, so their order is not kept.
- Numbers are ``numeric``: ``1e300`` would come back as an integer. Floats of magnitude
  1e16 and above are written as their exact integer value with ``.0``, which ``numeric``
  keeps as a decimal with one fractional digit and which reads back as the same float.
- Integers beyond 64 bits are fine in JSONB but not in orjson; they are written as
  literal digits (:class:`orjson.Fragment`).

``-0.0`` reads back as ``0.0`` from PostgreSQL (``numeric`` has no negative zero); the two
compare equal in Python. SQLite keeps the JSON text as written.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import orjson

from cowrieprocessor.db.textrule import ESCAPE, decode_json, encode_text, line_may_need_rule
from cowrieprocessor.enrichment.cache.base import (
    CacheEntry,
    decode_record,
    entry_from_record,
    entry_to_record,
)
from cowrieprocessor.jsonnumbers import has_long_number

#: Longest readable key kept in ``cache_key`` (the column is varchar(128)).
READABLE_KEY_LENGTH = 128
#: Ends a readable key that was cut; the exact key is in the payload.
CUT_MARK = "…"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT_LIMIT = 1e16
# orjson writes floats of 1e16 and above with an exponent (maybe also inside a string,
# which only sends that entry down the slower, exact path).
_EXPONENT = re.compile(rb"[0-9][eE]")
_ESCAPE_BYTES = ESCAPE.encode("utf-8")


def key_hash(key: str) -> str:
    """SHA-256 hex of the key's UTF-8, lone surrogates passed through: the lookup column."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def readable_key(key: str) -> str:
    """The key for ``cache_key``: under the text rule, cut to 128 characters with a mark."""
    text = encode_text(key)
    if len(text) <= READABLE_KEY_LENGTH:
        return text
    return text[: READABLE_KEY_LENGTH - len(CUT_MARK)] + CUT_MARK


def _jsonb_order(keys: list[str]) -> list[int]:
    # JSONB orders object keys by UTF-8 length, then bytewise.
    encoded = [k.encode("utf-8") for k in keys]
    return sorted(range(len(keys)), key=lambda i: (len(encoded[i]), encoded[i]))


class _Encoder:
    """One walk that applies the text rule and prepares numbers and key order."""

    def __init__(self, track_order: bool) -> None:
        self.track_order = track_order
        self.counter = 0
        self.orders: list[list[Any]] = []

    def walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return encode_text(value)
        if isinstance(value, dict):
            return self._object(value)
        if isinstance(value, list):
            return [self.walk(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            if _INT64_MIN <= value <= _INT64_MAX:
                return value
            return orjson.Fragment(str(value).encode("ascii"))
        if isinstance(value, float) and math.isfinite(value) and abs(value) >= _EXACT_FLOAT_LIMIT:
            return orjson.Fragment(f"{int(value)}.0".encode("ascii"))
        return value

    def _object(self, value: dict[str, Any]) -> dict[str, Any]:
        index = self.counter
        self.counter += 1
        keys = [encode_text(k) for k in value]
        children = list(value.values())
        if not self.track_order or len(keys) < 2:
            return {k: self.walk(v) for k, v in zip(keys, children, strict=True)}
        order = _jsonb_order(keys)
        if order != list(range(len(keys))):
            # position in JSONB order of each original key, in original order
            back = [0] * len(keys)
            for position, original in enumerate(order):
                back[original] = position
            self.orders.append([index, back])
        # Children are walked in JSONB's order so the decoder's walk numbers them alike.
        return {keys[i]: self.walk(children[i]) for i in order}


def dump_payload(entry: CacheEntry, *, jsonb: bool) -> str:
    """The ``payload`` text of ``entry``; ``jsonb`` when PostgreSQL will store it."""
    record = entry_to_record(entry)
    fast = _dump_plain(record, jsonb)
    if fast is not None:
        return fast
    data = record["outcome"]["data"]
    record["outcome"]["data"] = None
    record = _Encoder(track_order=False).walk(record)
    if data is not None:
        encoder = _Encoder(track_order=jsonb)
        record["outcome"]["data"] = encoder.walk(data)
        if encoder.orders:
            record["key_order"] = encoder.orders
    return orjson.dumps(record).decode("utf-8")


def _dump_plain(record: dict[str, Any], jsonb: bool) -> str | None:
    """The payload when no string needs the text rule and no number needs care, else None.

    Most entries are plain; serialising first and checking the bytes is several times
    faster than walking every string.
    """
    try:
        raw = orjson.dumps(record)
    except TypeError:
        return None  # a lone surrogate or an integer beyond 64 bits
    if line_may_need_rule(raw) or (jsonb and _EXPONENT.search(raw) is not None):
        return None
    if jsonb:
        orders: list[list[Any]] = []
        _key_orders(record["outcome"]["data"], orders, [0])
        if orders:
            raw = raw[:-1] + b',"key_order":' + orjson.dumps(orders) + b"}"
    return raw.decode("utf-8")


_RECORD_FIELDS = frozenset(
    ("format", "service", "key", "stored_at", "expires_at", "latency_ms", "outcome")
)
_ENVELOPE_FIELDS = frozenset(
    ("v", "service", "key", "status", "reason", "http_status", "message", "checked_at", "data")
)


def record_payload(record: dict[str, Any], entry: CacheEntry, *, jsonb: bool) -> str:
    """The ``payload`` text of ``entry``, taken from ``record``, the parsed record it was
    read from, when that record holds exactly the fields :func:`entry_to_record` writes
    (so nothing is added to the payload or lost from it); else :func:`dump_payload`.

    Serialising the parsed record skips rebuilding it from the entry (times formatted,
    the envelope assembled), which is most of the work for the disk migration. Times and
    numbers stay as the file wrote them; they read back as the same entry.
    """
    envelope = record.get("outcome")
    if (
        record.keys() == _RECORD_FIELDS
        and type(envelope) is dict
        and envelope.keys() == _ENVELOPE_FIELDS
        and type(record["format"]) is int
        and type(envelope["v"]) is int
        and envelope["data"] is entry.outcome.data
    ):
        plain = _dump_plain(record, jsonb)
        if plain is not None:
            return plain
    return dump_payload(entry, jsonb=jsonb)


def _key_orders(value: Any, orders: list[list[Any]], counter: list[int]) -> None:
    """The ``key_order`` hints of ``value`` (keys known to need no text rule)."""
    if isinstance(value, dict):
        index = counter[0]
        counter[0] += 1
        keys = list(value)
        order = _jsonb_order(keys) if len(keys) > 1 else list(range(len(keys)))
        if order != list(range(len(keys))):
            back = [0] * len(keys)
            for position, original in enumerate(order):
                back[original] = position
            orders.append([index, back])
        for i in order:
            _key_orders(value[keys[i]], orders, counter)
    elif isinstance(value, list):
        for item in value:
            _key_orders(item, orders, counter)


class _Reorder:
    """Put the objects named by ``key_order`` back into their original key order.

    The decoded JSON is fresh from the parser, so it is changed in place: only objects
    named in the hints are rebuilt, and only containers are visited.
    """

    def __init__(self, orders: dict[int, list[int]]) -> None:
        self.orders = orders
        self.counter = 0

    def walk(self, value: Any) -> Any:
        if type(value) is dict:
            index = self.counter
            self.counter += 1
            for name, child in value.items():
                if type(child) is dict or type(child) is list:
                    # Assigning to an existing key keeps its place in the dict.
                    value[name] = self.walk(child)
            back = self.orders.get(index)
            if back is not None and len(back) == len(value):
                if sorted(back) != list(range(len(back))):
                    raise ValueError(f"a cache payload has a malformed key_order: {back!r:.80}")
                items = list(value.items())
                return dict([items[position] for position in back])
            return value
        if type(value) is list:
            for position, child in enumerate(value):
                if type(child) is dict or type(child) is list:
                    value[position] = self.walk(child)
        return value


def _hint_orders(hints: list[Any]) -> dict[int, list[int]]:
    """The ``key_order`` hints by object index. Raises ValueError when they are malformed."""
    try:
        return {int(item[0]): [int(p) for p in item[1]] for item in hints}
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"a cache payload has a malformed key_order: {exc!r:.80}") from exc


def load_payload(raw: str | bytes) -> CacheEntry:
    """The entry a ``payload`` text holds. Raises ValueError when it is not a record."""
    raw_bytes = raw.encode("utf-8") if isinstance(raw, str) else raw
    if has_long_number(raw_bytes):
        data = decode_record(raw_bytes)  # keeps integers beyond 64 bits exact
    else:
        # The common case, without decode_record's regular expression: payloads hold no
        # escaped surrogates (the text rule replaced them), so orjson reads them all.
        try:
            data = orjson.loads(raw_bytes)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"a cache payload is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"a cache payload must be a JSON object, got {type(data).__name__}")
    hints = data.pop("key_order", None)
    # Text-rule escapes all start with U+E000; without one there is nothing to decode.
    record = decode_json(data) if _ESCAPE_BYTES in raw_bytes else data
    outcome = record.get("outcome")
    if isinstance(hints, list) and isinstance(outcome, dict):
        outcome["data"] = _Reorder(_hint_orders(hints)).walk(outcome.get("data"))
    return entry_from_record(record)


def entry_row(
    entry: CacheEntry, *, jsonb: bool, migration_id: str | None = None
) -> dict[str, Any]:
    """The column values of ``entry`` (``payload_json`` is the payload text)."""
    outcome = entry.outcome
    return {
        "service": entry.service,
        "cache_key": readable_key(entry.key),
        "cache_key_hash": key_hash(entry.key),
        "payload_json": dump_payload(entry, jsonb=jsonb),
        "response_status": str(outcome.status),
        "created_at": entry.stored_at,
        "expires_at": entry.expires_at,
        "api_response_code": outcome.http_status,
        "api_latency_ms": outcome.latency_ms,
        "error_message": encode_text(outcome.message) if outcome.message is not None else None,
        "migration_id": migration_id,
    }
