#!/usr/bin/env bash
# Install everything from the lock file and run the linters and the whole test suite.
# This is the README's test command; CI runs it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check uv
uv sync --locked --quiet
uv run ruff check .
uv run ruff format --check .
uv run mypy
uv run pytest "$@"
