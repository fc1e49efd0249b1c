"""Numbers beyond 64 bits in a provider's answer: the answer is unparseable (an error,
never stored as data or in an integer column), and the refresh run goes on.

Through the refresh job on SQLite and PostgreSQL, against the fake providers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, select
from werkzeug import Response

from cowrieprocessor.enrichment.http import LimiterRegistry
from cowrieprocessor.enrichment.refresh import RefreshOptions
from tests.enrichment.servers import KEYS, FakeProviders
from tests.enrichment.test_refresh import (
    ADMIN_SHA1,
    HIT_IP,
    PASSWORDS,
    add_login,
    add_session,
    envelope,
    run,
    sessions,
)

HUGE = "99999999999999999999999"  # beyond 64 bits (and beyond BIGINT)


@pytest.fixture
def limiters() -> Iterator[LimiterRegistry]:
    registry = LimiterRegistry()
    yield registry
    registry.close()


@pytest.fixture
def providers(httpserver: HTTPServer) -> FakeProviders:
    return FakeProviders(httpserver, keys=dict(KEYS))


def test_a_hibp_count_beyond_64_bits_makes_the_range_unparseable(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "s", HIT_IP)
    add_login(engine, "s", "admin")
    providers.breached[ADMIN_SHA1] = int(HUGE)

    result = run(engine, providers, tmp_path, limiters, RefreshOptions(services=("hibp",)))

    with engine.connect() as conn:
        rows = conn.execute(select(PASSWORDS)).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.password_sha256 == hashlib.sha256(b"admin").hexdigest()
    assert (row.breached, row.breach_count) == (None, None)
    assert envelope(row.hibp) == {
        "v": 1,
        "service": "hibp",
        "key": ADMIN_SHA1,
        "status": "error",
        "reason": "unparseable",
        "http_status": 200,
        "message": "hibp: HTTP 200, line 1 has a count beyond 64 bits",
        "data": None,
    }
    assert providers.requests("hibp") == 1
    # HIBP failed for every lookup it attempted: exit 1, as for any failing service.
    assert result.exit_code == 1
    assert result.failed_services == ["hibp"]
    summary = result.as_dict()
    assert summary["rows"]["passwords"] == {"total": 1, "scanned": 1, "enriched": 1}
    assert summary["outcomes"]["hibp"] == {"error/unparseable": 1}
    assert summary["last_errors"]["hibp"] == (
        "error/unparseable: hibp: HTTP 200, line 1 has a count beyond 64 bits"
    )

    # The error is not cached: once HIBP answers sensibly the next run stores the count.
    providers.breached[ADMIN_SHA1] = 7
    fixed = run(engine, providers, tmp_path, limiters, RefreshOptions(services=("hibp",)))
    with engine.connect() as conn:
        row = conn.execute(select(PASSWORDS)).one()
    assert (row.breached, row.breach_count) == (True, 7)
    assert envelope(row.hibp)["data"] == {"count": 7}
    assert fixed.exit_code == 0


def _dshield_reply(count: object) -> Response:
    body = json.dumps({"ip": {"number": HIT_IP, "count": count, "attacks": 1}})
    # json.dumps writes a Python int of any size as digits.
    return Response(body, status=200, content_type="application/json")


def test_dshield_counts_beyond_64_bits_make_the_answer_unparseable(
    engine: Engine, providers: FakeProviders, tmp_path: Path, limiters: LimiterRegistry
) -> None:
    add_session(engine, "number", HIT_IP)
    add_session(engine, "string", "45.84.107.8")
    add_session(engine, "fine", "45.84.107.12")
    providers.override("dshield", _dshield_reply(int(HUGE)), key=HIT_IP)
    providers.override("dshield", _dshield_reply(HUGE), key="45.84.107.8")
    providers.override("dshield", _dshield_reply(str(2**63 - 1)), key="45.84.107.12")

    result = run(engine, providers, tmp_path, limiters, RefreshOptions(services=("dshield",)))

    rows = sessions(engine)
    for name in ("number", "string"):
        stored = envelope(rows[name].enrichment["dshield"])
        assert (stored["status"], stored["reason"], stored["data"]) == (
            "error",
            "unparseable",
            None,
        )
        assert rows[name].dshield_flagged is None
    assert envelope(rows["number"].enrichment["dshield"])["message"] == (
        "dshield: HTTP 200, a counter is not a number: 1e+23 is beyond 64 bits"
    )
    assert envelope(rows["string"].enrichment["dshield"])["message"] == (
        f"dshield: HTTP 200, a counter is not a number: {HUGE} is beyond 64 bits"
    )
    fine = envelope(rows["fine"].enrichment["dshield"])
    assert (fine["status"], fine["data"]["count"]) == ("success", 2**63 - 1)
    assert rows["fine"].dshield_flagged is True
    assert result.exit_code == 0
    assert result.as_dict()["outcomes"]["dshield"] == {"error/unparseable": 2, "success": 1}
