"""Fake providers: one local HTTP server answering all five services at their real paths.

The answers are the bodies of ``shared/data/api-samples`` chosen by simple rules on the
key (so a test can compute what every key gets from the source data alone), with
per-service or per-key overrides for failures. Every request is counted by service.

Rules (``FakeProviders.rules``, pure functions of the key, usable by tests):

* dshield: success when the address as an integer is divisible by 3, else not found;
* urlhaus host: success when divisible by 4, else not found; url: success when the URL
  has an even length, else not found; payload: not found;
* spur: success when even, else not found;
* virustotal file: success (3 engines say malicious) when the hash's last hex digit is
  even, else 404 not found; ip: success;
* hibp: the range lists every registered breached password (``breached``: SHA-1 -> count)
  with that prefix, plus two padding lines with count 0.

When ``keys`` names a service's expected key, a request without it gets the service's
401 sample.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cowrieprocessor.config import Settings
from cowrieprocessor.enrichment.settings import SERVICE_NAMES
from tests.enrichment.conftest import sample_reply

Reply = Response | Callable[[], Response]

_PATHS = [
    (re.compile(r"^/api/ip/(?P<key>[^/?]+)$"), "dshield", "ip"),
    (re.compile(r"^/api/v3/files/(?P<key>[^/]+)$"), "virustotal", "file"),
    (re.compile(r"^/api/v3/ip_addresses/(?P<key>[^/]+)$"), "virustotal", "ip"),
    (re.compile(r"^/v1/(?P<endpoint>host|url|payload)/$"), "urlhaus", ""),
    (re.compile(r"^/v2/context/(?P<key>[^/]+)$"), "spur", "context"),
    (re.compile(r"^/range/(?P<key>[0-9A-Fa-f]{5})$"), "hibp", "range"),
]
_AUTH_HEADERS = {"virustotal": "x-apikey", "urlhaus": "Auth-Key", "spur": "Token"}
_AUTH_SAMPLES = {
    "virustotal": ("virustotal", "auth-401.json"),
    "urlhaus": ("urlhaus", "auth-error.json"),
    "spur": ("spur", "auth-401.json"),
}


def ip_number(text: str) -> int:
    return int(ipaddress.ip_address(text))


def dshield_hit(ip: str) -> bool:
    return ip_number(ip) % 3 == 0


def urlhaus_host_hit(ip: str) -> bool:
    return ip_number(ip) % 4 == 0


def urlhaus_url_hit(url: str) -> bool:
    return len(url) % 2 == 0


def spur_hit(ip: str) -> bool:
    return ip_number(ip) % 2 == 0


def vt_file_hit(sha256: str) -> bool:
    return int(sha256[-1], 16) % 2 == 0


@dataclass(frozen=True)
class Seen:
    service: str
    endpoint: str
    key: str


class FakeProviders:
    """Install on ``server``; point every ``<service>_base_url`` at :attr:`base_url`."""

    def __init__(self, server: HTTPServer, keys: dict[str, str] | None = None) -> None:
        self.server = server
        self.keys = keys or {}
        self.breached: dict[str, int] = {}
        self.overrides: dict[tuple[str, str | None], Reply] = {}
        self.seen: list[Seen] = []
        self.headers_seen: list[dict[str, str]] = []
        #: Seconds every answer waits before it is sent (to slow a run down).
        self.delay = 0.0
        self._lock = threading.Lock()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def base_url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def requests(self, service: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.seen if service is None or s.service == service)

    def by_service(self) -> Counter[str]:
        with self._lock:
            return Counter(s.service for s in self.seen)

    def override(self, service: str, reply: Reply, key: str | None = None) -> None:
        """Answer ``service`` (only ``key`` when given) with ``reply`` from now on."""
        self.overrides[(service, key)] = reply

    def clear(self, service: str, key: str | None = None) -> None:
        self.overrides.pop((service, key), None)

    # The handler ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        for pattern, service, endpoint in _PATHS:
            match = pattern.match(request.path)
            if match is None:
                continue
            if service == "urlhaus":
                endpoint = match["endpoint"]
                form = request.form
                key = form.get(endpoint) or form.get("sha256_hash") or form.get("md5_hash") or ""
            else:
                key = match["key"]
            with self._lock:
                self.seen.append(Seen(service, endpoint, key))
                self.headers_seen.append(dict(request.headers))
            if self.delay:
                time.sleep(self.delay)
            return self._answer(request, service, endpoint, key)
        return Response("no such path", status=404)

    def _answer(self, request: Request, service: str, endpoint: str, key: str) -> Response:
        header = _AUTH_HEADERS.get(service)
        expected = self.keys.get(service)
        if header and expected is not None and request.headers.get(header) != expected:
            return sample_reply(*_AUTH_SAMPLES[service])
        reply = self.overrides.get((service, key)) or self.overrides.get((service, None))
        if reply is not None:
            return reply if isinstance(reply, Response) else reply()
        return self._default(service, endpoint, key)

    def _default(self, service: str, endpoint: str, key: str) -> Response:
        if service == "dshield":
            name = "success.json" if dshield_hit(key) else "not-found.json"
            return sample_reply("dshield", name)
        if service == "spur":
            return sample_reply("spur", "success.json" if spur_hit(key) else "not-found.json")
        if service == "virustotal":
            if endpoint == "ip" or vt_file_hit(key):
                return sample_reply("virustotal", "success.json")
            return sample_reply("virustotal", "not-found.json")
        if service == "urlhaus":
            hit = {"host": urlhaus_host_hit, "url": urlhaus_url_hit}.get(endpoint)
            if hit is not None and hit(key):
                return sample_reply("urlhaus", f"{endpoint}-success.json")
            return sample_reply("urlhaus", f"{endpoint}-not-found.json")
        return self._range(key.upper())

    def _range(self, prefix: str) -> Response:
        lines = [
            f"{sha1[5:]}:{count}"
            for sha1, count in sorted(self.breached.items())
            if sha1.startswith(prefix)
        ]
        lines += ["0" * 35 + ":0", "F" * 35 + ":0"]
        return Response("\r\n".join(lines), status=200, content_type="text/plain")


#: Keys the fake providers expect; long and unlikely, so a leak is easy to grep for.
KEYS = {
    "virustotal": "vt-KEY-never-leak-7c1e55aa90",
    "urlhaus": "uh-KEY-never-leak-3b8d21ff04",
    "spur": "spur-KEY-never-leak-a2c4e6f8b1",
}
EMAIL = "soc-refresh@example.org"


def fast_settings(base_url: str, **changes: Any) -> dict[str, Any]:
    """Settings values pointing every service at ``base_url``, fast and with every key."""
    values: dict[str, Any] = {
        "dshield_email": EMAIL,
        "vt_api_key": KEYS["virustotal"],
        "urlhaus_api_key": KEYS["urlhaus"],
        "spur_api_key": KEYS["spur"],
        "enrichment_backoff_base_seconds": 0.01,
        "enrichment_backoff_max_seconds": 0.05,
        "enrichment_max_wait_seconds": 5.0,
    }
    for name in SERVICE_NAMES:
        values[f"{name}_base_url"] = base_url
        values[f"{name}_rate_limit"] = "1000/second"
        values[f"{name}_timeout_seconds"] = 2.0
        values[f"{name}_max_retries"] = 0
    values.update(changes)
    return values


def make_settings(base_url: str, tmp_path: Path, **changes: Any) -> Settings:
    """A :class:`Settings` for tests: fast limits, keys set, cache and status under tmp."""
    values = fast_settings(base_url, **changes)
    values.setdefault("cache_dir", tmp_path / "cache")
    values.setdefault("status_dir", tmp_path / "status")
    return Settings(**values)
