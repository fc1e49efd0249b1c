"""`--help` and a mistyped option answer without importing the heavy libraries (the
commands import them when they run), and the defaults the commands name without
importing them agree with the code that owns them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "alembic", "httpx", "pyrate_limiter", "pydantic_settings", "psycopg")

PROBE = """
import json, sys
from importlib import import_module
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module, *argv]
try:
    import_module(module).main()
except SystemExit as end:
    code = end.code
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.__stderr__)
"""


@pytest.mark.parametrize(
    ("module", "argv", "code"),
    [
        ("cowrieprocessor.cli.enrich", ["--help"], 0),
        ("cowrieprocessor.cli.enrich", ["refresh", "--help"], 0),
        ("cowrieprocessor.cli.enrich", ["diagnose", "--help"], 0),
        ("cowrieprocessor.cli.enrich", ["cache", "stats", "--help"], 0),
        ("cowrieprocessor.cli.enrich", ["refresh", "--no-such-option"], 2),
        ("cowrieprocessor.cli.enrich", ["diagnose", "--min-spur", "200"], 2),
        ("cowrieprocessor.cli.loader", ["--help"], 0),
        ("cowrieprocessor.cli.loader", ["ingest"], 2),
        ("cowrieprocessor.cli.db", ["--help"], 0),
        ("cowrieprocessor.cli.db", ["upgrade", "--help"], 0),
    ],
)
def test_help_and_usage_errors_import_no_heavy_library(
    module: str, argv: list[str], code: int
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, *argv],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(result.stderr.strip().splitlines()[-1])
    assert found == {"code": code, "heavy": []}


def test_defaults_named_by_the_commands_match_their_owners() -> None:
    from cowrieprocessor.cli import common, enrich_cache, enrich_refresh
    from cowrieprocessor.enrichment import migrate
    from cowrieprocessor.enrichment.claims import DEFAULT_LEASE
    from cowrieprocessor.enrichment.settings import SERVICE_NAMES

    assert common.SERVICE_NAMES == SERVICE_NAMES
    assert DEFAULT_LEASE.total_seconds() == enrich_refresh.DEFAULT_LEASE_SECONDS
    assert enrich_cache.MIGRATE_BATCH_SIZE == migrate.DEFAULT_BATCH_SIZE
