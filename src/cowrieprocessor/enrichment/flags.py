"""How a new outcome is merged into a stored one, and the columns derived from outcomes.

The refresh job writes envelopes and then derives ``dshield_flagged``, ``vt_flagged``,
``breached`` and ``breach_count`` from what is stored, never from what it just asked, so
the flags always agree with the JSON next to them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from cowrieprocessor.db.textrule import encode_json
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.enrichment.services import is_flagged, is_malicious
from cowrieprocessor.enrichment.targets import FILES, SESSIONS, read_envelope

#: Session ids per ``IN (...)`` when flags are recomputed.
_CHUNK = 500


def merged_envelope(stored: Any, outcome: Outcome) -> dict[str, Any]:
    """The envelope to store: the new one, unless it would replace a definitive answer
    with an error or a skip (old data beats no data). Text goes through the text rule."""
    old = read_envelope(stored)
    if old is not None and old.definitive and not outcome.definitive:
        return dict(stored)
    envelope: dict[str, Any] = encode_json(outcome.to_envelope())
    return envelope


def dshield_flag(stored: Any) -> bool | None:
    """``dshield_flagged``: True for a DShield success, False for not found, else None."""
    outcome = read_envelope(stored)
    if outcome is None or not outcome.definitive:
        return None
    return is_flagged(outcome)


def breach_fields(outcome: Outcome | None) -> tuple[bool | None, int | None]:
    """``(breached, breach_count)`` of a password's stored HIBP outcome."""
    if outcome is None or not outcome.definitive:
        return None, None
    if outcome.status == Status.SUCCESS:
        return True, int((outcome.data or {}).get("count", 0))
    return False, 0


def vt_flags(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], bool | None]:
    """``vt_flagged`` of each (sensor, session_id) in ``keys``, from its files.

    True when a file with a hash is malicious per VirusTotal; None while a file with a
    hash has no definitive VirusTotal outcome (missing, error, changeable skip); else
    False, also for sessions without such files.
    """
    flags: dict[tuple[str, str], bool | None] = dict.fromkeys(keys, False)
    session_ids = sorted({session_id for _, session_id in keys})
    f = FILES.c
    for start in range(0, len(session_ids), _CHUNK):
        rows = conn.execute(
            select(f.sensor, f.session_id, f.vt_analysis).where(
                f.session_id.in_(session_ids[start : start + _CHUNK]), f.shasum.is_not(None)
            )
        )
        for row in rows:
            key = (row.sensor, row.session_id)
            if key not in flags or flags[key] is True:
                continue
            outcome = read_envelope(row.vt_analysis)
            if outcome is not None and is_malicious(outcome):
                flags[key] = True
            elif outcome is None or outcome.retry_later:
                flags[key] = None
    return flags


def update_vt_flags(conn: Connection, keys: set[tuple[str, str]]) -> None:
    """Recompute and write ``vt_flagged`` of the sessions in ``keys``."""
    s = SESSIONS.c
    for (sensor, session_id), flag in vt_flags(conn, keys).items():
        conn.execute(
            update(SESSIONS)
            .where(s.sensor == sensor, s.session_id == session_id)
            .values(vt_flagged=flag)
        )
