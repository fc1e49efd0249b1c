"""Every number the ten diagnostics report on the known outcome mix of ``scenario``,
on SQLite and PostgreSQL (the plan and its arithmetic are in scenario.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.diagnostics import DiagnoseOptions, Report, Thresholds, run_diagnostics
from tests.diagnostics.scenario import EVIL_ID, A, B, C, H, Scenario, build


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Scenario, Report]]:
    """One scenario database per kind for the whole module: the diagnostics only read."""
    from tests.conftest import create_pg_database, drop_pg_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('diag') / 'cowrie.sqlite'}"
    else:
        url = create_pg_database()
    engine = create_engine(url)
    try:
        schema.upgrade(engine)
        scenario = build(engine)
        yield engine, scenario, run_diagnostics(engine)
    finally:
        engine.dispose()
        if request.param != "sqlite":
            drop_pg_database(url)


def _tally(report: Report, service: str) -> dict[str, Any]:
    return next(t for t in report.as_dict()["2"]["services"] if t["service"] == service)


def test_sessions_services_and_passwords(built: tuple[Engine, Scenario, Report]) -> None:
    _, _, report = built
    out = report.as_dict()
    one = out["1"]
    assert (one["sessions"], one["excluded_final_skips"], one["denominator"]) == (371, 9, 362)
    assert (one["with_any_enrichment"], one["with_any_pct"]) == (309, 85.36)
    assert (one["complete"], one["coverage_pct"], one["goal_pct"]) == (250, 69.06, 95.0)

    dshield = _tally(report, "dshield")
    assert (dshield["success"], dshield["not_found"], dshield["never_attempted"]) == (229, 21, 61)
    assert dshield["errors"] == {"auth": 50, "timeout": 1}
    assert dshield["skipped"] == {"not_routable": 9}
    assert (dshield["denominator"], dshield["gaps"], dshield["coverage_pct"]) == (362, 112, 69.06)
    urlhaus = _tally(report, "urlhaus")
    assert (urlhaus["not_found"], urlhaus["errors"], urlhaus["never_attempted"]) == (
        309, {"rate_limited": 41}, 12,
    )  # fmt: skip
    assert urlhaus["coverage_pct"] == 85.36
    spur = _tally(report, "spur")
    assert (spur["success"], spur["skipped"], spur["never_attempted"]) == (
        259, {"no_api_key": 91, "not_routable": 9}, 12,
    )  # fmt: skip
    assert spur["coverage_pct"] == 71.55
    vt = _tally(report, "virustotal")
    assert (vt["target"], vt["total"], vt["success"], vt["not_found"]) == ("files", 5, 2, 1)
    assert (vt["errors"], vt["never_attempted"], vt["coverage_pct"]) == ({"quota": 1}, 1, 60.0)

    ten = out["10"]
    assert ten["distinct_passwords"] == 164
    assert (ten["hibp"]["success"], ten["hibp"]["errors"], ten["hibp"]["never_attempted"]) == (
        150, {"network": 10}, 4,
    )  # fmt: skip
    assert ten["hibp"]["coverage_pct"] == 91.46
    assert (ten["breached"], ten["not_breached"], ten["breached_pct"]) == (100, 50, 66.67)
    assert _tally(report, "hibp") == ten["hibp"]


def test_trend_by_day_and_week(built: tuple[Engine, Scenario, Report]) -> None:
    engine, _, report = built
    three = report.as_dict()["3"]
    assert [(p["period"], p["sessions"], p["coverage_pct"]) for p in three["periods"]] == [
        ("2017-11-15", 191, 47.64),
        ("2018-01-07", 30 + 9, 100.0),
        ("2026-03-19", 121, 100.0),
        ("2026-03-20", 4, 100.0),
        ("2026-03-21", 4, 100.0),
        ("2026-03-22", 4, 0.0),
        ("2026-03-23", 4, 0.0),
        ("2026-03-24", 4, 0.0),
    ]
    assert three["periods"][0]["services"]["urlhaus"] == {
        "covered": 150, "denominator": 191, "coverage_pct": 78.53,
    }  # fmt: skip
    assert three["fell_since"] == {
        "sessions": "2026-03-22", "dshield": "2026-03-22", "urlhaus": "2026-03-22",
        "spur": "2026-03-22",
    }  # fmt: skip
    assert three["below_since"]["sessions"] == "2026-03-22"
    assert three["sessions_without_time"] == 0

    weekly = run_diagnostics(engine, DiagnoseOptions(only=(3,), period="week")).as_dict()["3"]
    assert [(p["period"], p["complete"], p["denominator"]) for p in weekly["periods"]] == [
        ("2017-11-13", 91, 191),
        ("2018-01-01", 30, 30),
        ("2026-03-16", 121 + 8, 121 + 12),
        ("2026-03-23", 0, 8),
    ]
    assert weekly["periods"][2]["coverage_pct"] == 96.99
    # The week of 03-16 is still above 90 %: the fall is the week of 03-23.
    assert weekly["fell_since"]["sessions"] == "2026-03-23"
    assert weekly["fell_since"]["dshield"] == "2026-03-23"
    checks = run_diagnostics(engine, DiagnoseOptions(only=(3,), period="week")).checks
    assert checks[0].advice[0].command == "cowrie-enrich refresh --sessions 0 --since 2026-03-23"


def test_files_flags_sensors(built: tuple[Engine, Scenario, Report]) -> None:
    _, _, report = built
    out = report.as_dict()
    download, upload = out["4"]["directions"]
    assert (download["rows"], download["without_hash"], download["without_url"]) == (3, 0, 2)
    assert download["virustotal"]["coverage_pct"] == 66.67
    assert (download["urlhaus"]["not_found"], download["urlhaus"]["coverage_pct"]) == (1, 100.0)
    assert (upload["rows"], upload["virustotal"]["coverage_pct"]) == (2, 50.0)
    assert upload["urlhaus"]["coverage_pct"] is None
    assert out["4"]["virustotal"]["coverage_pct"] == 60.0

    nonzero = {
        (c["check"], c["service"]): c["count"] for c in out["5"]["checks_run"] if c["count"]
    }
    assert nonzero == {
        ("empty_data", "dshield"): 1,
        ("flag_without_outcome", "dshield"): 1,
        ("outcome_without_flag", "dshield"): 1,
        ("flag_contradicts", "dshield"): 1,
    }
    assert (len(out["5"]["checks_run"]), out["5"]["inconsistent_rows"]) == (20, 4)

    sensors = [(s["sensor"], s["sessions"], s["complete"], s["coverage_pct"]) for s in
               out["7"]["sensors"]]  # fmt: skip
    assert sensors == [
        (H, 20, 8, 40.0), (A, 121, 121, 100.0), (B, 191, 91, 47.64), (C, 39, 30, 100.0),
    ]  # fmt: skip
    assert out["7"]["sensors"][2]["services"] == {
        "dshield": 47.64, "urlhaus": 78.53, "spur": 52.36,
    }  # fmt: skip


def test_priority_samples_and_errors(built: tuple[Engine, Scenario, Report]) -> None:
    engine, scenario, report = built
    ranked = report.records[8]
    from sqlalchemy import select

    from tests.diagnostics.scenario import SESSIONS

    with engine.connect() as conn:
        rows = conn.execute(
            select(SESSIONS.c.id, SESSIONS.c.sensor, SESSIONS.c.session_id,
                   SESSIONS.c.download_count, SESSIONS.c.upload_count,
                   SESSIONS.c.login_successes, SESSIONS.c.command_count)
        ).all()  # fmt: skip
    expected = sorted(
        (
            (-(r.download_count + r.upload_count), -r.login_successes, -r.command_count, r.id),
            (r.sensor, r.session_id),
        )
        for r in rows
        if (r.sensor, r.session_id) in scenario.gaps
        and (r.download_count + r.upload_count + r.login_successes + r.command_count) > 0
    )
    assert [(p.sensor, p.session_id) for p in ranked] == [key for _, key in expected]
    assert report.as_dict()["8"]["sessions"] == len(expected) == 44
    top = ranked[0]
    assert (top.sensor, top.session_id, top.transfers, top.missing) == (
        H, "h220", 2, ("dshield", "urlhaus", "spur"),
    )  # fmt: skip

    samples = report.records[6]
    per = {(s.service, s.outcome): len([x for x in samples if (x.service, x.outcome) ==
                                        (s.service, s.outcome)]) for s in samples}  # fmt: skip
    assert per[("dshield", "error")] == 2 and per[("spur", "skipped")] == 2
    assert ("urlhaus", "success") not in per  # no session has one
    evil = [s for s in samples if s.outcome == "error" and s.sensor == H]
    assert evil == []  # lowest ids first: the auth errors of scw come before
    nines = report.as_dict()["9"]
    assert [(p["target"], p["service"], p["kind"], p["http_status"], p["count"])
            for p in nines["enrichment_errors"]] == [
        ("sessions", "dshield", "auth", 401, 50),
        ("sessions", "urlhaus", "rate_limited", 429, 41),
        ("passwords", "hibp", "network", None, 10),
        ("files", "virustotal", "quota", 429, 1),
        ("sessions", "dshield", "timeout", None, 1),
    ]  # fmt: skip
    auth = nines["enrichment_errors"][0]
    assert (auth["first_seen"], auth["last_seen"]) == (
        "2026-03-22T00:00:00Z", "2026-03-22T00:00:49Z",
    )  # fmt: skip
    assert nines["enrichment_errors"][4]["message"] == "dshield: no answer \x1b[31m in time"
    assert [(g["reason"], g["count"], g["unresolved"]) for g in nines["dead_letters"]] == [
        ("truncated_line", 1, 1)
    ]
    assert (nines["loaded_events"], nines["dead_letter_pct"]) == (7230, 0.01)
    assert EVIL_ID  # the hand session with escapes is covered by the CLI tests


def test_health_checks_and_advice(built: tuple[Engine, Scenario, Report]) -> None:
    _, _, report = built
    assert report.healthy is False
    failing = [(c.diagnostic, c.name, c.value) for c in report.checks if not c.ok]
    assert failing == [
        (1, "sessions", 69.06),
        (2, "dshield", 69.06),
        (2, "urlhaus", 85.36),
        (2, "spur", 71.55),
        (3, "trend sessions", 0.0),
        (3, "trend dshield", 0.0),
        (3, "trend urlhaus", 0.0),
        (3, "trend spur", 0.0),
        (4, "virustotal", 60.0),
        (5, "inconsistent rows", 4),
        (7, f"sensor {H}", 40.0),
        (7, f"sensor {B}", 47.64),
    ]
    passing = [(c.name, c.value) for c in report.checks if c.ok]
    assert passing == [("dead letters", 0.01), ("hibp", 91.46)]

    def advice(name: str) -> list[tuple[str, str | None]]:
        check = next(c for c in report.checks if c.name == name)
        return [(a.text, a.command) for a in check.advice]

    assert advice("dshield") == [
        ("61 sessions: never looked up; the backfill has not reached them (is the refresh "
         "timer running?)", "cowrie-enrich refresh --services dshield --sessions 0"),
        ("50 sessions: the key was refused (HTTP 401); this is a key problem, not a rate "
         "problem: renew or correct the key", "cowrie-enrich check-credentials"),
        ("1 sessions: the service could not be reached (timeouts, network errors); check the "
         "network and COWRIEPROC_DSHIELD_BASE_URL", "cowrie-enrich check-credentials"),
    ]  # fmt: skip
    assert advice("urlhaus")[0] == (
        "41 sessions: rate limited (HTTP 429); lower COWRIEPROC_URLHAUS_RATE_LIMIT and run "
        "the backfill again", "cowrie-enrich refresh --services urlhaus --sessions 0",
    )  # fmt: skip
    assert advice("spur")[0][0].startswith("91 sessions: skipped, no key configured; set "
                                           "COWRIEPROC_SPUR_API_KEY")  # fmt: skip
    assert advice("virustotal")[1] == (
        "1 files: the quota was spent (HTTP 429); see what is left, and run the backfill "
        "again after the reset", "cowrie-enrich check-credentials",
    )  # fmt: skip
    assert "the backfill stopped working on 2026-03-22" in advice("trend dshield")[0][0]
    assert advice("trend dshield")[0][1] == (
        "cowrie-enrich refresh --services dshield --sessions 0 --since 2026-03-22"
    )


def test_thresholds_since_and_only(built: tuple[Engine, Scenario, Report]) -> None:
    engine, _, _ = built
    lenient = Thresholds.from_env(
        {"COWRIEPROC_DIAG_MIN_DSHIELD": "60"}, min_sessions=60, min_urlhaus=80, min_spur=70,
        min_virustotal=50, max_inconsistent=4,
    )  # fmt: skip
    report = run_diagnostics(engine, DiagnoseOptions(only=(1, 2, 4, 5), thresholds=lenient))
    assert report.healthy is True
    assert sorted(report.results) == [1, 2, 4, 5]

    from datetime import UTC, datetime

    recent = run_diagnostics(
        engine, DiagnoseOptions(only=(1,), since=datetime(2026, 3, 21, tzinfo=UTC))
    ).as_dict()["1"]
    assert (recent["sessions"], recent["complete"], recent["coverage_pct"]) == (16, 4, 25.0)
    with pytest.raises(ValueError, match="COWRIEPROC_DIAG_MIN_SPUR"):
        Thresholds.from_env({"COWRIEPROC_DIAG_MIN_SPUR": "lots"})
    with pytest.raises(ValueError, match="numbered 1 to 10"):
        DiagnoseOptions(only=(11,))


def test_empty_database_is_healthy(engine: Engine) -> None:
    report = run_diagnostics(engine)
    assert report.healthy is True
    assert report.as_dict()["1"]["coverage_pct"] is None
    assert report.as_dict()["3"]["periods"] == []
