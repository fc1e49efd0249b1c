"""`cowrie-enrich`: enrichment refresh (backfill), cache management, diagnostics.

Each group of commands lives in its own module and registers itself here.
"""

from __future__ import annotations

import typer

from cowrieprocessor.cli import enrich_cache, enrich_diagnose, enrich_refresh
from cowrieprocessor.cli.common import Group

app = typer.Typer(
    cls=Group,
    help="Enrich loaded sessions, files and passwords with threat intelligence; manage "
    "the enrichment cache; diagnose coverage.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Enrich, manage the cache, diagnose coverage."""


enrich_refresh.register(app)
enrich_cache.register(app)
enrich_diagnose.register(app)


def main() -> None:
    app()
