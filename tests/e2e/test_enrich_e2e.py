"""End to end: load real logs, refresh against local fake providers, check every row.

Inputs: the shared kareiva ``cowrie.json.2018-05-24`` (502 sessions, 4 downloads) and pol
``cowrie.json.2026-03-19`` (121 sessions, 2 uploads), plus a small log written here with
two sessions from private addresses (every source IP in the shared logs is global), a
download from a documentation address and a password holding NUL. The expected outcome of
every session, file and password is computed in this test from the source lines and the
fake providers' published rules, independently of the code under test. Runs on SQLite
and PostgreSQL; a second refresh must not send a single request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, select

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.db.models import File, PasswordEnrichment, SessionSummary, table_of
from cowrieprocessor.db.textrule import decode_json, decode_text
from cowrieprocessor.enrichment.http import LimiterRegistry
from cowrieprocessor.enrichment.refresh import refresh
from cowrieprocessor.ingest.loader import Loader
from tests.conftest import SHARED_LOGS
from tests.enrichment.servers import (
    KEYS,
    FakeProviders,
    dshield_hit,
    make_settings,
    spur_hit,
    urlhaus_host_hit,
    urlhaus_url_hit,
    vt_file_hit,
)

SOURCES = [
    SHARED_LOGS / "kareiva-cowrie-logs" / "cowrie.json.2018-05-24",
    SHARED_LOGS / "pol-alvarezzz-cloud-cowrie-honeypot" / "cowrie.json.2026-03-19",
]
PRIVATE_LOG = [
    {"eventid": "cowrie.session.connect", "session": "lab000000001", "src_ip": "10.0.0.5"},
    {
        "eventid": "cowrie.login.failed",
        "session": "lab000000001",
        "src_ip": "10.0.0.5",
        "username": "root",
        "password": "p\u0000w\u0000rd",
    },
    {
        "eventid": "cowrie.session.file_download",
        "session": "lab000000001",
        "src_ip": "10.0.0.5",
        "url": "http://198.51.100.7/x.sh",
        "shasum": "ab" * 32,
        "outfile": "dl/" + "ab" * 32,
    },
    {"eventid": "cowrie.session.closed", "session": "lab000000001", "src_ip": "10.0.0.5"},
    {"eventid": "cowrie.session.connect", "session": "lab000000002", "src_ip": "172.16.3.4"},
    {"eventid": "cowrie.session.closed", "session": "lab000000002", "src_ip": "172.16.3.4"},
]
SESSION_SERVICES = ("dshield", "urlhaus", "spur", "virustotal")


def _is_global(text: str) -> bool:
    address = ipaddress.ip_address(text)
    return address.is_global and not address.is_multicast


@dataclass
class Expected:
    """What every row should hold, from the source lines alone."""

    session_ip: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str | None, str | None]] = field(default_factory=list)
    passwords: set[str] = field(default_factory=set)

    def read(self, lines: list[dict[str, Any]]) -> None:
        for event in lines:
            session, eventid = event.get("session"), event.get("eventid", "")
            if session and event.get("src_ip"):
                self.session_ip.setdefault(session, event["src_ip"])
            if eventid.startswith(("cowrie.session.file_download", "cowrie.session.file_upload")):
                self.files.append((event.get("shasum"), event.get("url")))
            if eventid.startswith("cowrie.login.") and isinstance(event.get("password"), str):
                self.passwords.add(event["password"])

    def session_outcome(self, service: str, ip: str) -> str:
        if not _is_global(ip):
            return "skipped/not_routable"
        hit = {"dshield": dshield_hit, "urlhaus": urlhaus_host_hit, "spur": spur_hit}.get(
            service, lambda _: True
        )
        return "success" if hit(ip) else "not_found"

    @staticmethod
    def vt_file(shasum: str | None) -> str:
        if shasum is None:
            return "skipped/not_applicable"
        return "success" if vt_file_hit(shasum) else "not_found"

    @staticmethod
    def urlhaus_url(url: str | None) -> str:
        if url is None or urlsplit(url).scheme not in ("http", "https", "ftp"):
            return "skipped/not_applicable"
        host = urlsplit(url).hostname or ""
        try:
            if not _is_global(host):
                return "skipped/not_routable"
        except ValueError:
            pass  # a host name
        return "success" if urlhaus_url_hit(url) else "not_found"

    @staticmethod
    def sha1(password: str) -> str:
        return hashlib.sha1(password.encode("utf-8", "surrogatepass")).hexdigest().upper()

    def breached(self) -> dict[str, int]:
        """The fake HIBP's breach list: passwords whose SHA-1 ends in an even digit."""
        found = {}
        for password in self.passwords:
            sha1 = self.sha1(password)
            if int(sha1[-1], 16) % 2 == 0:
                found[sha1] = int(sha1[-3:], 16) + 1
        return found


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
    return out


def _label(stored: Any) -> str:
    envelope = decode_json(stored)
    status = envelope["status"]
    return f"{status}/{envelope['reason']}" if envelope["reason"] else status


@pytest.fixture
def loaded(db_url: str, tmp_path: Path) -> Iterator[tuple[Engine, Expected]]:
    private = tmp_path / "logs" / "cowrie.json.lab"
    private.parent.mkdir()
    stamped = [
        event | {"timestamp": f"2026-03-19T11:00:0{n}.000000Z", "sensor": "lab"}
        for n, event in enumerate(PRIVATE_LOG)
    ]
    private.write_text("".join(json.dumps(e) + "\n" for e in stamped), encoding="utf-8")

    expected = Expected()
    for path in [*SOURCES, private]:
        expected.read(_lines(path))
    engine = create_engine(db_url)
    schema.upgrade(engine)
    Loader(engine, default_sensor="e2e").ingest([str(p) for p in [*SOURCES, private]])
    try:
        yield engine, expected
    finally:
        engine.dispose()


def test_refresh_gives_every_row_its_outcome_and_a_rerun_sends_nothing(
    loaded: tuple[Engine, Expected], httpserver: HTTPServer, tmp_path: Path
) -> None:
    engine, expected = loaded
    assert len(expected.session_ip) == 502 + 121 + 2
    assert len(expected.files) == 4 + 2 + 1
    providers = FakeProviders(httpserver, keys=dict(KEYS))
    providers.breached.update(expected.breached())
    settings = make_settings(providers.base_url, tmp_path)
    registry = LimiterRegistry()

    result = refresh(engine, settings, limiters=registry)
    assert result.exit_code == 0

    # Sessions: each one's outcome per service, and the flags that follow from them.
    sessions_table = table_of(SessionSummary)
    with engine.connect() as conn:
        rows = conn.execute(select(sessions_table)).all()
    assert len(rows) == len(expected.session_ip)
    for row in rows:
        session_id = decode_text(row.session_id)
        ip = expected.session_ip[session_id]
        assert decode_text(row.src_ip) == ip
        got = {name: _label(envelope) for name, envelope in row.enrichment.items()}
        want = {name: expected.session_outcome(name, ip) for name in SESSION_SERVICES}
        assert got == want, session_id
        assert row.dshield_flagged is {"success": True, "not_found": False}.get(want["dshield"])

    ips = set(expected.session_ip.values())
    global_ips = {ip for ip in ips if _is_global(ip)}
    assert ips - global_ips == {"10.0.0.5", "172.16.3.4"}
    counts = Counter(_label(r.enrichment["dshield"]) for r in rows)
    assert counts["skipped/not_routable"] == 2
    assert counts["success"] == sum(
        1 for ip in expected.session_ip.values() if _is_global(ip) and dshield_hit(ip)
    )

    # Files: VirusTotal by hash, URLhaus by URL; vt_flagged of their sessions.
    with engine.connect() as conn:
        files = conn.execute(select(table_of(File))).all()
    # (The loader keeps no URL for Cowrie's "/dev/null" redirect captures; either way
    # URLhaus is not applicable, so rows are compared by hash and outcomes.)
    got_files = Counter(
        (row.shasum, _label(row.vt_analysis), _label(row.urlhaus)) for row in files
    )
    want_files = Counter(
        (shasum, expected.vt_file(shasum), expected.urlhaus_url(url))
        for shasum, url in expected.files
    )
    assert got_files == want_files
    malicious = {decode_text(r.session_id) for r in files if r.shasum and vt_file_hit(r.shasum)}
    flagged = {decode_text(r.session_id) for r in rows if r.vt_flagged}
    assert flagged == malicious
    assert all(r.vt_flagged is False for r in rows if decode_text(r.session_id) not in flagged)

    # Passwords: one row per distinct original password, breached per the fake list.
    with engine.connect() as conn:
        breach_rows = conn.execute(select(table_of(PasswordEnrichment))).all()
    by_hash = {row.password_sha256: row for row in breach_rows}
    want_hashes = {
        hashlib.sha256(p.encode("utf-8", "surrogatepass")).hexdigest(): p
        for p in expected.passwords
    }
    assert set(by_hash) == set(want_hashes)
    breached = expected.breached()
    for digest, password in want_hashes.items():
        row = by_hash[digest]
        count = breached.get(expected.sha1(password))
        assert (row.breached, row.breach_count) == (count is not None, count or 0), password
        assert decode_json(row.hibp)["key"] == expected.sha1(password)
    assert sum(1 for r in breach_rows if r.breached) == len(breached) > 0

    # Requests: exactly one per distinct key that may leave the machine.
    hashes = {s for s, _ in expected.files if s}
    urls = {u for s, u in expected.files if expected.urlhaus_url(u) in ("success", "not_found")}
    prefixes = {expected.sha1(p)[:5] for p in expected.passwords}
    assert providers.by_service() == {
        "dshield": len(global_ips),
        "spur": len(global_ips),
        "urlhaus": len(global_ips) + len(urls),
        "virustotal": len(global_ips) + len(hashes),
        "hibp": len(prefixes),
    }
    assert not {"10.0.0.5", "172.16.3.4", "198.51.100.7"} & {s.key for s in providers.seen}
    summary = result.as_dict()
    assert summary["api_calls"] == providers.requests()
    assert summary["rows"]["sessions"]["enriched"] == len(rows)

    # A second run: nothing to do, not one request.
    before = providers.requests()
    again = refresh(engine, settings, limiters=registry)
    registry.close()
    assert providers.requests() == before
    assert again.exit_code == 0
    assert again.as_dict()["api_calls"] == 0
    assert {k: v.enriched for k, v in again.counters.rows.items()} == {
        "files": 0,
        "sessions": 0,
        "passwords": 0,
    }
