"""Enrichment diagnostics: the ten queries as functions returning plain records, the
health thresholds, and the advice derived from stored outcomes. Rendering (terminal
tables, Markdown) is the CLI's job (:mod:`cowrieprocessor.cli.diagnose_render`).
"""

from cowrieprocessor.diagnostics.credentials import CredentialCheck, check_credentials
from cowrieprocessor.diagnostics.health import Thresholds
from cowrieprocessor.diagnostics.records import Advice, Check, Tally
from cowrieprocessor.diagnostics.run import DiagnoseOptions, Report, run_diagnostics

__all__ = [
    "Advice",
    "Check",
    "CredentialCheck",
    "DiagnoseOptions",
    "Report",
    "Tally",
    "Thresholds",
    "check_credentials",
    "run_diagnostics",
]
