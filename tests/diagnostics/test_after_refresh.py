"""End to end: real logs, a real refresh against local providers that fail in chosen
ways, then the diagnostics. Proves the diagnostics read what the refresh job writes:
a refused Spur key reads as a key problem, a missing URLhaus key as a missing key, and
the flags the refresh sets never count as inconsistent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, select

from cowrieprocessor.diagnostics import run_diagnostics
from cowrieprocessor.enrichment.http import LimiterRegistry
from cowrieprocessor.enrichment.refresh import refresh
from cowrieprocessor.enrichment.services.base import global_ip
from cowrieprocessor.ingest.loader import Loader
from tests.conftest import SHARED_LOGS
from tests.diagnostics.scenario import FILES, SESSIONS
from tests.enrichment.conftest import sample_reply
from tests.enrichment.servers import KEYS, FakeProviders, dshield_hit, make_settings

LOGS = [SHARED_LOGS / "pol-alvarezzz-cloud-cowrie-honeypot/cowrie.json.2026-03-19"]


@pytest.fixture
def limiters() -> Iterator[LimiterRegistry]:
    registry = LimiterRegistry()
    yield registry
    registry.close()


def test_diagnosis_of_a_refresh_with_a_refused_and_a_missing_key(
    engine: Engine, httpserver: HTTPServer, limiters: LimiterRegistry, tmp_path: object
) -> None:
    Loader(engine, default_sensor="x").ingest([str(path) for path in LOGS])
    providers = FakeProviders(httpserver, keys=dict(KEYS))
    providers.override("spur", sample_reply("spur", "auth-401.json"))
    settings = make_settings(providers.base_url, tmp_path, urlhaus_api_key=None)  # type: ignore[arg-type]
    refresh(engine, settings, limiters=limiters)

    with engine.connect() as conn:
        ips = [row.src_ip for row in conn.execute(select(SESSIONS.c.src_ip))]
        hashed = conn.execute(select(FILES.c.id).where(FILES.c.shasum.is_not(None))).all()
    routable = [ip for ip in ips if ip and global_ip(ip)]
    assert len(ips) == 121 and len(routable) == 121

    report = run_diagnostics(engine)
    services = {t.service + "/" + t.target: t for t in report.records[2]}
    dshield = services["dshield/sessions"]
    assert (dshield.success, dshield.not_found, dshield.coverage_pct) == (
        sum(1 for ip in routable if dshield_hit(ip)),
        sum(1 for ip in routable if not dshield_hit(ip)),
        100.0,
    )
    spur = services["spur/sessions"]
    assert spur.covered == 0 and spur.never == 0
    assert spur.errors.get("auth", 0) >= 1
    assert spur.errors.get("auth", 0) + spur.skipped.get("auth_failed", 0) == 121
    assert services["urlhaus/sessions"].skipped == {"no_api_key": 121}
    vt_files = services["virustotal/files"]
    assert (vt_files.total, vt_files.coverage_pct) == (len(hashed), 100.0)
    assert report.records[10].hibp.coverage_pct == 100.0

    # The flags the refresh writes agree with its envelopes.
    assert [(i.check, i.service, i.count) for i in report.records[5] if i.count] == []

    spur_check = next(c for c in report.checks if c.name == "spur")
    assert spur_check.ok is False
    assert spur_check.advice[0].text == (
        "121 sessions: the key was refused (HTTP 401); this is a key problem, not a rate "
        "problem: renew or correct the key"
    )
    assert spur_check.advice[0].command == "cowrie-enrich check-credentials"
    urlhaus_check = next(c for c in report.checks if c.name == "urlhaus")
    assert urlhaus_check.advice[0].text.startswith(
        "121 sessions: skipped, no key configured; set COWRIEPROC_URLHAUS_API_KEY"
    )
    dshield_check = next(c for c in report.checks if c.name == "dshield")
    assert dshield_check.ok is True and dshield_check.advice == ()
    assert report.as_dict()["1"]["complete"] == 0
