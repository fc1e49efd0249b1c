"""The plain records the diagnostics return: outcome tallies and coverage arithmetic.

Coverage is always computed here, in Python, from integer counts that the databases
return, so SQLite and PostgreSQL give the very same percentages (rounded to 2 places,
half away from zero, as PostgreSQL's ``round(numeric, 2)`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cowrieprocessor.enrichment.outcome import FINAL_SKIP_REASONS, Status

_FINAL = frozenset(str(reason) for reason in FINAL_SKIP_REASONS)


def percent(part: int, whole: int) -> float | None:
    """``100 * part / whole`` rounded to 2 places; None when ``whole`` is 0."""
    if whole == 0:
        return None
    value = Decimal(100 * part) / Decimal(whole)
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def classify(status: str | None, reason: str | None) -> str:
    """``covered``, ``final`` or ``gap`` for one stored envelope (None: never attempted)."""
    if status in (Status.SUCCESS, Status.NOT_FOUND):
        return "covered"
    if status == Status.SKIPPED and reason in _FINAL:
        return "final"
    return "gap"


@dataclass
class Tally:
    """Outcomes of one service over one kind of row (sessions, files or passwords).

    ``skipped`` and ``errors`` count by reason and error kind; ``other`` counts envelopes
    whose status is none of the four (a damaged or foreign envelope).
    """

    service: str
    target: str
    success: int = 0
    not_found: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    never: int = 0
    other: int = 0

    def add(self, status: str | None, reason: str | None, count: int) -> None:
        if status is None:
            self.never += count
        elif status == Status.SUCCESS:
            self.success += count
        elif status == Status.NOT_FOUND:
            self.not_found += count
        elif status == Status.SKIPPED:
            key = reason or "unknown"
            self.skipped[key] = self.skipped.get(key, 0) + count
        elif status == Status.ERROR:
            key = reason or "unknown"
            self.errors[key] = self.errors.get(key, 0) + count
        else:
            self.other += count

    @property
    def total(self) -> int:
        return (
            self.success
            + self.not_found
            + sum(self.skipped.values())
            + sum(self.errors.values())
            + self.never
            + self.other
        )

    @property
    def covered(self) -> int:
        return self.success + self.not_found

    @property
    def final(self) -> int:
        """Rows that are never to be looked up; they leave the denominator."""
        return sum(count for reason, count in self.skipped.items() if reason in _FINAL)

    @property
    def denominator(self) -> int:
        return self.total - self.final

    @property
    def gaps(self) -> int:
        return self.denominator - self.covered

    @property
    def coverage_pct(self) -> float | None:
        return percent(self.covered, self.denominator)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "target": self.target,
            "total": self.total,
            "success": self.success,
            "not_found": self.not_found,
            "skipped": dict(sorted(self.skipped.items())),
            "errors": dict(sorted(self.errors.items())),
            "never_attempted": self.never,
            "other": self.other,
            "covered": self.covered,
            "final_skips": self.final,
            "denominator": self.denominator,
            "gaps": self.gaps,
            "coverage_pct": self.coverage_pct,
        }


@dataclass(frozen=True)
class Advice:
    """What a failing check most likely means, and the command that addresses it."""

    text: str
    command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "command": self.command}


@dataclass(frozen=True)
class Check:
    """One health check: a measured value against its threshold."""

    diagnostic: int
    name: str
    value: float | None
    threshold: float
    ok: bool
    #: ``min``: the value must be at least the threshold; ``max``: at most.
    kind: str = "min"
    advice: tuple[Advice, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "diagnostic": self.diagnostic,
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "kind": self.kind,
            "ok": self.ok,
            "advice": [item.as_dict() for item in self.advice],
        }
