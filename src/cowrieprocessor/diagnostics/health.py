"""Health thresholds, and the advice derived from stored outcomes when one is missed.

The thresholds are the operators' runbook: sessions at least 90 % (goal 95 %), DShield
95 %, URLhaus 90 %, SPUR 80 %, VirusTotal 80 % of files, HIBP 80 % of passwords, at most
1 % of input lines as unresolved dead letters, and no row whose flags contradict its
data. Each can be changed, highest precedence first, by a ``cowrie-enrich diagnose``
option, a ``COWRIEPROC_DIAG_<NAME>`` variable (for example
``COWRIEPROC_DIAG_MIN_DSHIELD=90``) or a ``diag_<name>`` key of the config file. This
module reads only the variables (:meth:`Thresholds.from_env`); the command merges the
file's keys and its options (``cli/enrich_diagnose.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from cowrieprocessor.diagnostics.integrity import ErrorPattern
from cowrieprocessor.diagnostics.records import Advice, Tally

logger = logging.getLogger(__name__)

ENV_PREFIX = "COWRIEPROC_DIAG_"


@dataclass(frozen=True)
class Thresholds:
    """Minimum coverage percentages (``min_*``) and maximum problem levels (``max_*``)."""

    min_sessions: float = 90.0
    goal_sessions: float = 95.0
    min_dshield: float = 95.0
    min_urlhaus: float = 90.0
    min_spur: float = 80.0
    min_virustotal: float = 80.0
    min_hibp: float = 80.0
    max_dead_letter_pct: float = 1.0
    max_inconsistent: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Thresholds:
        """Defaults, then ``COWRIEPROC_DIAG_<FIELD>`` variables, then non-None overrides.

        Raises:
            ValueError: a variable or override is not a number, or a percentage lies
                outside 0..100.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is not None and raw.strip():
                values[item.name] = _number(raw, ENV_PREFIX + item.name.upper(), item.type)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        result = replace(cls(), **values)
        for item in fields(result):
            value = getattr(result, item.name)
            if item.name.endswith("_pct") or item.name.startswith(("min_", "goal_")):
                if not 0 <= value <= 100:
                    raise ValueError(f"{item.name} is {value}; a percentage lies in 0..100")
            elif value < 0:
                raise ValueError(f"{item.name} is {value}; it must not be negative")
        return result

    def service_minimum(self, service: str) -> float | None:
        value = getattr(self, f"min_{service}", None)
        return float(value) if value is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


def _number(raw: str, name: str, kind: Any) -> float | int:
    try:
        return int(raw) if kind in (int, "int") else float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


# Advice ------------------------------------------------------------------------------------

_KEY_SETTING = {
    "dshield": "COWRIEPROC_DSHIELD_EMAIL (ISC asks for a contact e-mail; nothing is sent "
    "without it)",
    "virustotal": "COWRIEPROC_VT_API_KEY (or --vt-api-key)",
    "urlhaus": "COWRIEPROC_URLHAUS_API_KEY (URLhaus answers 401 without an Auth-Key)",
    "spur": "COWRIEPROC_SPUR_API_KEY (or --spur-api-key)",
}
_TARGET_OPTION = {"sessions": "--sessions 0", "files": "--files 0", "passwords": "--passwords 0"}


def refresh_command(service: str, target: str) -> str:
    return f"cowrie-enrich refresh --services {service} {_TARGET_OPTION[target]}"


def service_advice(tally: Tally, patterns: Sequence[ErrorPattern]) -> tuple[Advice, ...]:
    """Why ``tally`` has gaps, biggest cause first, each with the command that helps.

    The causes come from the stored outcomes: an error kind, a skip reason or no
    outcome at all. HTTP statuses seen for errors are named, so that a service refused
    with 401 reads as a key problem and not as rate limiting.
    """
    service, target = tally.service, tally.target
    upper = service.upper()
    statuses = _http_statuses(patterns, service, target)
    refresh = refresh_command(service, target)
    causes: list[tuple[int, Advice]] = []

    def add(count: int, text: str, command: str | None) -> None:
        if count:
            causes.append((count, Advice(f"{count} {target}: {text}", command)))

    add(
        tally.never,
        "never looked up; the backfill has not reached them (is the refresh timer running?)",
        refresh,
    )
    add(
        tally.skipped.get("no_api_key", 0),
        f"skipped, no key configured; set {_KEY_SETTING.get(service, 'its key')}, then check it",
        "cowrie-enrich check-credentials",
    )
    add(
        tally.skipped.get("service_disabled", 0),
        f"skipped, the service is disabled (COWRIEPROC_{upper}_ENABLED=false)",
        f"COWRIEPROC_{upper}_ENABLED=true {refresh}",
    )
    add(
        tally.errors.get("auth", 0) + tally.skipped.get("auth_failed", 0),
        f"the key was refused{_statuses(statuses, 'auth')}; this is a key problem, not a "
        "rate problem: renew or correct the key",
        "cowrie-enrich check-credentials",
    )
    add(
        tally.errors.get("rate_limited", 0) + tally.skipped.get("backing_off", 0),
        f"rate limited{_statuses(statuses, 'rate_limited')}; lower "
        f"COWRIEPROC_{upper}_RATE_LIMIT and run the backfill again",
        refresh,
    )
    add(
        tally.errors.get("quota", 0) + tally.skipped.get("quota_spent", 0),
        f"the quota was spent{_statuses(statuses, 'quota')}; see what is left, and run the "
        "backfill again after the reset",
        "cowrie-enrich check-credentials",
    )
    add(
        tally.errors.get("timeout", 0) + tally.errors.get("network", 0),
        f"the service could not be reached (timeouts, network errors); check the network "
        f"and COWRIEPROC_{upper}_BASE_URL",
        "cowrie-enrich check-credentials",
    )
    add(
        tally.errors.get("http_status", 0),
        f"the service failed{_statuses(statuses, 'http_status')}; run the backfill again later",
        refresh,
    )
    add(
        tally.errors.get("unparseable", 0),
        f"answers could not be read{_statuses(statuses, 'unparseable')}; check that "
        f"COWRIEPROC_{upper}_BASE_URL points at the API and not at a proxy page",
        "cowrie-enrich check-credentials",
    )
    add(
        tally.errors.get("invalid_input", 0),
        "the service refused the key as invalid input; see the samples",
        "cowrie-enrich diagnose --only 6,9",
    )
    known = {"auth", "rate_limited", "quota", "timeout", "network", "http_status"}
    known |= {"unparseable", "invalid_input"}
    odd = sum(count for kind, count in tally.errors.items() if kind not in known)
    odd += sum(
        count
        for reason, count in tally.skipped.items()
        if reason not in {"no_api_key", "service_disabled", "auth_failed"}
        and reason not in {"backing_off", "quota_spent", "not_routable", "not_applicable"}
    )
    add(
        odd + tally.other,
        "outcomes of an unknown kind; look them up again",
        f"cowrie-enrich refresh --all --services {service}",
    )
    causes.sort(key=lambda item: -item[0])
    return tuple(advice for _, advice in causes)


def _http_statuses(
    patterns: Sequence[ErrorPattern], service: str, target: str
) -> dict[str, list[int]]:
    seen: dict[str, set[int]] = {}
    for pattern in patterns:
        if pattern.service == service and pattern.target == target and pattern.http_status:
            seen.setdefault(pattern.kind or "", set()).add(pattern.http_status)
    return {kind: sorted(codes) for kind, codes in seen.items()}


def _statuses(statuses: Mapping[str, list[int]], kind: str) -> str:
    codes = statuses.get(kind)
    return f" (HTTP {', '.join(str(code) for code in codes)})" if codes else ""


_INCONSISTENCY_ADVICE = {
    "empty_data": "successful outcomes without data; look them up again",
    "malformed": "envelopes with an unknown status or a misplaced reason; look them up again",
    "flag_without_outcome": "flags set where the service never answered",
    "outcome_without_flag": "answers whose flag was never set",
    "flag_contradicts": "flags that contradict the stored answer",
}


def inconsistency_advice(
    found: Sequence[tuple[str, str, str, int]],
) -> tuple[Advice, ...]:
    """One line per failing (check, target, service), with the re-lookup command."""
    advice = []
    for check, target, service, count in found:
        if count:
            advice.append(
                Advice(
                    f"{count} {target} with {service} {_INCONSISTENCY_ADVICE[check]}",
                    f"cowrie-enrich refresh --all --services {service} {_TARGET_OPTION[target]}",
                )
            )
    return tuple(advice)
