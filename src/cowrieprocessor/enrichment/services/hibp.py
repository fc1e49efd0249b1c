"""HIBP Pwned Passwords range API: ``GET {base}/range/{first 5 hex of the SHA-1}``.

k-anonymity: only the 5-character prefix of the password's SHA-1 leaves the machine;
the answer lists every known ``SUFFIX:COUNT`` of that prefix, and the breach count of
a password is looked up locally. With ``Add-Padding: true`` the answer also holds
random suffixes with count 0, which are not breaches.

So the unit that is fetched and cached is the *range* (key: the upper-case prefix);
one range answers every password sharing the prefix. Passwords are hashed as the
UTF-8 bytes of the text as logged (lone surrogates passed through), which is how the
``login_attempts.password_sha256`` column hashes them too::

    sha1 = password_sha1("admin")                    # D033E22A...
    outcome = hibp_client.lookup(range_prefix(sha1))  # or the cached range entry
    password_outcome(sha1, outcome)                  # success {"count": N} or not_found
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from cowrieprocessor.enrichment.outcome import ErrorKind, Outcome, SkipReason, Status
from cowrieprocessor.enrichment.services.base import (
    RequestSpec,
    Service,
    ServiceResponse,
    parse_int,
    safe_text,
)

PREFIX_LENGTH = 5
_PREFIX = re.compile(r"^[0-9A-F]{5}$")
_SHA1 = re.compile(r"^[0-9A-F]{40}$")
_LINE = re.compile(r"^([0-9A-F]{35}):([0-9]+)$")
_BEYOND = "a count beyond 64 bits"


def password_sha1(password: str) -> str:
    """Upper-case hex SHA-1 of the password's UTF-8 bytes (surrogates passed through)."""
    digest = hashlib.sha1(password.encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return digest.hexdigest().upper()


def range_prefix(sha1_hex: str) -> str:
    """The 5-character prefix that is sent. Raises ValueError on a malformed SHA-1."""
    sha1 = sha1_hex.strip().upper()
    if not _SHA1.match(sha1):
        raise ValueError(f"{safe_text(sha1_hex)} is not a 40-character hex SHA-1")
    return sha1[:PREFIX_LENGTH]


def breach_count(range_body: str, sha1_hex: str) -> int:
    """How often the password with this SHA-1 was seen in breaches, from a range body.

    0 when its suffix is absent, or present only as a padding line (count 0). Accepts
    the raw answer or the stored body; lines may end in CRLF or LF.

    Raises:
        ValueError: the suffix's count is beyond 64 bits (a range cached before such
            answers were refused), since it could not be stored.
    """
    suffix = sha1_hex.strip().upper()[PREFIX_LENGTH:]
    for line in range_body.splitlines():
        found, _, count = line.strip().partition(":")
        if found.upper() == suffix:
            if not (count.isascii() and count.isdigit()):
                return 0
            number = _count(count)
            if number is None:
                raise ValueError(f"the range holds {_BEYOND} for this password")
            return number
    return 0


def _count(digits: str) -> int | None:
    """The count of a range line (ASCII digits), or None when it is beyond 64 bits."""
    try:
        return parse_int(digits)
    except ValueError:
        return None


def password_outcome(sha1_hex: str, range_outcome: Outcome) -> Outcome:
    """The outcome for one password, from the outcome of its range.

    A successful range gives ``success`` with ``{"count": N}`` when N > 0, else
    ``not_found``. A range that was skipped or failed gives the same status and reason
    for the password; so does a stored range whose count for the password is beyond 64
    bits (``error``/``unparseable``). The key is the password's upper-case SHA-1;
    ``checked_at`` is the range's, since that is how old the answer is.
    """
    sha1 = sha1_hex.strip().upper()
    if range_outcome.status != Status.SUCCESS or range_outcome.data is None:
        return replace(range_outcome, key=sha1, data=None)
    try:
        count = breach_count(str(range_outcome.data.get("body", "")), sha1)
    except ValueError as exc:
        return replace(
            range_outcome,
            key=sha1,
            status=Status.ERROR,
            reason=str(ErrorKind.UNPARSEABLE),
            message=f"{range_outcome.service}: {exc}",
            data=None,
        )
    if count > 0:
        return replace(range_outcome, key=sha1, data={"count": count})
    return replace(range_outcome, key=sha1, status=Status.NOT_FOUND, data=None)


class HibpService(Service):
    """Breach counts of passwords, one 5-hex range at a time (no key needed)."""

    name = "hibp"
    endpoints = ("range",)

    def check(self, key: str | None, endpoint: str | None = None) -> Outcome | None:
        self.resolve_endpoint(endpoint)
        text = key or ""
        if not _PREFIX.match(text.strip().upper()):
            return self.skipped(
                text,
                SkipReason.NOT_APPLICABLE,
                f"{safe_text(text)} is not a {PREFIX_LENGTH}-hex SHA-1 prefix",
            )
        return None

    def normalize_key(self, key: str, endpoint: str | None = None) -> str:
        return key.strip().upper()

    def build_request(self, key: str, endpoint: str | None = None) -> RequestSpec:
        self.resolve_endpoint(endpoint)
        prefix = self.normalize_key(key)
        if not _PREFIX.match(prefix):
            # Never let more than the prefix out, whatever the caller passed.
            raise ValueError(f"{safe_text(key)} is not a {PREFIX_LENGTH}-hex SHA-1 prefix")
        return RequestSpec(method="GET", path=f"/range/{prefix}", headers={"Add-Padding": "true"})

    def parse(self, response: ServiceResponse) -> Outcome:
        if response.status_code == 400:
            return self.error(response, ErrorKind.INVALID_INPUT, "HTTP 400, prefix rejected")
        by_status = self.status_outcome(response)
        if by_status is not None:
            return by_status

        try:
            text = response.content.decode("ascii")
        except UnicodeDecodeError:
            return self.unparseable(response, "body is not ASCII text")
        kept, padding = [], 0
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip().upper()
            if not line:
                continue
            match = _LINE.match(line)
            if match is None:
                return self.unparseable(response, f"line {number} is not SUFFIX:COUNT")
            count = _count(match[2])
            if count is None:
                return self.unparseable(response, f"line {number} has {_BEYOND}")
            if count == 0:
                padding += 1
            else:
                kept.append(line)
        if not kept and not padding:
            return self.unparseable(response)
        data = {
            "prefix": response.key,
            "body": "\n".join(kept),
            "entries": len(kept),
            "padding": padding,
        }
        return self.success(response, data)
