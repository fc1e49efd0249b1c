"""scripts/ENRICHMENT_DIAGNOSTIC_QUERIES.sql on PostgreSQL gives the command's numbers."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from cowrieprocessor.diagnostics import run_diagnostics
from tests.conftest import _pg_conninfo
from tests.diagnostics.scenario import build

SQL_FILE = Path(__file__).resolve().parents[2] / "scripts" / "ENRICHMENT_DIAGNOSTIC_QUERIES.sql"


def statements() -> dict[str, str]:
    """The statements of the file by their "-- result: N" label."""
    found = {}
    for label, body in re.findall(
        r"^-- result: (\w+)\n(.*?;)\s*$", SQL_FILE.read_text("utf-8"), re.M | re.S
    ):
        found[label] = body
    return found


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


@pytest.mark.postgres
def test_sql_file_matches_the_command(pg_engine: Engine, pg_url: str) -> None:
    build(pg_engine)
    report = run_diagnostics(pg_engine).as_dict()
    queries = statements()
    assert sorted(queries) == sorted(["1", "2", "3", "4", "5", "6", "7", "8", "9a", "9b", "10"])
    results: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(_pg_conninfo(pg_url)) as conn:
        for label, sql in queries.items():
            rows = conn.execute(sql).fetchall()
            results[label] = [tuple(_num(v) for v in row) for row in rows]

    one = report["1"]
    assert results["1"] == [
        (one["sessions"], one["excluded_final_skips"], one["denominator"],
         one["with_any_enrichment"], one["complete"], one["coverage_pct"])
    ]  # fmt: skip
    by_service = {t["service"]: t for t in report["2"]["services"]}
    assert len(results["2"]) == 5
    for service, target, total, success, not_found, final, skipped, errors, never, covered, \
            denominator, pct in results["2"]:  # fmt: skip
        t = by_service[service]
        assert (target, total, success, not_found, final, never, covered, denominator, pct) == (
            t["target"], t["total"], t["success"], t["not_found"], t["final_skips"],
            t["never_attempted"], t["covered"], t["denominator"], t["coverage_pct"],
        )  # fmt: skip
        assert skipped == sum(v for k, v in t["skipped"].items() if k not in (
            "not_routable", "not_applicable"))  # fmt: skip
        assert errors == sum(t["errors"].values())
    assert results["3"] == [
        (p["period"], p["sessions"], p["complete"], p["denominator"], p["coverage_pct"],
         p["services"]["dshield"]["coverage_pct"])
        for p in report["3"]["periods"]
    ]  # fmt: skip
    assert results["4"] == [
        (d["direction"], d["rows"], d["without_hash"], d["virustotal"]["covered"],
         d["virustotal"]["denominator"], d["virustotal"]["coverage_pct"])
        for d in report["4"]["directions"]
    ]  # fmt: skip
    command_5 = {
        (c["check"], c["service"]): c["count"]
        for c in report["5"]["checks_run"]
        if c["target"] == "sessions" and c["service"] in ("dshield", "urlhaus", "spur")
        and c["check"] != "malformed" and c["count"]
    }  # fmt: skip
    assert {(r[0], r[2]): r[3] for r in results["5"] if r[3]} == command_5
    # Both take the lowest ids per outcome; the file lists outcomes alphabetically.
    assert [(r[0], r[1], r[2]) for r in results["6"]] == sorted(
        (
            (s["outcome"], s["sensor"], s["session_id"])
            for s in report["6"]["samples"]
            if s["service"] == "dshield"
        ),
        key=lambda sample: sample[0],
    )
    assert results["7"] == [
        (s["sensor"], s["sessions"], s["complete"], s["denominator"], s["coverage_pct"])
        for s in report["7"]["sensors"]
    ]  # fmt: skip
    ranked = run_diagnostics(pg_engine).records[8]
    assert [(r[0], r[1]) for r in results["8"]] == [(p.sensor, p.session_id) for p in ranked]
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in results["9a"]] == [
        (p["target"], p["service"], p["kind"], p["http_status"], p["message"], p["count"],
         p["first_seen"], p["last_seen"])
        for p in report["9"]["enrichment_errors"]
    ]  # fmt: skip
    assert [(r[0], r[1], r[2], r[5]) for r in results["9b"]] == [
        (g["reason"], g["count"], g["unresolved"], report["9"]["dead_letter_pct"])
        for g in report["9"]["dead_letters"]
    ]  # fmt: skip
    ten = report["10"]
    assert results["10"] == [
        (ten["distinct_passwords"], ten["hibp"]["covered"], ten["hibp"]["coverage_pct"],
         ten["breached"], ten["not_breached"])
    ]  # fmt: skip
