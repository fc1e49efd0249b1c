"""Commands of `cowrie-enrich` (placeholder until its module is written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
