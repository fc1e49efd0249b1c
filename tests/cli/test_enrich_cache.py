"""`cowrie-enrich migrate-cache` and `cowrie-enrich cache ...` as an operator runs them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cowrieprocessor.cli.db import app as db_app
from cowrieprocessor.cli.enrich import app
from cowrieprocessor.db import schema
from cowrieprocessor.db.engine import create_engine
from cowrieprocessor.enrichment.cache import EnrichmentCacheManager
from cowrieprocessor.enrichment.cache.database import EnrichmentDatabaseCache
from cowrieprocessor.enrichment.outcome import Outcome, Status

from ..cache.diskfixture import make_disk_cache


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "COWRIEPROC_CONFIG": "",
        "COWRIEPROC_DB_URL": db_url,
        "COWRIEPROC_STATUS_DIR": str(tmp_path / "status"),
        "COWRIEPROC_CACHE_DIR": str(tmp_path / "disk"),
    }


def invoke(env: dict[str, str], *args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == code, result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_migrate_validate_rollback_through_the_command(
    env: dict[str, str], tmp_path: Path
) -> None:
    fx = make_disk_cache(tmp_path / "disk")
    source = ("--from-disk", str(fx.root), "--to-database")

    # A dry run writes nothing, so it does not create the database either.
    missing = invoke(env, "migrate-cache", *source, "--dry-run", code=2)
    assert missing["ok"] is False and "cowrie-db upgrade" in missing["error"]
    assert CliRunner().invoke(db_app, ["upgrade"], env=env).exit_code == 0
    dry = invoke(env, "migrate-cache", *source, "--dry-run", "--workers", "1")
    real = invoke(env, "migrate-cache", *source, "--batch-size", "5", "--workers", "2")
    valid = invoke(env, "migrate-cache", *source, "--validate")
    sampled = invoke(env, "migrate-cache", *source, "--validate", "--sample", "5")
    rolled = invoke(env, "migrate-cache", "--rollback")

    assert (dry["dry_run"], dry["migrated"], dry["files_seen"]) == (True, 38, fx.files)
    assert (real["migrated"], real["already_present"], real["expired"]) == (38, 0, 3)
    assert real["corrupt"] == 7
    assert dry["unknown_service"] == real["unknown_service"] == 3
    assert real["problems"]["unknown_service"]["paths"][0] == str(fx.root / "unknownsvc")
    assert real["problems"]["truncated"]["paths"] == [str(fx.problems["truncated"][0])]
    assert (valid["ok"], valid["compared"], valid["differences"]) == (True, 38, 0)
    assert (sampled["compared"], sampled["differences"]) == (5, 0)
    assert rolled == {"ok": True, "migration_id": real["migration_id"], "removed": 38}
    status = json.loads((tmp_path / "status" / "cache_migration.json").read_text())
    assert (status["state"], status["rolled_back_rows"]) == ("rolled_back", 38)


def test_migrate_needs_its_direction(env: dict[str, str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["migrate-cache", "--from-disk", str(tmp_path)], env=env)

    assert result.exit_code == 2
    assert "--from-disk PATH --to-database" in result.output


def test_stats_cleanup_invalidate(env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    schema.upgrade(engine)
    now = datetime.now(UTC)
    database = EnrichmentDatabaseCache(engine)
    disk = EnrichmentCacheManager(tmp_path / "disk")
    for n in range(4):
        database.store_cached(Outcome("dshield", f"192.0.2.{n}", Status.SUCCESS, data={"n": n}))
    database.store_cached(
        Outcome("dshield", "192.0.2.99", Status.NOT_FOUND), stored_at=now - timedelta(days=20)
    )
    database.store_cached(
        Outcome("spur", "192.0.2.1", Status.SUCCESS, data={}), stored_at=now - timedelta(days=15)
    )
    disk.store_cached(Outcome("urlhaus", "a.example", Status.NOT_FOUND))
    database.get_many("dshield", ["192.0.2.0", "192.0.2.1"])
    database.close()
    engine.dispose()

    stats = invoke(env, "cache", "stats")
    dshield = stats["database"]["services"]["dshield"]
    assert (dshield["entries"], dshield["expired"], dshield["by_status"]) == (
        5,
        1,
        {"not_found": 1, "success": 4},
    )
    assert dshield["age_buckets"] == {"<1d": 4, "1-7d": 0, "7-30d": 1, ">30d": 0}
    assert (dshield["hits"], dshield["entries_hit"], dshield["read_share"]) == (2, 2, 0.4)
    assert stats["database"]["services"]["spur"]["expired"] == 1
    assert stats["disk"]["services"]["urlhaus"]["entries"] == 1

    assert invoke(env, "cache", "cleanup", "--batch-size", "1")["removed"] == {
        "database": 2,
        "disk": 0,
    }
    removed = invoke(env, "cache", "invalidate", "--service", "dshield", "--key", "192.0.2.3")
    assert removed["removed"] == {"database": 1, "disk": 0}
    older = invoke(env, "cache", "invalidate", "--service", "dshield", "--older-than", "1")
    assert older["removed"] == {"database": 0, "disk": 0}
    by_status = invoke(env, "cache", "invalidate", "--service", "urlhaus", "--status", "not_found")
    assert by_status["removed"] == {"database": 0, "disk": 1}
    bad = CliRunner().invoke(
        app, ["cache", "invalidate", "--service", "dshield", "--status", "nope"], env=env
    )
    assert bad.exit_code == 2


def test_invalidate_names_the_valid_statuses(env: dict[str, str], db_url: str) -> None:
    engine = create_engine(db_url)
    schema.upgrade(engine)
    engine.dispose()

    bad = invoke(env, "cache", "invalidate", "--service", "dshield", "--status", "bogus", code=2)

    assert bad["ok"] is False
    assert "'bogus'" in bad["error"]
    for status in Status:
        assert status.value in bad["error"]


def _status_file(tmp_path: Path) -> Path:
    return tmp_path / "status" / "cache_migration.json"


def test_rollback_of_an_unknown_migration_id_fails(env: dict[str, str], tmp_path: Path) -> None:
    fx = make_disk_cache(tmp_path / "disk")
    assert CliRunner().invoke(db_app, ["upgrade"], env=env).exit_code == 0
    real = invoke(env, "migrate-cache", "--from-disk", str(fx.root), "--to-database")

    typo = invoke(env, "migrate-cache", "--rollback", "--migration-id", "nonsense", code=2)
    assert typo["ok"] is False
    assert "'nonsense'" in typo["error"]
    assert str(_status_file(tmp_path)) in typo["error"]  # where the right id is
    assert real["migration_id"] in typo["error"]
    assert "SELECT DISTINCT migration_id FROM enrichment_cache" in typo["error"]
    human = CliRunner().invoke(
        app, ["migrate-cache", "--rollback", "--migration-id", "nonsense"], env=env
    )
    assert human.exit_code == 2
    assert "nonsense" in human.output and "rolled back" not in human.output

    # Nothing was removed; the real id still rolls back, and a second time removes
    # nothing but still succeeds: the status file records that migration.
    rolled = invoke(env, "migrate-cache", "--rollback", "--migration-id", real["migration_id"])
    assert rolled["removed"] == 38
    again = invoke(env, "migrate-cache", "--rollback")
    assert (again["ok"], again["migration_id"], again["removed"]) == (
        True,
        real["migration_id"],
        0,
    )
    said = CliRunner().invoke(app, ["migrate-cache", "--rollback"], env=env)
    assert said.exit_code == 0
    assert "0 rows removed" in said.output and "rolled back before" in said.output


def test_rollback_knows_migrations_by_their_rows_and_the_status_files_database(
    env: dict[str, str], tmp_path: Path
) -> None:
    fx = make_disk_cache(tmp_path / "disk")
    assert CliRunner().invoke(db_app, ["upgrade"], env=env).exit_code == 0
    real = invoke(env, "migrate-cache", "--from-disk", str(fx.root), "--to-database")
    path = _status_file(tmp_path)
    status = json.loads(path.read_text())

    # The status file recorded the migration for another database: no row here carries
    # the id, so rolling it back here would remove nothing while claiming success.
    other = {**status, "migration_id": "0123-other", "database": "sqlite:////elsewhere.db"}
    path.write_text(json.dumps(other))
    elsewhere = invoke(env, "migrate-cache", "--rollback", code=2)
    assert "'0123-other'" in elsewhere["error"]
    assert "sqlite:////elsewhere.db" in elsewhere["error"]
    assert json.loads(path.read_text())["state"] == "done"  # not marked rolled back

    # An earlier migration, no longer in the status file, is known by its rows.
    rolled = invoke(env, "migrate-cache", "--rollback", "--migration-id", real["migration_id"])
    assert (rolled["ok"], rolled["removed"]) == (True, 38)
