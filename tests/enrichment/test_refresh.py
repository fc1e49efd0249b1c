"""The refresh job against the fake providers: where each outcome lands, retries, TTLs,
modes and interrupted runs. Real databases, a real disk cache, a real local server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, insert, select, update
from werkzeug import Response

from cowrieprocessor.db.models import (
    File,
    LoginAttempt,
    PasswordEnrichment,
    SessionSummary,
    table_of,
)
from cowrieprocessor.db.textrule import decode_json, encode_text
from cowrieprocessor.enrichment.cache.factory import build_cache
from cowrieprocessor.enrichment.http import LimiterRegistry
from cowrieprocessor.enrichment.refresh import RefreshOptions, RefreshResult, refresh
from cowrieprocessor.enrichment.status import STATUS_FILE_NAME
from cowrieprocessor.enrichment.targets import IdFilter, Mode
from tests.enrichment.conftest import sample_reply
from tests.enrichment.servers import KEYS, FakeProviders, make_settings

SESSIONS = table_of(SessionSummary)
FILES = table_of(File)
LOGINS = table_of(LoginAttempt)
PASSWORDS = table_of(PasswordEnrichment)

T0 = datetime(2026, 3, 19, 10, 0, tzinfo=UTC)
HIT_IP = "45.84.107.4"  # dshield, urlhaus host and spur success under the server's rules
MISS_IP = "45.84.107.5"  # not found everywhere
PRIVATE_IP = "10.0.0.5"
# The fake VirusTotal knows hashes whose last digit is even (3 engines: malicious).
MALICIOUS = "f8c28666f2f2beb599dcc62721c41a82f52e63721dd2d5629073033b32a93154"
UNKNOWN = "9cc38c074833ea871c81324d0b55efe66e71a301d6c24cbed745b9a33f3dccc5"
URL_EVEN = "http://101.254.149.145:6636/tdff"  # 32 characters: URLhaus success
ADMIN_SHA1 = "D033E22AE348AEB5660FC2140AEC35850C4DA997"


@pytest.fixture
def limiters() -> Iterator[LimiterRegistry]:
    registry = LimiterRegistry()
    yield registry
    registry.close()


@pytest.fixture
def providers(httpserver: HTTPServer) -> FakeProviders:
    fake = FakeProviders(httpserver, keys=dict(KEYS))
    fake.breached[ADMIN_SHA1] = 42
    return fake


def add_session(engine: Engine, session_id: str, src_ip: str | None, sensor: str = "s1") -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(SESSIONS).values(
                sensor=sensor,
                session_id=session_id,
                src_ip=src_ip,
                src_ip_valid=src_ip is not None,
                first_event_at=T0,
                updated_at=T0,
            )
        )


def add_file(
    engine: Engine,
    session_id: str,
    shasum: str | None,
    url: str | None,
    direction: str = "download",
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(FILES).values(
                event_hash=hashlib.sha256(f"{session_id}{shasum}{url}".encode()).hexdigest(),
                sensor="s1",
                session_id=session_id,
                direction=direction,
                transfer_ok=shasum is not None,
                shasum=shasum,
                url=url,
                first_seen=T0,
            )
        )


def add_login(engine: Engine, session_id: str, password: str) -> None:
    digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()
    with engine.begin() as conn:
        conn.execute(
            insert(LOGINS).values(
                event_hash=hashlib.sha256(f"{session_id}{password}".encode()).hexdigest(),
                sensor="s1",
                session_id=session_id,
                event_time=T0,
                src_ip=HIT_IP,
                username="root",
                password=encode_text(password),
                password_sha256=digest,
                success=False,
            )
        )


def sessions(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(select(SESSIONS)).all()
    return {row.session_id: row for row in rows}


def envelope(stored: Any) -> dict[str, Any]:
    """A stored envelope without its time, decoded from the text rule."""
    found: dict[str, Any] = decode_json(stored)
    assert found.pop("checked_at").endswith("Z")
    return found


def run(
    engine: Engine,
    providers: FakeProviders,
    tmp_path: Path,
    limiters: LimiterRegistry,
    options: RefreshOptions | None = None,
    **changes: Any,
) -> RefreshResult:
    settings = make_settings(providers.base_url, tmp_path, **changes)
    return refresh(engine, settings, options, limiters=limiters)


def seed_small(engine: Engine) -> None:
    add_session(engine, "hit", HIT_IP)
    add_session(engine, "miss", MISS_IP)
    add_session(engine, "private", PRIVATE_IP)
    add_session(engine, "noip", None)
    add_file(engine, "hit", MALICIOUS, None, direction="upload")
    add_file(engine, "miss", UNKNOWN, URL_EVEN)
    add_file(engine, "miss", None, "http://mdb7.cn:8081/exp")  # a failed download
    add_login(engine, "hit", "admin")
    add_login(engine, "miss", "x\x00y")
    add_login(engine, "miss", "admin")


def test_each_outcome_lands_in_its_column(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    seed_small(engine)
    result = run(engine, providers, tmp_path, limiters)
    rows = sessions(engine)

    hit = rows["hit"].enrichment
    assert sorted(hit) == ["dshield", "spur", "urlhaus", "virustotal"]
    dshield = envelope(hit["dshield"])
    assert {k: dshield[k] for k in ("v", "service", "key", "status", "reason", "http_status")} == {
        "v": 1,
        "service": "dshield",
        "key": HIT_IP,
        "status": "success",
        "reason": None,
        "http_status": 200,
    }
    assert dshield["data"]["asname"] == "EXAMPLE-HOSTING-AS"
    assert (dshield["data"]["count"], dshield["data"]["attacks"]) == (4213, 311)
    assert sorted(dshield["data"]["threatfeeds"]) == ["blocklistde22", "ciarmy"]
    assert envelope(hit["spur"])["data"]["infrastructure"] == "DATACENTER"
    assert envelope(hit["urlhaus"])["data"]["url_count"] == 2
    vt_ip = envelope(hit["virustotal"])
    assert (vt_ip["status"], vt_ip["key"], vt_ip["data"]["last_analysis_stats"]["malicious"]) == (
        "success",
        HIT_IP,
        3,
    )
    assert rows["hit"].dshield_flagged is True
    assert rows["hit"].vt_flagged is True  # its upload is malicious

    miss = rows["miss"].enrichment
    assert {name: envelope(e)["status"] for name, e in miss.items()} == {
        "dshield": "not_found",
        "spur": "not_found",
        "urlhaus": "not_found",
        "virustotal": "success",  # the fake VT knows every IP
    }
    assert envelope(miss["dshield"])["data"]["asname"] == "EXAMPLE-ISP-AS"
    assert rows["miss"].dshield_flagged is False
    assert rows["miss"].vt_flagged is False  # its one file with a hash is unknown to VT

    for name in ("private", "noip"):
        outcomes = {k: envelope(v) for k, v in rows[name].enrichment.items()}
        expected = dict.fromkeys(("dshield", "spur", "urlhaus", "virustotal"), "not_routable")
        if name == "noip":
            expected["urlhaus"] = "not_applicable"  # URLhaus says "no host" for nothing
        assert {k: (v["status"], v["reason"]) for k, v in outcomes.items()} == {
            k: ("skipped", reason) for k, reason in expected.items()
        }
        assert rows[name].dshield_flagged is None
        assert rows[name].vt_flagged is False  # no files
    assert PRIVATE_IP not in {seen.key for seen in providers.seen}

    with engine.connect() as conn:
        files = {(r.shasum, r.url): r for r in conn.execute(select(FILES))}
    upload = files[(MALICIOUS, None)]
    assert envelope(upload.vt_analysis)["status"] == "success"
    assert envelope(upload.vt_analysis)["data"]["last_analysis_stats"]["malicious"] == 3
    assert (envelope(upload.urlhaus)["status"], envelope(upload.urlhaus)["reason"]) == (
        "skipped",
        "not_applicable",
    )
    download = files[(UNKNOWN, URL_EVEN)]
    assert envelope(download.vt_analysis) == {
        "v": 1,
        "service": "virustotal",
        "key": UNKNOWN,
        "status": "not_found",
        "reason": None,
        "http_status": 404,
        "message": None,
        "data": None,
    }
    assert envelope(download.urlhaus)["status"] == "success"
    assert envelope(download.urlhaus)["data"]["url_status"] == "offline"
    failed = files[(None, "http://mdb7.cn:8081/exp")]
    assert (envelope(failed.vt_analysis)["status"], envelope(failed.vt_analysis)["reason"]) == (
        "skipped",
        "not_applicable",
    )
    assert envelope(failed.urlhaus)["status"] == "not_found"  # odd length

    with engine.connect() as conn:
        breach = {r.password_sha256: r for r in conn.execute(select(PASSWORDS))}
    admin = breach[hashlib.sha256(b"admin").hexdigest()]
    assert (admin.breached, admin.breach_count) == (True, 42)
    assert envelope(admin.hibp) | {"data": None} == {
        "v": 1,
        "service": "hibp",
        "key": ADMIN_SHA1,
        "status": "success",
        "reason": None,
        "http_status": 200,
        "message": None,
        "data": None,
    }
    assert envelope(admin.hibp)["data"] == {"count": 42}
    nul = breach[hashlib.sha256(b"x\x00y").hexdigest()]
    assert (nul.breached, nul.breach_count, envelope(nul.hibp)["status"]) == (
        False,
        0,
        "not_found",
    )
    assert envelope(nul.hibp)["key"] == hashlib.sha1(b"x\x00y").hexdigest().upper()

    # Requests: one per distinct key that may leave the machine.
    assert providers.by_service() == {
        "dshield": 2,
        "spur": 2,
        "urlhaus": 2 + 2,  # two hosts, two URLs
        "virustotal": 2 + 2,  # two IPs, two hashes
        "hibp": 2,  # two prefixes
    }
    assert result.exit_code == 0
    summary = result.as_dict()
    assert summary["rows"]["sessions"] == {"total": 4, "scanned": 4, "enriched": 4}
    assert summary["rows"]["files"] == {"total": 3, "scanned": 3, "enriched": 3}
    assert summary["rows"]["passwords"] == {"total": 2, "scanned": 2, "enriched": 2}
    assert summary["outcomes"]["dshield"] == {
        "not_found": 1,
        "skipped/not_routable": 2,
        "success": 1,
    }
    assert summary["api_calls"] == 14
    assert summary["cache"] == {"hits": 0, "misses": 14, "repeats_in_run": 0}


def test_vt_flag_follows_the_files(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "a", MISS_IP)
    add_file(engine, "a", MALICIOUS, None)
    add_session(engine, "b", MISS_IP)
    add_file(engine, "b", "1" * 63 + "3", None)  # odd: VT 404, clean
    # Without a VirusTotal key the files cannot be known: flag unknown, no VT IP lookup.
    run(engine, providers, tmp_path, limiters, vt_api_key=None)
    rows = sessions(engine)
    assert (rows["a"].vt_flagged, rows["b"].vt_flagged) == (None, None)
    assert "virustotal" not in rows["a"].enrichment
    assert providers.requests("virustotal") == 0

    run(engine, providers, tmp_path, limiters)
    rows = sessions(engine)
    assert (rows["a"].vt_flagged, rows["b"].vt_flagged) == (True, False)


def test_errors_are_not_cached_and_are_retried(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "hit", HIT_IP)
    add_session(engine, "miss", MISS_IP)
    providers.override("dshield", Response("down", status=503))
    first = run(engine, providers, tmp_path, limiters, dshield_max_retries=1)
    rows = sessions(engine)
    for name in ("hit", "miss"):
        outcome = envelope(rows[name].enrichment["dshield"])
        assert (outcome["status"], outcome["reason"], outcome["http_status"]) == (
            "error",
            "http_status",
            503,
        )
        assert outcome["message"] == "dshield: HTTP 503; gave up after 2 attempts"
        assert rows[name].dshield_flagged is None
    assert providers.requests("dshield") == 4  # two IPs, one retry each
    assert first.failed_services == ["dshield"]
    assert first.exit_code == 1
    cache = build_cache(make_settings(providers.base_url, tmp_path))
    assert cache.stats().services.get("dshield") is None
    assert cache.stats().services["spur"].entries == 2

    providers.clear("dshield")
    before = providers.by_service()
    second = run(engine, providers, tmp_path, limiters)
    after = providers.by_service()
    assert after - before == {"dshield": 2}  # only the errors were tried again
    assert second.exit_code == 0
    rows = sessions(engine)
    assert envelope(rows["hit"].enrichment["dshield"])["status"] == "success"
    assert rows["hit"].dshield_flagged is True


def test_not_found_is_cached_with_its_shorter_ttl(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "hit", HIT_IP)
    add_session(engine, "miss", MISS_IP)
    run(engine, providers, tmp_path, limiters, dshield_ttl_days=7, dshield_not_found_ttl_days=1)
    cache = build_cache(make_settings(providers.base_url, tmp_path))
    hit, miss = cache.get_cached("dshield", HIT_IP), cache.get_cached("dshield", MISS_IP)
    assert hit is not None and miss is not None
    assert hit.expires_at - hit.stored_at == timedelta(days=7)
    assert miss.expires_at - miss.stored_at == timedelta(days=1)
    assert str(miss.outcome.status) == "not_found"


def _age(engine: Engine, session_id: str, service: str, days: float) -> None:
    """Make the stored outcome of one service ``days`` old."""
    with engine.begin() as conn:
        where = SESSIONS.c.session_id == session_id
        stored = conn.scalar(select(SESSIONS.c.enrichment).where(where))
        old = (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")
        stored[service]["checked_at"] = old
        conn.execute(update(SESSIONS).where(where).values(enrichment=stored))


def test_stale_takes_rows_older_than_the_ttl(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    for name, ip in (("old-hit", HIT_IP), ("old-miss", MISS_IP), ("fresh", "45.84.107.7")):
        add_session(engine, name, ip)
    only = RefreshOptions(services=("dshield",))
    run(engine, providers, tmp_path, limiters, only)
    assert providers.requests("dshield") == 3
    _age(engine, "old-hit", "dshield", 8)  # success TTL 7 days: stale
    _age(engine, "old-miss", "dshield", 1.5)  # not found TTL 1 day: stale
    _age(engine, "fresh", "dshield", 3)  # success, 3 of 7 days: fresh

    # A new cache directory, so every lookup the run makes reaches the server.
    fresh_cache = {"cache_dir": tmp_path / "cache2"}
    missing = run(engine, providers, tmp_path, limiters, only, **fresh_cache)
    assert providers.requests("dshield") == 3
    assert missing.counters.rows["sessions"].enriched == 0

    stale = RefreshOptions(services=("dshield",), mode=Mode.STALE)
    result = run(engine, providers, tmp_path, limiters, stale, **fresh_cache)
    assert providers.requests("dshield") == 5
    assert result.counters.rows["sessions"].enriched == 2
    assert sorted(s.key for s in providers.seen[3:]) == [HIT_IP, MISS_IP]
    rows = sessions(engine)
    checked = {name: decode_json(rows[name].enrichment["dshield"])["checked_at"] for name in rows}
    assert checked["old-hit"] > checked["fresh"] and checked["old-miss"] > checked["fresh"]


def test_only_missing_then_all(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    seed_small(engine)
    run(engine, providers, tmp_path, limiters)
    calls = providers.requests()

    again = run(engine, providers, tmp_path, limiters)
    assert providers.requests() == calls
    assert {k: v.enriched for k, v in again.counters.rows.items()} == {
        "files": 0,
        "sessions": 0,
        "passwords": 0,
    }

    everything = run(engine, providers, tmp_path, limiters, RefreshOptions(mode=Mode.ALL))
    assert providers.requests() == calls  # every answer came from the fresh cache
    assert {k: v.enriched for k, v in everything.counters.rows.items()} == {
        "files": 3,
        "sessions": 4,
        "passwords": 2,
    }
    lookups = everything.as_dict()["lookups"]
    assert lookups["dshield"]["cache_hits"] == 2 and lookups["dshield"]["api_calls"] == 0


def test_limits_since_services_and_ids(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    for n in range(1, 9):
        add_session(engine, f"s{n}", f"45.84.107.{n}", sensor="a" if n % 2 else "b")
    ids = tmp_path / "ids.txt"
    ids.write_text("a\ts1\nb\ts1\n# comment\n\ns4\nb\ts6\n", encoding="utf-8")
    options = RefreshOptions(
        sessions=2, services=("dshield",), ids=IdFilter.from_file(ids), batch_size=1
    )
    result = run(engine, providers, tmp_path, limiters, options)
    rows = sessions(engine)
    assert sorted(n for n, r in rows.items() if r.enrichment) == ["s1", "s4"]
    assert result.counters.rows["sessions"].enriched == 2
    assert providers.by_service() == {"dshield": 2}

    later = RefreshOptions(services=("dshield",), since=T0 + timedelta(seconds=1))
    assert run(engine, providers, tmp_path, limiters, later).counters.rows["sessions"].total == 0
    assert providers.requests() == 2


def test_interrupted_run_resumes_and_looks_each_key_up_once(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    for n in range(1, 31):
        add_session(engine, f"s{n:02d}", f"45.84.107.{n}")
    settings = make_settings(providers.base_url, tmp_path)
    options = RefreshOptions(services=("dshield", "spur"), batch_size=5)

    def stop_at_13(kind: str, done: int, total: int) -> None:
        if done == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refresh(engine, settings, options, limiters=limiters, progress=stop_at_13)
    rows = sessions(engine)
    assert sum(1 for r in rows.values() if r.enrichment) == 10  # two committed pages
    assert all(len(r.enrichment) == 2 for r in rows.values() if r.enrichment)
    status = orjson.loads((tmp_path / "status" / STATUS_FILE_NAME).read_bytes())
    assert status["state"] == "interrupted"
    assert status["rows"]["sessions"] == {"total": 30, "scanned": 13, "enriched": 10}
    assert providers.by_service() == {"dshield": 13, "spur": 13}

    result = refresh(engine, settings, options, limiters=limiters)
    rows = sessions(engine)
    assert all(sorted(r.enrichment) == ["dshield", "spur"] for r in rows.values())
    assert providers.by_service() == {"dshield": 30, "spur": 30}  # the 13th from the cache
    assert result.counters.rows["sessions"].enriched == 20
    assert result.as_dict()["lookups"]["dshield"]["cache_hits"] == 3
    status = orjson.loads((tmp_path / "status" / STATUS_FILE_NAME).read_bytes())
    assert status["state"] == "finished"


def test_a_crash_inside_a_page_marks_the_status_failed(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    for n in range(1, 4):
        add_session(engine, f"s{n}", f"45.84.107.{n}")

    def crash(kind: str, done: int, total: int) -> None:
        raise RuntimeError("boom")

    settings = make_settings(providers.base_url, tmp_path)
    with pytest.raises(RuntimeError):
        refresh(engine, settings, RefreshOptions(services=("dshield",)), progress=crash)
    assert all(r.enrichment is None for r in sessions(engine).values())
    status = orjson.loads((tmp_path / "status" / STATUS_FILE_NAME).read_bytes())
    assert status["state"] == "failed"


def test_a_refused_key_stops_the_service_and_is_retried_next_run(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    for n in range(1, 6):
        add_session(engine, f"s{n}", f"45.84.107.{n}")
    only_spur = RefreshOptions(services=("spur", "dshield"))
    result = run(engine, providers, tmp_path, limiters, only_spur, spur_api_key="wrong-key")
    assert providers.requests("spur") == 1  # the first 401 stopped spur for the run
    labels = [
        (envelope(r.enrichment["spur"])["status"], envelope(r.enrichment["spur"])["reason"])
        for r in sorted(sessions(engine).values(), key=lambda r: r.session_id)
    ]
    assert labels == [("error", "auth")] + [("skipped", "auth_failed")] * 4
    assert result.failed_services == ["spur"]
    assert result.exit_code == 1
    summary = result.as_dict()
    assert summary["outcomes"]["spur"] == {"error/auth": 1, "skipped/auth_failed": 4}
    assert summary["last_errors"]["spur"].startswith("skipped/auth_failed: spur: ")
    assert "wrong-key" not in orjson.dumps(summary).decode()

    fixed = run(engine, providers, tmp_path, limiters, only_spur)
    assert providers.requests("spur") == 6
    assert fixed.exit_code == 0
    assert all(
        envelope(r.enrichment["spur"])["status"] in ("success", "not_found")
        for r in sessions(engine).values()
    )


def test_a_spent_vt_quota_pauses_beyond_the_run(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_file(engine, "x", MALICIOUS, None)
    add_file(engine, "x", UNKNOWN, None)
    add_file(engine, "x", "2" * 64, None)
    providers.override("virustotal", lambda: sample_reply("virustotal", "quota-429.json"))
    result = run(engine, providers, tmp_path, limiters, RefreshOptions(services=("virustotal",)))
    with engine.connect() as conn:
        got = sorted(
            (envelope(r.vt_analysis)["status"], envelope(r.vt_analysis)["reason"])
            for r in conn.execute(select(FILES))
        )
    assert got == [("error", "quota"), ("skipped", "quota_spent"), ("skipped", "quota_spent")]
    assert providers.requests("virustotal") == 1
    assert result.failed_services == ["virustotal"]


def test_status_file_is_written(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    seed_small(engine)
    path = tmp_path / "status" / STATUS_FILE_NAME
    during: list[dict[str, Any]] = []

    def peek(kind: str, done: int, total: int) -> None:
        if not during:
            during.append(orjson.loads(path.read_bytes()))

    settings = make_settings(providers.base_url, tmp_path)
    result = refresh(engine, settings, limiters=limiters, progress=peek)
    # Written when the run starts, before the first row is done.
    assert during[0]["state"] == "running"
    assert {k: v["total"] for k, v in during[0]["rows"].items()} == {
        "files": 3,
        "sessions": 4,
        "passwords": 2,
    }
    assert during[0]["api_calls"] == 0
    assert result.status_path == path
    status = orjson.loads(path.read_bytes())
    assert status["state"] == "finished"
    assert status["v"] == 1 and status["job"] == "enrichment_refresh"
    assert status["mode"] == "only_missing"
    assert status["services"] == ["dshield", "virustotal", "urlhaus", "spur", "hibp"]
    assert status["api_calls"] == 14
    assert status["cache"] == {"hits": 0, "misses": 14, "repeats_in_run": 0}
    assert status["outcomes"]["hibp"] == {"not_found": 1, "success": 1}
    assert status["lookups"]["hibp"]["api_calls"] == 2
    assert status["eta_seconds"] is None
    assert status["last_errors"] == {}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_stale_passwords_follow_the_range_ttl(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_login(engine, "s", "x\x00y")  # not breached: a not_found password of a found range
    only = RefreshOptions(services=("hibp",), mode=Mode.STALE)
    run(engine, providers, tmp_path, limiters, only)
    with engine.begin() as conn:
        stored = conn.scalar(select(PASSWORDS.c.hibp))
        # Older than hibp's not-found TTL (30 days) but not than the range's (60 days).
        old = datetime.now(UTC) - timedelta(days=45)
        stored["checked_at"] = old.isoformat().replace("+00:00", "Z")
        conn.execute(update(PASSWORDS).values(hibp=stored))
    again = run(engine, providers, tmp_path, limiters, only, cache_dir=tmp_path / "other")
    assert again.counters.rows["passwords"].enriched == 0
    assert providers.requests("hibp") == 1


def test_server_text_with_nul_is_stored_faithfully(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "hit", HIT_IP)
    body = {"ip": {"number": HIT_IP, "count": 5, "attacks": 1, "asname": "EVIL\x00AS\ue000"}}
    providers.override("dshield", Response(orjson.dumps(body), status=200))
    run(engine, providers, tmp_path, limiters, RefreshOptions(services=("dshield",)))
    stored = sessions(engine)["hit"].enrichment["dshield"]
    assert "\\u0000" not in orjson.dumps(stored).decode()  # PostgreSQL's jsonb refuses NUL
    assert envelope(stored)["data"]["asname"] == "EVIL\x00AS\ue000"


def test_status_and_summary_show_hits_per_cache_tier(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    seed_small(engine)
    settings = make_settings(providers.base_url, tmp_path, use_database_cache=True)
    first = refresh(engine, settings, limiters=limiters).as_dict()
    tiers = first["cache"]["tiers"]
    assert set(tiers) == {"memory", "database", "disk", "copied_to_database"}
    # Nothing was cached before: every tier missed the two public addresses for DShield.
    assert tiers["database"]["dshield"] == {"hits": 0, "misses": 2}
    settings = make_settings(providers.base_url, tmp_path, use_database_cache=True)
    second = refresh(engine, settings, RefreshOptions(mode=Mode.ALL), limiters=limiters)
    assert second.as_dict()["cache"]["tiers"]["database"]["dshield"] == {"hits": 2, "misses": 0}
    status = orjson.loads((tmp_path / "status" / STATUS_FILE_NAME).read_bytes())
    assert status["cache"]["tiers"]["database"]["dshield"]["hits"] == 2
