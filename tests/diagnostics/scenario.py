"""A database with a known mix of enrichment outcomes, for the diagnostics tests.

Three shared real logs are loaded with the loader (351 sessions on three sensors, five
files, 164 distinct passwords, one dead letter); outcome envelopes are then written by
direct UPDATEs, and 20 hand-made sessions on sensor ``hand`` give a falling trend over
2026-03-20..24. Every number the tests assert follows from the plan below.

Real sessions are taken per sensor in order of session id (Python string order):

============================ ==== ======================================================
sensor                       rows outcomes
============================ ==== ======================================================
ip-172-31-31-222 (03-19)     121  dshield success 0..99, not_found 100..120; urlhaus
                                  not_found; spur success
scw-8456a9 (2017-11-15)      191  dshield success 0..90, error auth/401 91..140, none
                                  141..190; urlhaus not_found 0..149, error 429 150..190;
                                  spur success 0..99, skipped no_api_key 100..190
ubuntu-1gb-nyc3-01 (2018)     39  0..8 all three skipped not_routable; the rest success /
                                  not_found / success
hand (2026-03-20..24)         20  4 a day; 20th and 21st complete, then nothing, except
                                  one day-24 session whose dshield timed out
============================ ==== ======================================================

Seeded inconsistencies (dshield): ip-172 #0 success with empty data; #1 success without
flag; #110 not_found flagged; scw #100 (auth error) flagged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import File, LoginAttempt, PasswordEnrichment, SessionSummary
from cowrieprocessor.db.models import table_of as _table
from cowrieprocessor.db.textrule import encode_json, encode_text
from cowrieprocessor.enrichment.outcome import Outcome, Status
from cowrieprocessor.ingest.loader import Loader
from tests.conftest import SHARED_LOGS

LOGS = [
    SHARED_LOGS / "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19",
    SHARED_LOGS / "scriptzteam-realtime-ssh-honeypot-v1.5/cowrie.json",
    SHARED_LOGS / "shaun-schwartz-rails-cowrie-log-parser/cowrie.json.500_lines",
]
A, B, C, H = "ip-172-31-31-222", "scw-8456a9", "ubuntu-1gb-nyc3-01", "hand"
EVIL_ID = "evil\x1b[2J\x00"
EVIL_MESSAGE = "dshield: no answer \x1b[31m in time"
T0 = datetime(2026, 3, 22, tzinfo=UTC)

SESSIONS = _table(SessionSummary)
FILES = _table(File)
LOGINS = _table(LoginAttempt)
PASSWORDS = _table(PasswordEnrichment)


def envelope(
    service: str,
    key: str,
    status: str,
    reason: str | None = None,
    *,
    data: dict[str, Any] | None = None,
    http_status: int | None = None,
    message: str | None = None,
    at: datetime = T0,
) -> dict[str, Any]:
    outcome = Outcome(
        service,
        key,
        Status(status),
        reason=reason,
        data=data,
        http_status=http_status,
        message=message,
        checked_at=at,
    )
    return outcome.to_envelope()


@dataclass
class Scenario:
    """What was written, for tests that need the ids (``gaps``: sessions with a gap)."""

    sessions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    gaps: set[tuple[str, str]] = field(default_factory=set)


def _session_plan(sensor: str, index: int, ip: str) -> tuple[dict[str, Any], bool | None]:
    """(enrichment object, dshield_flagged) of one real session."""
    ok = {"attacks": 3, "threatfeeds": {"blocklistde22": {}}}
    dshield: dict[str, Any] | None
    if sensor == A:
        dshield = (
            envelope("dshield", ip, "success", data=ok)
            if index < 100
            else envelope("dshield", ip, "not_found", data={"as": 1})
        )
        urlhaus = envelope("urlhaus", ip, "not_found")
        spur = envelope("spur", ip, "success", data={"tunnels": []})
    elif sensor == B:
        if index < 91:
            dshield = envelope("dshield", ip, "success", data=ok)
        elif index < 141:
            at = T0 + timedelta(seconds=index - 91)
            dshield = envelope(
                "dshield",
                ip,
                "error",
                "auth",
                http_status=401,
                message="dshield: HTTP 401, the key was refused",
                at=at,
            )
        else:
            dshield = None
        urlhaus = (
            envelope("urlhaus", ip, "not_found")
            if index < 150
            else envelope(
                "urlhaus",
                ip,
                "error",
                "rate_limited",
                http_status=429,
                message="urlhaus: HTTP 429, too many requests",
            )
        )
        spur = (
            envelope("spur", ip, "success", data={"tunnels": []})
            if index < 100
            else envelope("spur", ip, "skipped", "no_api_key", message="spur: no key")
        )
    else:
        if index < 9:
            final = {"status": "skipped", "reason": "not_routable"}
            obj = {
                name: envelope(name, ip, final["status"], final["reason"])
                for name in ("dshield", "urlhaus", "spur")
            }
            return obj, None
        dshield = envelope("dshield", ip, "success", data=ok)
        urlhaus = envelope("urlhaus", ip, "not_found")
        spur = envelope("spur", ip, "success", data={"tunnels": []})
    obj = {"urlhaus": urlhaus, "spur": spur}
    if dshield is not None:
        obj["dshield"] = dshield
    flag = (
        None if dshield is None else {"success": True, "not_found": False}.get(dshield["status"])
    )
    return obj, flag


def build(engine: Engine) -> Scenario:
    """Load the logs and write the plan of the module docstring."""
    Loader(engine, default_sensor="x").ingest([str(path) for path in LOGS])
    scenario = Scenario()
    with engine.begin() as conn:
        rows = conn.execute(
            select(SESSIONS.c.id, SESSIONS.c.sensor, SESSIONS.c.session_id, SESSIONS.c.src_ip)
        ).all()
        by_sensor: dict[str, list[Any]] = {}
        for row in rows:
            by_sensor.setdefault(row.sensor, []).append(row)
        for sensor, members in by_sensor.items():
            members.sort(key=lambda r: r.session_id)
            for index, row in enumerate(members):
                obj, flag = _session_plan(sensor, index, row.src_ip)
                if sensor == A and index == 0:
                    obj["dshield"]["data"] = {}
                if sensor == A and index == 1:
                    flag = None
                if (sensor == A and index == 110) or (sensor == B and index == 100):
                    flag = True
                conn.execute(
                    update(SESSIONS)
                    .where(SESSIONS.c.id == row.id)
                    .values(enrichment=encode_json(obj), dshield_flagged=flag)
                )
                scenario.sessions[(sensor, row.session_id)] = obj
                if sensor == B and index >= 91:
                    scenario.gaps.add((sensor, row.session_id))
        _hand_sessions(conn, scenario)
        _files(conn)
        _passwords(conn)
    return scenario


def _hand_sessions(conn: Any, scenario: Scenario) -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    activity = {
        (22, 0): {"download_count": 2},
        (22, 1): {"login_successes": 1},
        (22, 2): {"command_count": 5},
        (23, 0): {"upload_count": 1, "command_count": 1},
        (24, 3): {"command_count": 1},
    }
    for day in range(20, 25):
        for n in range(4):
            session_id = EVIL_ID if (day, n) == (24, 3) else f"h{day}{n}"
            ip = f"198.51.{day}.{n}"
            start = datetime(2026, 3, day, 12, n, tzinfo=UTC)
            obj: dict[str, Any] | None = None
            if day <= 21:
                obj = {
                    "dshield": envelope("dshield", ip, "success", data={"attacks": 1}),
                    "urlhaus": envelope("urlhaus", ip, "not_found"),
                    "spur": envelope("spur", ip, "success", data={"tunnels": []}),
                }
            elif (day, n) == (24, 3):
                obj = {
                    "dshield": envelope("dshield", ip, "error", "timeout", message=EVIL_MESSAGE)
                }
            values = {
                "sensor": H,
                "session_id": encode_text(session_id),
                "src_ip": ip,
                "src_ip_valid": True,
                "first_event_at": start,
                "last_event_at": start + timedelta(minutes=1),
                "enrichment": encode_json(obj) if obj else None,
                "dshield_flagged": True if day <= 21 else None,
                "updated_at": now,
                **activity.get((day, n), {}),
            }
            conn.execute(insert(SESSIONS).values(**values))
            scenario.sessions[(H, encode_text(session_id))] = obj or {}
            if day >= 22:
                scenario.gaps.add((H, encode_text(session_id)))


def _files(conn: Any) -> None:
    rows = conn.execute(
        select(FILES.c.id, FILES.c.direction, FILES.c.shasum, FILES.c.url, FILES.c.sensor,
               FILES.c.session_id).order_by(FILES.c.id)
    ).all()  # fmt: skip
    downloads = [r for r in rows if r.direction == "download"]
    uploads = [r for r in rows if r.direction == "upload"]
    plan = {
        downloads[0].id: envelope(
            "virustotal", downloads[0].shasum, "success",
            data={"last_analysis_stats": {"malicious": 3, "harmless": 50}},
        ),
        downloads[1].id: envelope(
            "virustotal", downloads[1].shasum, "success",
            data={"last_analysis_stats": {"malicious": 0, "harmless": 60}},
        ),
        downloads[2].id: envelope(
            "virustotal", downloads[2].shasum, "error", "quota", http_status=429,
            message="virustotal: HTTP 429, QuotaExceededError",
        ),
        uploads[0].id: envelope("virustotal", uploads[0].shasum, "not_found"),
    }  # fmt: skip
    for row in rows:
        values: dict[str, Any] = {"vt_analysis": plan.get(row.id)}
        if row.url is not None:
            values["urlhaus"] = envelope("urlhaus", row.url, "not_found")
        conn.execute(update(FILES).where(FILES.c.id == row.id).values(**values))
    conn.execute(
        update(SESSIONS)
        .where(
            SESSIONS.c.sensor == downloads[0].sensor,
            SESSIONS.c.session_id == downloads[0].session_id,
        )
        .values(vt_flagged=True)
    )


def _passwords(conn: Any) -> None:
    hashes = sorted(
        conn.execute(
            select(LOGINS.c.password_sha256)
            .where(LOGINS.c.password_sha256.is_not(None))
            .distinct()
        ).scalars()
    )
    now = datetime(2026, 12, 3, tzinfo=UTC)
    for index, sha in enumerate(hashes):
        if index >= 160:
            continue
        if index < 150:
            hibp = envelope("hibp", sha[:5], "success", data={"entries": 3, "body": "X:1"})
            breached, count = index < 100, (7 if index < 100 else 0)
        else:
            hibp = envelope(
                "hibp", sha[:5], "error", "network", message="hibp: ConnectError: refused"
            )
            breached, count = None, None
        conn.execute(
            insert(PASSWORDS).values(
                password_sha256=sha, hibp=hibp, breached=breached, breach_count=count,
                updated_at=now,
            )
        )  # fmt: skip


def scenario_database(kind: str, tmp_path_factory: Any) -> Iterator[str]:
    """URL of a database of ``kind`` (sqlite, postgresql) holding the scenario; dropped
    afterwards. For module-scoped fixtures: the diagnostics only read."""
    from tests.conftest import create_pg_database, drop_pg_database

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('scenario') / 'cowrie.sqlite'}"
    else:
        url = create_pg_database()
    engine = create_engine(url)
    try:
        schema.upgrade(engine)
        build(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        if kind != "sqlite":
            drop_pg_database(url)
