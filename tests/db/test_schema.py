from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from cowrieprocessor.db import schema
from cowrieprocessor.db.models import Base


def test_head_constant_matches_the_migration_scripts() -> None:
    assert schema.alembic_head() == schema.HEAD


def test_upgrade_creates_exactly_the_model_tables_and_downgrade_removes_them(
    engine: Engine,
) -> None:
    found = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert found == set(Base.metadata.tables)
    assert schema.state(engine).up_to_date
    schema.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    assert schema.state(engine).current is None


# Alembic cannot compare the cache's GIN expression index (``ix_enrichment_cache_answer``)
# and says so; tests/cache/test_database_cache.py checks that index on PostgreSQL.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression")
@pytest.mark.filterwarnings("ignore:Expression #1 .* detected to include an operator clause")
def test_migrations_match_the_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
