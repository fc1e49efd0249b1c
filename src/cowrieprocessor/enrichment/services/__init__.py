"""The five enrichment services, one module each, all pure (no I/O).

Each turns a key into a request and a response into an :class:`Outcome`; the shared
client in :mod:`cowrieprocessor.enrichment.http` sends the requests.
"""

from __future__ import annotations

from cowrieprocessor.enrichment.services.base import (
    RequestSpec,
    Service,
    ServiceResponse,
    global_ip,
)
from cowrieprocessor.enrichment.services.dshield import DShieldService, is_flagged
from cowrieprocessor.enrichment.services.hibp import (
    HibpService,
    breach_count,
    password_outcome,
    password_sha1,
    range_prefix,
)
from cowrieprocessor.enrichment.services.spur import SpurService
from cowrieprocessor.enrichment.services.urlhaus import UrlhausService
from cowrieprocessor.enrichment.services.virustotal import VirusTotalService, is_malicious
from cowrieprocessor.enrichment.settings import ServiceSettings

__all__ = [
    "DShieldService",
    "HibpService",
    "RequestSpec",
    "Service",
    "ServiceResponse",
    "SpurService",
    "UrlhausService",
    "VirusTotalService",
    "breach_count",
    "build_service",
    "global_ip",
    "is_flagged",
    "is_malicious",
    "password_outcome",
    "password_sha1",
    "range_prefix",
]


def build_service(settings: ServiceSettings) -> Service:
    """The service named by ``settings.name``, given its credentials.

    Raises:
        KeyError: an unknown service name.
    """
    if settings.name == "dshield":
        return DShieldService(email=settings.email)
    if settings.name == "hibp":
        return HibpService()
    keyed: dict[str, type[Service]] = {
        "virustotal": VirusTotalService,
        "urlhaus": UrlhausService,
        "spur": SpurService,
    }
    if settings.name not in keyed:
        raise KeyError(f"unknown service {settings.name!r}")
    return keyed[settings.name](api_key=settings.api_key)
